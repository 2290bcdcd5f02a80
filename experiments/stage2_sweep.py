"""The stage-2 sweep: which 2-stage sampler trains the best CML, on every data set we can run?

    python -m experiments.stage2_sweep                       # the whole sweep (plan + ETA printed first)
    python -m experiments.stage2_sweep --dry_run             # list the planned runs
    python -m experiments.stage2_sweep --datasets=ml100k --seeds=0 --pairs=200000   # a small one

Stage 2 draws negatives among C popularity candidates with Wu et al.'s capped weight min(λ, q(s)⁻¹) (q⁻¹ relative to
its value at s = 0; λ = none is the paper taken literally). Two phases, each resumable (a run with a results.json
is not run again) and each printing its plan and an ETA:

1. **λ curve** at |N_ij| = 1 on every data set with every seed: 2-stage@256 at each λ of ``--caps``, beside
   uniform@256 and popular@256, all at exactly ``--pairs`` training pairs.
2. **Around the chosen λ** (one seed): the cut-off D_min (``--cutoffs``), the refresh modes of stage 2's item table
   (``--refresh``: a copy refreshed every K steps, or never) at the chosen λ and uncapped, and |N_ij| = 5 for
   2-stage at the chosen λ and for uniform (``--n5_neighbours``: also 2-stage at λ's neighbours, and popular).

λ is chosen on VALIDATION across the data sets, not per data set: the mean over data sets of validation NDCG@50
relative to uniform@256 (so each data set weighs the same); among the λ within ``--tolerance`` of the best, the one
with the lowest mean validation MMR relative to uniform (less popularity bias). Test metrics are reported for the
checkpoint chosen on validation, as mean ± std over seeds.

Every data set uses CollMetric's 3:1:1 split (its own seed, 1), d = 128, Adam lr 1e-4, C = min(2000, catalog).
Outputs in ``--out_dir`` (default experiments/results/stage2_sweep): results.csv (one row per run), sweep.md
(tables), lambda_curve.png (NDCG@50 and MMR against λ per data set), command.txt; run directories in ``--runs_dir``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shlex
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "..", "shared", "data")

# name -> (dataset, path under --data_root, loader options). The shipped Echonest and Book-Crossing samples are
# far smaller than the paper's files: their filters are relaxed so that at least 500 users remain.
DATASETS = {
    "citeulike": ("citeulike", "citeulike-t", {}),
    "ml100k": ("movielens", "ml-100k/u.data", {"min_rating": 4.0}),
    "echonest": (
        "echonest",
        "echonest/train_triplets_sample.txt",
        {"min_playcount": 1, "min_user_interactions": 10, "min_item_users": 3, "iterative_core": True},
    ),
    "bookcrossing": (
        "book_crossing",
        "book-crossing/BX-Book-Ratings.partial.csv",
        {"min_rating": 5.0, "min_user_interactions": 5, "min_item_users": 2, "iterative_core": True},
    ),
}

RESULT_COLUMNS = [
    "dataset",
    "run",
    "phase",
    "sampler",
    "weight_cap",
    "cutoff",
    "refresh",
    "num_negatives",
    "seed",
    "pairs",
    "val_ndcg@50",
    "val_map@50",
    "val_recall@50",
    "val_mmr",
    "ndcg@50",
    "map@50",
    "recall@50",
    "mmr",
    "pairs_per_sec",
    "train_seconds",
]


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of the sweep."""

    dataset: str
    phase: str
    sampler: str
    seed: int
    num_negatives: int = 1
    weight_cap: float | None = None
    cutoff: float = 0.0
    refresh: int = 0

    @property
    def name(self) -> str:
        if self.sampler != "2stage":
            core = f"{self.sampler}"
        else:
            core = f"2stage-cap{cap_label(self.weight_cap)}"
            if self.cutoff:
                core += f"-cut{self.cutoff:g}"
            if self.refresh:
                core += f"-refresh{'never' if self.refresh < 0 else self.refresh}"
        return f"{core}-n{self.num_negatives}-s{self.seed}"


def cap_label(cap: float | None) -> str:
    return "none" if cap is None else f"{cap:g}"


def parse_cap(text: str) -> float | None:
    return None if text.strip().lower() in ("none", "inf") else float(text)


def curve_runs(datasets, seeds, caps) -> list[Run]:
    runs = []
    for ds in datasets:
        for seed in seeds:
            runs += [Run(ds, "curve", "uniform", seed), Run(ds, "curve", "popular", seed)]
            runs += [Run(ds, "curve", "2stage", seed, weight_cap=c) for c in caps]
    return runs


