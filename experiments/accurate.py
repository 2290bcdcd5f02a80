"""Which CML-family configuration is the most accurate, across data sets? The screen behind ``--preset=accurate``.

    python -m experiments.accurate --dry_run          # the plan and its ETA
    python -m experiments.accurate                    # every candidate x data set (resumable)
    python -m experiments.accurate --report           # accurate.md from results.csv

Every candidate of `CANDIDATES` (the sampled softmax over stage-1 candidates at several temperatures, with in-batch
negatives, a learned temperature, more candidates; in-batch negatives alone; DNS; the best hinge of
`experiments.best_cml`) trains on each of the stage-2 sweep's data sets (`experiments.stage2_sweep.DATASETS`:
citeulike-t, ml-100k with rating >= 4, the Echonest and Book-Crossing samples), CollMetric's 3:1:1 split with its
own seed (1), for ``--epochs`` passes over the training pairs (at most ``--max_pairs``), validation NDCG@50 on
every validation user. The choice is made on VALIDATION across the data sets, not per data set: the mean over the
data sets of validation NDCG@50 relative to the hinge baseline's (each data set weighs the same). The test folds are
not looked at; `experiments.best_cml` trains the choice on Table 2's folds within 10 minutes and tests it.

``--baselines`` (e.g. ``ease,als``) also tunes those linear baselines of `experiments.baselines` on each data set's
same split (their own validation search of ``--baseline_trials`` settings, every validation user) and sets their
validation NDCG@50 beside the chosen candidate's; they never take part in the choice. ``--candidates=`` (empty) runs
the baselines alone.

Outputs in ``--out_dir`` (default experiments/results/accurate): results.csv (one row per run), accurate.md (the
relative scores, the choice, the per-data-set table, the baselines), command.txt (appended).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from experiments.negatives_study import _markdown, _mean_std, read_rows  # noqa: E402
from experiments.stage2_sweep import DATA, DATASETS, _fmt, append_command  # noqa: E402

_SOFTMAX = {"sampler": "2stage", "loss": "softmax"}
#: name -> Config fields (from the defaults: 2-stage candidates, batch 256, d = 128, Adam lr 1e-4)
CANDIDATES: dict[str, dict] = {
    "hinge-uniform-n5": {"sampler": "uniform", "num_negatives": 5},  # the best hinge of experiments/best_cml
    "softmax-t0.2": {**_SOFTMAX, "temperature": 0.2},
    "softmax-t0.5": {**_SOFTMAX, "temperature": 0.5},
    "softmax-t0.2-inbatch": {**_SOFTMAX, "temperature": 0.2, "softmax_in_batch": True},
    "softmax-t0.2-learned": {**_SOFTMAX, "temperature": 0.2, "learn_temperature": True},
    "softmax-t0.5-learned": {**_SOFTMAX, "temperature": 0.5, "learn_temperature": True},
    "softmax-t0.2-lr3e-4": {**_SOFTMAX, "temperature": 0.2, "learning_rate": 3e-4},
    "softmax-t0.2-c5000": {**_SOFTMAX, "temperature": 0.2, "num_candidates": 5000},
    "softmax-t0.2-beta0.5": {**_SOFTMAX, "temperature": 0.2, "beta": 0.5},
    "softmax-inbatch-t0.2": {"sampler": "in_batch", "loss": "softmax", "temperature": 0.2},
    "hinge-dns-n5": {"sampler": "dns", "num_negatives": 5, "dns_k": 8},
    # the preset at a 4x batch (experiments.time_to_accuracy: 1.5x the pairs/s), at its rate and at 3x
    "softmax-t0.5-b1024": {**_SOFTMAX, "temperature": 0.5, "batch_size": 1024},
    "softmax-t0.5-b1024-lr3e-4": {**_SOFTMAX, "temperature": 0.5, "batch_size": 1024, "learning_rate": 3e-4},
    # τ = 0.5 and 0.2 probed for 5 epochs (rounded to whole validation periods), the better one on validation
    # trained on (cml_tf.training.run.probe_temperature)
    "softmax-probe": {**_SOFTMAX, "temperature": 0.5, "temperature_probe": (0.5, 0.2)},
}
BASELINE = "hinge-uniform-n5"
#: the reference a candidate must not lose to: --preset=accurate at its fixed τ = 0.5, as it was chosen (the preset now
#: probes τ: "softmax-probe", measured against this one in docs/experiments.md). A candidate replaces it only if its
#: validation NDCG@50 is at least the incumbent's on every data set where both ran, and its mean is higher
INCUMBENT = "softmax-t0.5"
#: rows of the linear baselines in results.csv are named by this prefix and the baseline ("linear:ease")
LINEAR = "linear:"
COLUMNS = [
    "dataset",
    "candidate",
    "pairs",
    "val_ndcg@50",
    "val_map@50",
    "val_recall@50",
    "val_mmr",
    "ndcg@50",
    "mmr",
    "pairs_per_sec",
    "train_seconds",
    "best_step",
    "steps",
]


def run_config(dataset: str, candidate: str, data_root: str, train_pairs: int, n_items: int, args):
    from cml_tf.training.config import Config

    name, path, options = DATASETS[dataset]
    fields = dict(CANDIDATES[candidate])
    batch = fields.get("batch_size", 256)
    pairs = min(args.max_pairs, int(args.epochs * train_pairs))
    steps = max(1, pairs // batch)
    base = Config(
        dataset=name,
        data_path=os.path.abspath(os.path.join(data_root, path)),
        dataset_options=dict(options),
        split="original",
        split_seed=1,
        batch_size=batch,
        max_steps=steps,
        eval_every=max(1, steps // args.evals),
        seed=args.seed,
    )
    fields["num_candidates"] = min(fields.get("num_candidates", base.num_candidates), n_items)
    return dataclasses.replace(base, **fields)


class Screen:
    def __init__(self, args):
        self.args = args
        self.data: dict = {}
        self.rows = read_rows(os.path.join(args.out_dir, "results.csv"))

    def load(self, name):
        if name not in self.data:
            from cml_tf.training.config import Config
            from cml_tf.training.data import load_data

            dataset, path, options = DATASETS[name]
            path = os.path.abspath(os.path.join(self.args.data_root, path))
            self.data[name] = load_data(
                Config(dataset=dataset, data_path=path, dataset_options=dict(options), split="original", split_seed=1)
            )
        return self.data[name]

    def run_dir(self, dataset, candidate):
        return os.path.join(self.args.runs_dir, f"epochs{self.args.epochs:g}-s{self.args.seed}", dataset, candidate)

    def execute(self):
        import logging

        from cml_tf import training

        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        plan = [(d, c) for d in self.args.datasets for c in self.args.candidates]
        todo = [p for p in plan if not os.path.exists(os.path.join(self.run_dir(*p), "results.json"))]
        print(f"plan: {len(plan)} runs, {len(plan) - len(todo)} finished already", flush=True)
        for d, c in plan:
            print(f"  {d:<13} {c}")
        for d in self.args.datasets:
            for b in self.args.baselines:
                print(f"  {d:<13} {LINEAR}{b} (tuned on validation)")
        if self.args.dry_run:
            return
        started = time.perf_counter()
        for i, (dataset, candidate) in enumerate(plan, 1):
            interactions, split = self.load(dataset)
            config = run_config(
                dataset, candidate, self.args.data_root, split.train.nnz, interactions.n_items, self.args
            )
            results = training.train(config, self.run_dir(dataset, candidate), data=(interactions, split), verbose=0)
            row = self.record(dataset, candidate, config.max_steps * config.batch_size, results)
            print(
                f"[{i}/{len(plan)}] {dataset} {candidate}: val ndcg@50 {row['val_ndcg@50']:.4f}, mmr "
                f"{row['val_mmr']:.1f} ({row['pairs']:,} pairs, {row['train_seconds']:.0f} s) | elapsed "
                f"{_fmt(time.perf_counter() - started)}",
                flush=True,
            )

    def execute_baselines(self):
        """Tunes each of ``--baselines`` on each data set's split (validation only chooses; resumable)."""
        from experiments.baselines import run_baseline

        for dataset in self.args.datasets:
            _, split = self.load(dataset)
            for name in self.args.baselines:
                trials = self.args.baseline_trials
                run_dir = os.path.join(self.args.runs_dir, "baselines", dataset, f"{name}-t{trials}")
                config = {"dataset": dataset, "split": "original", "split_seed": 1}
                started = time.perf_counter()
                results = run_baseline(
                    name,
                    split,
                    run_dir,
                    config=config,
                    k=50,
                    trials=trials,
                    test_seed=1,
                    seed=self.args.seed,
                    cap_trials=False,
                )
                row = self.record(dataset, LINEAR + name, split.train.nnz, results)
                print(
                    f"{dataset} {name}: val ndcg@50 {row['val_ndcg@50']:.4f} ({results['params']}) | "
                    f"{_fmt(time.perf_counter() - started)}",
                    flush=True,
                )

    def record(self, dataset: str, candidate: str, pairs: int, results: dict) -> dict:
        """The results.csv row of a finished run (a baseline has no best step: 0), replacing an earlier one of the same
        data set and candidate; rewrites the outputs."""
        valid = results["valid"]
        row = {
            "dataset": dataset,
            "candidate": candidate,
            "pairs": pairs,
            **{f"val_{m}": valid.get(m, float("nan")) for m in ("ndcg@50", "map@50", "recall@50", "mmr")},
            **{k: results[k] for k in ("ndcg@50", "mmr", "pairs_per_sec", "train_seconds", "steps")},
            "best_step": results.get("best_step", 0),
        }
        self.rows = [r for r in self.rows if (r["dataset"], r["candidate"]) != (dataset, candidate)] + [row]
        self.write()
        return row

    def write(self):
        import pandas as pd

        from cml_tf.io import write_text_atomic

        os.makedirs(self.args.out_dir, exist_ok=True)
        df = pd.DataFrame(self.rows, columns=COLUMNS)
        write_text_atomic(os.path.join(self.args.out_dir, "results.csv"), df.to_csv(index=False))
        write_text_atomic(os.path.join(self.args.out_dir, "accurate.md"), render(df))


def scores(df):
    """Per candidate: mean over data sets of validation NDCG@50 relative to the baseline's, the worst data set, and
    validation MMR relative to the baseline's (only data sets where both ran)."""
    import pandas as pd

    df = df[~df.candidate.str.startswith(LINEAR)]
    base = df[df.candidate == BASELINE].set_index("dataset")
    out = []
    for candidate, g in df.groupby("candidate"):
        g = g.set_index("dataset")
        common = g.index.intersection(base.index)
        if common.empty:
            continue
        rel = g.loc[common, "val_ndcg@50"] / base.loc[common, "val_ndcg@50"]
        out.append(
            {
                "candidate": candidate,
                "datasets": len(common),
                "val NDCG / hinge": rel.mean(),
                "worst data set": rel.min(),
                "val MMR / hinge": (g.loc[common, "val_mmr"] / base.loc[common, "val_mmr"]).mean(),
                "train s (median)": float(g.loc[common, "train_seconds"].median()),
            }
        )
    table = pd.DataFrame(out)
    return table.sort_values("val NDCG / hinge", ascending=False) if not table.empty else table


def beside_linear(df, chosen: str) -> list[str]:
    """Markdown lines: per data set, the chosen candidate's validation NDCG@50 against each tuned linear baseline's
    (none when no baseline ran)."""
    linear = sorted(c for c in df.candidate.unique() if c.startswith(LINEAR))
    if not linear:
        return []
    ndcg = df.groupby(["dataset", "candidate"])["val_ndcg@50"].mean()
    header = f"| data set | {chosen} | " + " | ".join(
        f"{c[len(LINEAR) :]} | {chosen} / {c[len(LINEAR) :]}" for c in linear
    )
    lines = [
        f"Beside the tuned linear baselines (validation NDCG@50 in %, the same split; {chosen} is the choice):",
        "",
        header + " |",
        "|---" * (2 + 2 * len(linear)) + "|",
    ]
    for dataset in sorted(df.dataset.unique()):
        if (dataset, chosen) not in ndcg:
            continue
        ours = ndcg[(dataset, chosen)]
        cells = [
            f"{ndcg[(dataset, c)] * 100:.2f} | {ours / ndcg[(dataset, c)]:.3f}" if (dataset, c) in ndcg else "– | –"
            for c in linear
        ]
        lines.append(f"| {dataset} | {ours * 100:.2f} | " + " | ".join(cells) + " |")
    return lines + [""]