def neighbours(caps, chosen) -> list:
    """The chosen λ and its neighbours on the curve (uncapped excluded: it has its own rows)."""
    finite = [c for c in caps if c is not None]
    if chosen is None or chosen not in finite:
        return [chosen]
    i = finite.index(chosen)
    return finite[max(0, i - 1) : i + 2]


def around_runs(datasets, seed, caps, chosen, cutoffs, refresh, n5_neighbours=False) -> list[Run]:
    caps_n5 = neighbours(caps, chosen) if n5_neighbours else [chosen]
    samplers_n5 = ("uniform", "popular") if n5_neighbours else ("uniform",)
    runs = []
    for ds in datasets:
        runs += [Run(ds, "around", "2stage", seed, weight_cap=chosen, cutoff=c) for c in cutoffs]
        for cap in dict.fromkeys([chosen, None]):
            runs += [Run(ds, "around", "2stage", seed, weight_cap=cap, refresh=r) for r in refresh]
        runs += [Run(ds, "around", sampler, seed, num_negatives=5) for sampler in samplers_n5]
        runs += [Run(ds, "around", "2stage", seed, num_negatives=5, weight_cap=c) for c in caps_n5]
    return runs


def choose_cap(rows: list[dict], caps, tolerance: float):
    """λ chosen on validation across data sets (see the module docstring). Returns (λ, table of scores)."""
    import pandas as pd

    df = pd.DataFrame([r for r in rows if r["phase"] == "curve" and r["num_negatives"] == 1])
    uniform = df[df.sampler == "uniform"].groupby("dataset")[["val_ndcg@50", "val_mmr"]].mean()
    scores = []
    for cap in caps:
        label = cap_label(cap)
        sub = df[(df.sampler == "2stage") & (df.weight_cap == label)].groupby("dataset")[["val_ndcg@50", "val_mmr"]]
        sub = sub.mean()
        common = sub.index.intersection(uniform.index)
        if common.empty:
            continue
        rel_ndcg = (sub.loc[common, "val_ndcg@50"] / uniform.loc[common, "val_ndcg@50"]).mean()
        rel_mmr = (sub.loc[common, "val_mmr"] / uniform.loc[common, "val_mmr"]).mean()
        scores.append({"weight_cap": label, "cap": cap, "rel_val_ndcg": rel_ndcg, "rel_val_mmr": rel_mmr})
    if not scores:
        return None, pd.DataFrame()
    table = pd.DataFrame(scores)
    best = table.rel_val_ndcg.max()
    near = table[table.rel_val_ndcg >= best * (1 - tolerance)]
    chosen = near.sort_values(["rel_val_mmr", "rel_val_ndcg"], ascending=[True, False]).iloc[0]
    return chosen["cap"], table.drop(columns="cap")