def losses_to_incumbent(df, candidate: str) -> list[str]:
    """The data sets where ``candidate``'s validation NDCG@50 is below `INCUMBENT`'s (both ran there)."""
    ndcg = df.groupby(["dataset", "candidate"])["val_ndcg@50"].mean()
    return [
        d
        for d in sorted(df.dataset.unique())
        if (d, candidate) in ndcg and (d, INCUMBENT) in ndcg and ndcg[(d, candidate)] < ndcg[(d, INCUMBENT)]
    ]


def choose(df, table) -> tuple[str, list[str]]:
    """The best mean over every data set among the candidates that lose to `INCUMBENT` on no data set (the
    incumbent itself if it ran), and a line for each better-on-average candidate ruled out by that rule."""
    full = table[table.datasets == table.datasets.max()]
    ruled_out = []
    for candidate in full.candidate:
        lost = losses_to_incumbent(df, candidate)
        if not lost:
            return candidate, ruled_out
        ruled_out.append(f"* {candidate}: a better mean, but below {INCUMBENT} on {', '.join(lost)}")
    return full.iloc[0].candidate, ruled_out


def render(df) -> str:
    table = scores(df)
    lines = ["# The most accurate configuration across data sets (validation)", ""]
    if not table.empty:
        chosen, ruled_out = choose(df, table)
        lines += [
            f"Chosen: **{chosen}** (the best mean over every data set among the candidates that are below "
            f"{INCUMBENT}, today's preset, on no data set).",
            "",
        ]
        if ruled_out:
            lines += ["Ruled out:", "", *ruled_out, ""]
        lines += [_markdown(table), ""]
        lines += beside_linear(df, chosen)
    lines += ["Per data set (validation NDCG@50 in %, its MMR; test NDCG@50 for reference):", ""]
    rows = []
    for (dataset, candidate), g in df.groupby(["dataset", "candidate"]):
        rows.append(
            {
                "dataset": dataset,
                "candidate": candidate,
                "pairs": f"{int(g.pairs.iloc[0]):,}",
                "val NDCG@50": _mean_std(g["val_ndcg@50"] * 100),
                "val MMR": _mean_std(g["val_mmr"]),
                "test NDCG@50": _mean_std(g["ndcg@50"] * 100),
                "train s": f"{g.train_seconds.iloc[0]:.0f}",
            }
        )
    if rows:
        import pandas as pd

        lines.append(_markdown(pd.DataFrame(rows)))
    lines += ["", "Candidates:", ""] + [f"* `{c}`: `{fields}`" for c, fields in CANDIDATES.items()]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    listed = lambda text: [x for x in text.split(",") if x]  # noqa: E731
    p.add_argument("--candidates", type=listed, default=list(CANDIDATES), help=", ".join(CANDIDATES))
    p.add_argument("--datasets", type=listed, default=list(DATASETS), help=", ".join(DATASETS))
    p.add_argument(
        "--baselines", type=listed, default=[], help="linear baselines tuned on the same splits, e.g. ease,als"
    )
    p.add_argument(
        "--baseline_trials", type=int, default=16, help="validation search of each baseline (EASE^R: draws of λ)"
    )
    p.add_argument("--epochs", type=float, default=25.0, help="passes over each data set's training pairs")
    p.add_argument("--max_pairs", type=int, default=2_000_000)
    p.add_argument("--evals", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data_root", default=DATA)
    p.add_argument("--out_dir", default=os.path.join(ROOT, "experiments", "results", "accurate"))
    p.add_argument("--runs_dir", default=os.path.join(ROOT, "experiments", "runs", "accurate"))
    p.add_argument("--dry_run", action="store_true")
    p.add_argument("--report", action="store_true")
    args = p.parse_args(argv)
    from experiments.baselines import BASELINES

    unknown = sorted(set(args.candidates) - set(CANDIDATES)) + sorted(set(args.datasets) - set(DATASETS))
    unknown += sorted(set(args.baselines) - set(BASELINES))
    if unknown:
        p.error(f"unknown candidate, data set or baseline: {', '.join(unknown)}")
    if args.baseline_trials < 1:
        p.error(f"--baseline_trials must be at least 1, got {args.baseline_trials}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    screen = Screen(args)
    if args.report:
        screen.write()
        print(os.path.join(args.out_dir, "accurate.md"))
        return 0
    if not args.dry_run:
        append_command(args.out_dir, "experiments.accurate", argv)
    screen.execute()
    if args.baselines and not args.dry_run:
        screen.execute_baselines()
    return 0


if __name__ == "__main__":
    sys.exit(main())