def run_config(run: Run, data_root: str, pairs: int, n_items: int, evals: int):
    from cml_tf.training.config import Config

    dataset, path, options = DATASETS[run.dataset]
    steps = pairs // 256
    eval_every = max(20, steps // evals // 20 * 20)
    return Config(
        dataset=dataset,
        data_path=os.path.abspath(os.path.join(data_root, path)),
        dataset_options=dict(options),
        split="original",
        split_seed=1,
        sampler=run.sampler,
        batch_size=256,
        num_negatives=run.num_negatives,
        num_candidates=min(2000, n_items),
        stage2_weight_cap=run.weight_cap,
        stage2_cutoff=run.cutoff,
        stage2_refresh_every=run.refresh,
        max_steps=steps,
        eval_every=eval_every,
        seed=run.seed,
    )


def result_row(run: Run, results: dict, pairs: int) -> dict:
    v = results["valid"]
    return {
        "dataset": run.dataset,
        "run": run.name,
        "phase": run.phase,
        "sampler": run.sampler,
        "weight_cap": cap_label(run.weight_cap) if run.sampler == "2stage" else "",
        "cutoff": run.cutoff,
        "refresh": run.refresh,
        "num_negatives": run.num_negatives,
        "seed": run.seed,
        "pairs": pairs,
        "val_ndcg@50": v["ndcg@50"],
        "val_map@50": v["map@50"],
        "val_recall@50": v["recall@50"],
        "val_mmr": v["mmr"],
        **{k: results[k] for k in ("ndcg@50", "map@50", "recall@50", "mmr", "pairs_per_sec", "train_seconds")},
    }


def _fmt(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


# rough seconds per run on 2 busy CPU cores at 1M pairs, for the ETA before any run has finished
_PRIOR_SECONDS = {"uniform": 45.0, "popular": 45.0, "2stage": 90.0}


def estimate(runs: list[Run], pairs: int, measured: dict) -> float:
    total = 0.0
    for r in runs:
        per_pair = measured.get(r.sampler, _PRIOR_SECONDS[r.sampler] / 1_000_000)
        total += per_pair * pairs * (2.0 if r.num_negatives > 1 and r.sampler == "2stage" else 1.0)
    return total


class Sweep:
    def __init__(self, args):
        self.args = args
        self.data: dict = {}
        self.rows: list[dict] = []
        self.measured: dict[str, float] = {}
        self.started = time.perf_counter()

    def load(self, name: str):
        if name not in self.data:
            from cml_tf.training.config import Config
            from cml_tf.training.data import load_data

            dataset, path, options = DATASETS[name]
            base = Config(
                dataset=dataset,
                data_path=os.path.abspath(os.path.join(self.args.data_root, path)),
                dataset_options=dict(options),
                split="original",
                split_seed=1,
            )
            self.data[name] = load_data(base)
        return self.data[name]

    def execute(self, runs: list[Run], title: str) -> None:
        from cml_tf import training

        todo = [r for r in runs if not os.path.exists(os.path.join(self.run_dir(r), "results.json"))]
        eta = estimate(todo, self.args.pairs, self.measured)
        print(
            f"== {title}: {len(runs)} runs planned, {len(runs) - len(todo)} done already, ETA {_fmt(eta)}", flush=True
        )
        for i, run in enumerate(runs, 1):
            interactions, split = self.load(run.dataset)
            config = run_config(run, self.args.data_root, self.args.pairs, interactions.n_items, self.args.evals)
            model_dir = self.run_dir(run)
            fresh = not os.path.exists(os.path.join(model_dir, "results.json"))
            t0 = time.perf_counter()
            results = training.train(config, model_dir, data=(interactions, split), verbose=0, overwrite=False)
            seconds = time.perf_counter() - t0
            pairs = config.max_steps * config.batch_size
            if fresh:
                per_pair = seconds / pairs / (2.0 if run.num_negatives > 1 and run.sampler == "2stage" else 1.0)
                prev = self.measured.get(run.sampler)
                self.measured[run.sampler] = per_pair if prev is None else 0.5 * (prev + per_pair)
                todo = [r for r in todo if r != run]
            self.rows = [r for r in self.rows if not (r["dataset"] == run.dataset and r["run"] == run.name)]
            self.rows.append(result_row(run, results, pairs))
            eta = estimate(todo, self.args.pairs, self.measured)
            print(
                f"[{i}/{len(runs)}] {run.dataset} {run.name}: val ndcg@50={results['valid']['ndcg@50']:.4f} "
                f"mmr={results['valid']['mmr']:.1f} | test ndcg@50={results['ndcg@50']:.4f} "
                f"({'ran' if fresh else 'done'} {seconds:.0f}s) | elapsed {_fmt(time.perf_counter() - self.started)}, "
                f"ETA {_fmt(eta)}",
                flush=True,
            )
            self.write_outputs()

    def run_dir(self, run: Run) -> str:
        return os.path.join(self.args.runs_dir, f"pairs{self.args.pairs}", run.dataset, run.name)

    def write_outputs(self, chosen=None, scores=None) -> None:
        import pandas as pd

        from cml_tf.io import write_text_atomic

        os.makedirs(self.args.out_dir, exist_ok=True)
        df = pd.DataFrame(self.rows, columns=RESULT_COLUMNS)
        write_text_atomic(os.path.join(self.args.out_dir, "results.csv"), df.to_csv(index=False))
        if chosen is not None or scores is not None:
            write_text_atomic(os.path.join(self.args.out_dir, "sweep.md"), render_markdown(df, chosen, scores))
            plot(df, os.path.join(self.args.out_dir, "lambda_curve.png"))


def summary_table(df, metrics=("ndcg@50", "map@50", "recall@50", "mmr")):
    """Mean ± std over seeds per (dataset, run config), validation and test."""
    keys = ["dataset", "phase", "sampler", "weight_cap", "cutoff", "refresh", "num_negatives"]
    cols = [f"val_{m}" for m in metrics] + list(metrics)
    g = df.groupby(keys, dropna=False, sort=False)[cols]
    mean, std, n = g.mean(), g.std(), g.size()
    return mean, std, n


def label(sampler, cap, cutoff, refresh, n) -> str:
    if sampler != "2stage":
        text = f"{sampler}@256"
    else:
        text = f"2stage@256 λ={cap}" if cap != "none" else "2stage@256 uncapped (paper)"
        if cutoff:
            text += f", D_min={cutoff:g}"
        if refresh:
            text += f", refresh {'never' if refresh < 0 else f'every {refresh}'}"
    return text + (f", N={n}" if n != 1 else "")


def render_markdown(df, chosen, scores) -> str:
    mean, std, n = summary_table(df)
    out = ["# Stage-2 sweep", ""]
    if scores is not None and len(scores):
        out += [
            "## Choice of λ (validation, mean over data sets, relative to uniform@256)",
            "",
            "| λ | val NDCG@50 / uniform | val MMR / uniform |",
            "|---|---:|---:|",
        ]
        for _, r in scores.iterrows():
            mark = " **(chosen)**" if r["weight_cap"] == cap_label(chosen) else ""
            out.append(f"| {r['weight_cap']}{mark} | {r['rel_val_ndcg']:.3f} | {r['rel_val_mmr']:.3f} |")
        out.append("")
    for dataset in df.dataset.unique():
        out += [
            f"## {dataset}",
            "",
            "| run | seeds | val NDCG@50 | val MAP@50 | val MMR | test NDCG@50 | test MAP@50 | test Recall@50 "
            "| test MMR |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for key in mean.index:
            if key[0] != dataset:
                continue
            m, s, count = mean.loc[key], std.loc[key], n.loc[key]

            def cell(col, pct=True, m=m, s=s, count=count):
                scale = 100.0 if pct else 1.0
                fmt = "{:.2f}" if pct else "{:.1f}"
                text = fmt.format(m[col] * scale)
                if count > 1 and not math.isnan(s[col]):
                    text += " ± " + fmt.format(s[col] * scale)
                return text

            _, phase, sampler, cap, cutoff, refresh, negs = key
            out.append(
                f"| {label(sampler, cap, cutoff, refresh, negs)} | {count} | {cell('val_ndcg@50')} | "
                f"{cell('val_map@50')} | {cell('val_mmr', False)} | {cell('ndcg@50')} | {cell('map@50')} | "
                f"{cell('recall@50')} | {cell('mmr', False)} |"
            )
        out.append("")
    out.append("NDCG, MAP and Recall in %; mean ± sample std over seeds; test metrics of the best validation step.")
    return "\n".join(out) + "\n"


def curve_frame(df):
    """λ-curve rows (|N_ij| = 1, curve phase) with a numeric x for λ (uncapped plotted at the right end)."""
    curve = df[(df.phase == "curve") & (df.num_negatives == 1)].copy()
    caps = sorted({float(c) for c in curve.weight_cap if c not in ("", "none")})
    right = (max(caps) if caps else 1.0) * 10
    curve["x"] = [float(c) if c not in ("", "none") else right for c in curve.weight_cap]
    return curve, right


def plot(df, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve, right = curve_frame(df)
    datasets = list(curve.dataset.unique())
    if not datasets:
        return
    fig, axes = plt.subplots(2, len(datasets), figsize=(4 * len(datasets), 6), squeeze=False)
    for j, ds in enumerate(datasets):
        sub = curve[curve.dataset == ds]
        two = sub[sub.sampler == "2stage"].groupby("x")[["ndcg@50", "mmr"]].agg(["mean", "std"])
        for i, metric in enumerate(("ndcg@50", "mmr")):
            ax = axes[i, j]
            ax.errorbar(two.index, two[(metric, "mean")], yerr=two[(metric, "std")], marker="o", label="2-stage")
            for sampler, style in (("uniform", "--"), ("popular", ":")):
                value = sub[sub.sampler == sampler][metric].mean()
                if not math.isnan(value):
                    ax.axhline(value, linestyle=style, color="grey", label=f"{sampler}@256")
            ax.set_xscale("log")
            ax.set_xlabel("λ (cap; rightmost = uncapped)")
            ax.set_ylabel(f"test {metric.upper()}")
            ax.set_title(ds)
            if i == 0 and j == 0:
                ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def append_command(out_dir: str, module: str, argv) -> None:
    """Appends ``<UTC time> <commit>: python -m <module> <argv>`` to ``out_dir``/command.txt (created if absent)."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "command.txt"), "a", encoding="utf-8") as f:
        command = shlex.join(["python", "-m", module, *(argv or sys.argv[1:])])
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())} {git_commit()}: {command}\n")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default=",".join(DATASETS), help=f"comma list of {', '.join(DATASETS)}")
    p.add_argument("--data_root", default=DATA, help="folder holding the shipped data (../shared/data)")
    p.add_argument("--seeds", default="0,1,2", help="training seeds of the λ curve (the split's seed stays 1)")
    p.add_argument("--caps", default="1,4,16,none", help="λ values of the curve ('none' = uncapped, the paper)")
    p.add_argument("--cutoffs", default="1.0", help="D_min values tried at the chosen λ (phase 2)")
    p.add_argument("--refresh", default="100,-1", help="stage-2 table refresh modes tried in phase 2 (-1 = never)")
    p.add_argument("--pairs", type=int, default=1_000_000, help="training pairs of every run")
    p.add_argument("--evals", type=int, default=8, help="validation evaluations per run")
    p.add_argument(
        "--tolerance", type=float, default=0.02, help="λ within this relative NDCG of the best compete on MMR"
    )
    p.add_argument("--n5_neighbours", action="store_true", help="phase 2: |N_ij| = 5 also at λ's neighbours")
    p.add_argument("--curve_only", action="store_true", help="run phase 1 only (the λ curve and the choice)")
    p.add_argument("--out_dir", default=os.path.join(ROOT, "experiments", "results", "stage2_sweep"))
    p.add_argument("--runs_dir", default=os.path.join(ROOT, "experiments", "runs", "stage2_sweep"))
    p.add_argument("--dry_run", action="store_true", help="print the planned runs and exit")
    p.add_argument("--report", action="store_true", help="only rewrite sweep.md and the plot from results.csv")
    args = p.parse_args(argv)
    args.datasets = [d for d in args.datasets.split(",") if d]
    unknown = [d for d in args.datasets if d not in DATASETS]
    if unknown:
        p.error(f"--datasets: unknown {', '.join(unknown)}; expected some of {', '.join(DATASETS)}")
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    args.caps = [parse_cap(c) for c in args.caps.split(",") if c]
    args.cutoffs = [float(c) for c in args.cutoffs.split(",") if c]
    args.refresh = [int(r) for r in args.refresh.split(",") if r]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, ROOT)
    curve = curve_runs(args.datasets, args.seeds, args.caps)
    first = args.caps[0]
    around_count = len(
        around_runs(args.datasets, args.seeds[0], args.caps, first, args.cutoffs, args.refresh, args.n5_neighbours)
    )
    total = len(curve) + around_count * (not args.curve_only)
    print(
        f"stage-2 sweep: {total} runs ({len(curve)} on the λ curve, about {around_count} around the chosen λ), "
        f"{args.pairs:,} pairs each; ETA before any run {_fmt(estimate(curve, args.pairs, {}) * (total / len(curve)))}",
        flush=True,
    )
    if args.dry_run:
        for r in curve:
            print(f"  curve  {r.dataset:12s} {r.name}")
        print(f"  around: {around_count} runs at the λ chosen on the curve's validation results")
        return 0
    if args.report:
        import pandas as pd

        sweep = Sweep(args)
        csv_path = os.path.join(args.out_dir, "results.csv")
        sweep.rows = pd.read_csv(csv_path, keep_default_na=False).to_dict("records")
        chosen, scores = choose_cap(sweep.rows, args.caps, args.tolerance)
        sweep.write_outputs(chosen, scores)
        print(f"λ = {cap_label(chosen)}; rewrote sweep.md and lambda_curve.png from {csv_path}")
        return 0
    from cml_tf.io import write_text_atomic

    os.makedirs(args.out_dir, exist_ok=True)
    write_text_atomic(
        os.path.join(args.out_dir, "command.txt"),
        f"python -m experiments.stage2_sweep {' '.join(sys.argv[1:] if argv is None else argv)}\n"
        f"# commit {git_commit()}\n",
    )
    sweep = Sweep(args)
    sweep.execute(curve, "λ curve")
    chosen, scores = choose_cap(sweep.rows, args.caps, args.tolerance)
    print(f"chosen on validation across data sets: λ = {cap_label(chosen)}", flush=True)
    print(scores.to_string(index=False), flush=True)
    sweep.write_outputs(chosen, scores)
    if not args.curve_only:
        sweep.execute(
            around_runs(args.datasets, args.seeds[0], args.caps, chosen, args.cutoffs, args.refresh), "around"
        )
        sweep.write_outputs(chosen, scores)
    print(f"wrote {args.out_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
