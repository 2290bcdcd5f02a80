"""Why does 2-stage lose to uniform at |N_ij| > 1, and what fixes it? Every variant at equal training pairs.

    python -m experiments.negatives_study --dry_run                      # the plan and its ETA, nothing run
    python -m experiments.negatives_study                                # every variant x data set x N x seed
    python -m experiments.negatives_study --variants=uniform,2stage,original --negatives=5 --seeds=0,1,2
    python -m experiments.negatives_study --report                       # study.md from results.csv

A variant is the 2-stage sampler at batch 256 (the run's defaults, λ = 4 on the current embeddings, with the paper's
hinge: the min over the |N_ij| negatives) with a few fields changed; the baselines are uniform and popular at batch
256. The original code's realised sampler (deezer/sigir2019-2stagesampling) differs from the paper's in five ways,
each a variant alone and all together (``original``, `--preset=original`); the candidate fixes follow
(``VARIANTS``). Every run uses the stage-2 sweep's data sets (`experiments.stage2_sweep.DATASETS`: citeulike-t,
ml-100k with rating >= 4, the Echonest and Book-Crossing samples with relaxed filters), CollMetric's 3:1:1 split
with its own seed (1), d = 128, Adam lr 1e-4, C = min(2000, catalog), exactly ``--pairs`` training pairs
(steps = pairs / batch), validation NDCG@50 on every validation user, the checkpoint chosen on validation, tested.

Every invocation plans the product of its ``--variants`` x ``--datasets`` x ``--negatives`` x ``--seeds``, prints
the plan and an ETA, skips finished runs (a run directory with results.json) and resumes interrupted ones; rows are
merged into ``<out_dir>/results.csv`` (one per run, rewritten after each), the command is appended to
``command.txt`` and ``study.md`` is rewritten: per |N_ij| and variant, validation NDCG@50 and MMR relative to
uniform@256 on the same data set and seeds (mean over data sets: each data set weighs the same), then per data set
mean ± std over seeds of validation and test NDCG@50 and MMR.
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

from experiments.stage2_sweep import DATA, DATASETS, _fmt, append_command  # noqa: E402

#: name -> (what it is, Config fields changed from the 2-stage default at batch 256)
VARIANTS: dict[str, tuple[str, dict]] = {
    "uniform": ("uniform@256", {"sampler": "uniform"}),
    "uniform-b4096": ("uniform@4096", {"sampler": "uniform", "batch_size": 4096}),
    "popular": ("popular@256", {"sampler": "popular"}),
    "popular-distinct": (
        "popular@256, the batch's negatives distinct (the original's)",
        {"sampler": "popular", "batch_distinct_negatives": True},
    ),
    "2stage": ("2-stage@256 with the paper's hinge (the min over |N_ij|), the default before the study", {}),
    # the original code's differences, one at a time
    "uncapped": ("2-stage, uncapped inverse density (λ = none)", {"stage2_weight_cap": None}),
    "stale": ("2-stage, the item table never refreshed", {"stage2_refresh_every": -1}),
    "no-mask": ("2-stage, s < 0 weighed by w(|s|) instead of 0", {"stage2_mask_opposite": False}),
    "no-smoothing": ("2-stage, items absent from training never drawn", {"popularity_smoothing": 0.0}),
    "no-gor": ("2-stage without GOR (the released code never enables it)", {"gor_weight": 0.0}),
    "original": (
        "all of the original's differences (--preset=original)",
        {"stage2_weight_cap": None, "stage2_refresh_every": -1, "popularity_smoothing": 0.0, "gor_weight": 0.0},
    ),
    "original-gor": (
        "--preset=original with the paper's GOR weight",
        {"stage2_weight_cap": None, "stage2_refresh_every": -1, "popularity_smoothing": 0.0},
    ),
    # what the evidence may suggest for the min over |N_ij|
    "replacement": ("2-stage, independent draws (with replacement)", {"stage2_replacement": True}),
    "mix0.5": ("2-stage, half uniform over the candidates", {"stage2_uniform_mix": 0.5}),
    "hinge-mean": (
        "2-stage, one hinge per negative, averaged (the default at |N_ij| > 1 since the study)",
        {"hinge": "mean"},
    ),
    "cap1": ("2-stage, λ = 1 (uniform over the candidates with s >= 0)", {"stage2_weight_cap": 1.0}),
    # stage 1 closer to uniform: the candidates' popularity exponent β
    "beta0.5": ("2-stage, stage-1 candidates by popularity^0.5", {"beta": 0.5}),
    "beta0": ("2-stage, uniform stage-1 candidates (β = 0)", {"beta": 0.0}),
    "beta0.5-mean": ("2-stage, β = 0.5, one hinge per negative", {"beta": 0.5, "hinge": "mean"}),
    "beta0.75-mean": ("2-stage, β = 0.75, one hinge per negative", {"beta": 0.75, "hinge": "mean"}),
    "beta0-mean": ("2-stage, β = 0, one hinge per negative", {"beta": 0.0, "hinge": "mean"}),
    "beta0-replacement": ("2-stage, β = 0, independent draws", {"beta": 0.0, "stage2_replacement": True}),
    # the one-hinge-per-negative loss with the original's stale table, without the opposite mask, λ = 1 or 16
    "stale-mean": (
        "2-stage, never-refreshed table, one hinge per negative",
        {"stage2_refresh_every": -1, "hinge": "mean"},
    ),
    "no-mask-mean": (
        "2-stage, s < 0 by w(|s|), one hinge per negative",
        {"stage2_mask_opposite": False, "hinge": "mean"},
    ),
    "cap1-mean": ("2-stage, λ = 1, one hinge per negative", {"stage2_weight_cap": 1.0, "hinge": "mean"}),
    "cap16-mean": ("2-stage, λ = 16, one hinge per negative", {"stage2_weight_cap": 16.0, "hinge": "mean"}),
    "pmix0.5-mean": (
        "2-stage, stage-1 candidates by 0.5·popularity + 0.5·uniform, one hinge per negative",
        {"popularity_uniform_mix": 0.5, "hinge": "mean"},
    ),
    "pmix0.75-mean": (
        "2-stage, stage-1 candidates by 0.25·popularity + 0.75·uniform, one hinge per negative",
        {"popularity_uniform_mix": 0.75, "hinge": "mean"},
    ),
    "uniform-mean": ("uniform@256, one hinge per negative", {"sampler": "uniform", "hinge": "mean"}),
}
#: the screen: every variant but the large batch (its own check, --variants=uniform-b4096)
SCREEN = [v for v in VARIANTS if v != "uniform-b4096"]

RESULT_COLUMNS = [
    "dataset",
    "variant",
    "num_negatives",
    "seed",
    "pairs",
    "batch_size",
    "val_ndcg@50",
    "val_map@50",
    "val_mmr",
    "ndcg@50",
    "map@50",
    "recall@50",
    "mmr",
    "pairs_per_sec",
    "train_seconds",
    "best_step",
    "steps",
]
# rough seconds per million pairs on 2 busy cores, for the ETA before a run has finished: (sampler, N > 1)
_PRIOR = {
    ("uniform", False): 40.0,
    ("uniform", True): 60.0,
    ("popular", False): 45.0,
    ("popular", True): 70.0,
    ("2stage", False): 80.0,
    ("2stage", True): 120.0,
}


@dataclasses.dataclass(frozen=True)
class Run:
    dataset: str
    variant: str
    num_negatives: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.variant}-n{self.num_negatives}-s{self.seed}"

    @property
    def sampler(self) -> str:
        return VARIANTS[self.variant][1].get("sampler", "2stage")


def run_config(run: Run, data_root: str, pairs: int, n_items: int, evals: int):
    """The run's Config: the 2-stage default at batch 256 on the sweep's protocol, with the variant's fields."""
    from cml_tf.training.config import Config

    dataset, path, options = DATASETS[run.dataset]
    fields = dict(VARIANTS[run.variant][1])
    batch = fields.get("batch_size", 256)
    steps = max(1, pairs // batch)
    base = Config(
        dataset=dataset,
        data_path=os.path.abspath(os.path.join(data_root, path)),
        dataset_options=dict(options),
        split="original",
        split_seed=1,
        sampler="2stage",
        batch_size=256,
        num_negatives=run.num_negatives,
        num_candidates=min(2000, n_items),
        max_steps=steps,
        eval_every=max(1, steps // evals),
        seed=run.seed,
        hinge="min",  # the paper's formula unless the variant says otherwise (the default at N > 1 is the mean)
    )
    return dataclasses.replace(base, **fields)


def result_row(run: Run, config, results: dict, pairs: int) -> dict:
    """One results.csv row; ``pairs`` is the requested budget (the runs train ``pairs // batch`` whole batches)."""
    valid = results["valid"]
    return {
        "dataset": run.dataset,
        "variant": run.variant,
        "num_negatives": run.num_negatives,
        "seed": run.seed,
        "pairs": pairs,
        "batch_size": config.batch_size,
        "val_ndcg@50": valid["ndcg@50"],
        "val_map@50": valid["map@50"],
        "val_mmr": valid["mmr"],
        **{k: results[k] for k in ("ndcg@50", "map@50", "recall@50", "mmr", "pairs_per_sec", "train_seconds")},
        "best_step": results["best_step"],
        "steps": results["steps"],
    }


def plan(args) -> list[Run]:
    return [Run(d, v, n, s) for n in args.negatives for d in args.datasets for v in args.variants for s in args.seeds]


class Study:
    def __init__(self, args):
        self.args = args
        self.data: dict = {}
        self.measured: dict = {}
        self.rows = read_rows(os.path.join(args.out_dir, "results.csv"))

    def load(self, name: str):
        if name not in self.data:
            from cml_tf.training.config import Config
            from cml_tf.training.data import load_data

            dataset, path, options = DATASETS[name]
            path = os.path.abspath(os.path.join(self.args.data_root, path))
            self.data[name] = load_data(
                Config(dataset=dataset, data_path=path, dataset_options=dict(options), split="original", split_seed=1)
            )
        return self.data[name]

    def run_dir(self, run: Run) -> str:
        return os.path.join(self.args.runs_dir, f"pairs{self.args.pairs}", run.dataset, run.name)

    def estimate(self, runs: list[Run]) -> float:
        total = 0.0
        for r in runs:
            key = (r.sampler, r.num_negatives > 1)
            total += self.measured.get(key, _PRIOR[key] / 1e6) * self.args.pairs
        return total

    def execute(self, runs: list[Run]) -> None:
        import logging

        from cml_tf import training

        logging.getLogger("tensorflow").setLevel(logging.ERROR)  # one process trains many models: retracing notes
        todo = [r for r in runs if not os.path.exists(os.path.join(self.run_dir(r), "results.json"))]
        print(f"plan: {len(runs)} runs, {len(runs) - len(todo)} finished already; ETA {_fmt(self.estimate(todo))}")
        for r in runs:
            print(f"  {r.dataset:<13} {r.name:<28} {VARIANTS[r.variant][0]}")
        if self.args.dry_run:
            return
        started = time.perf_counter()
        for i, run in enumerate(runs, 1):
            interactions, split = self.load(run.dataset)
            config = run_config(run, self.args.data_root, self.args.pairs, interactions.n_items, self.args.evals)
            model_dir = self.run_dir(run)
            fresh = not os.path.exists(os.path.join(model_dir, "results.json"))
            t0 = time.perf_counter()
            results = training.train(config, model_dir, data=(interactions, split), verbose=0)
            if fresh:
                key = (run.sampler, run.num_negatives > 1)
                per_pair = (time.perf_counter() - t0) / (config.max_steps * config.batch_size)
                self.measured[key] = per_pair if key not in self.measured else 0.5 * (self.measured[key] + per_pair)
                todo.remove(run)
            row = result_row(run, config, results, self.args.pairs)
            key = (run.dataset, run.variant, run.num_negatives, run.seed, row["pairs"])
            self.rows = [r for r in self.rows if _key(r) != key] + [row]
            self.write()
            print(
                f"[{i}/{len(runs)}] {run.dataset} {run.name}: val ndcg@50 {row['val_ndcg@50']:.4f}, "
                f"mmr {row['val_mmr']:.1f} | test ndcg@50 {row['ndcg@50']:.4f} | {row['pairs_per_sec']:,.0f} pairs/s "
                f"| elapsed {_fmt(time.perf_counter() - started)}, ETA {_fmt(self.estimate(todo))}",
                flush=True,
            )

    def write(self) -> None:
        import pandas as pd

        from cml_tf.io import write_text_atomic

        os.makedirs(self.args.out_dir, exist_ok=True)
        df = pd.DataFrame(self.rows, columns=RESULT_COLUMNS)
        df = df.sort_values(["num_negatives", "dataset", "variant", "seed", "pairs"], kind="stable")
        write_text_atomic(os.path.join(self.args.out_dir, "results.csv"), df.to_csv(index=False))
        write_text_atomic(os.path.join(self.args.out_dir, "study.md"), render(df))


def _key(row: dict) -> tuple:
    return (row["dataset"], row["variant"], int(row["num_negatives"]), int(row["seed"]), int(row["pairs"]))


def read_rows(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    import pandas as pd

    return pd.read_csv(path).to_dict("records")


def relative(df):
    """Per (pairs, N, variant): mean over data sets of val NDCG@50 and val MMR relative to uniform@256 on the same
    data set and seeds, with the data sets counted."""
    import pandas as pd

    out = []
    for (pairs, n), group in df.groupby(["pairs", "num_negatives"]):
        base = group[group.variant == "uniform"].set_index(["dataset", "seed"])
        for variant, rows in group.groupby("variant"):
            rows = rows.set_index(["dataset", "seed"])
            common = rows.index.intersection(base.index)
            if common.empty:
                continue
            by_ds = (
                pd.DataFrame(
                    {
                        "ndcg": rows.loc[common, "val_ndcg@50"] / base.loc[common, "val_ndcg@50"],
                        "mmr": rows.loc[common, "val_mmr"] / base.loc[common, "val_mmr"],
                    }
                )
                .groupby(level="dataset")
                .mean()
            )
            out.append(
                {
                    "pairs": pairs,
                    "N": n,
                    "variant": variant,
                    "datasets": len(by_ds),
                    "seeds": rows.loc[common].reset_index().seed.nunique(),
                    "val NDCG / uniform": by_ds.ndcg.mean(),
                    "worst data set": by_ds.ndcg.min(),
                    "val MMR / uniform": by_ds.mmr.mean(),
                }
            )
    return pd.DataFrame(out)


def render(df) -> str:
    lines = ["# |N_ij| > 1: which sampler, at equal training pairs", ""]
    lines += ["Validation NDCG@50 and MMR relative to uniform@256 (same data set and seeds), mean over data sets:", ""]
    rel = relative(df)
    order = {v: i for i, v in enumerate(VARIANTS)}
    if not rel.empty:
        rel = rel.sort_values(["pairs", "N", "val NDCG / uniform"], ascending=[True, True, False])
        lines.append(_markdown(rel))
    lines += ["", "Per data set, mean ± std over seeds (NDCG in %):", ""]
    stats = []
    for (pairs, n, dataset, variant), g in df.groupby(["pairs", "num_negatives", "dataset", "variant"]):
        ms = lambda col, scale=100.0, g=g: _mean_std(g[col] * scale)  # noqa: E731

        stats.append(
            {
                "pairs": pairs,
                "N": n,
                "dataset": dataset,
                "variant": variant,
                "seeds": len(g),
                "val NDCG@50": ms("val_ndcg@50"),
                "val MMR": ms("val_mmr", 1.0),
                "test NDCG@50": ms("ndcg@50"),
                "test MMR": ms("mmr", 1.0),
                "pairs/s": f"{g.pairs_per_sec.median():,.0f}",
                "_o": order.get(variant, 99),
            }
        )
    if stats:
        import pandas as pd

        table = pd.DataFrame(stats).sort_values(["pairs", "N", "dataset", "_o"]).drop(columns="_o")
        lines.append(_markdown(table))
    lines += ["", "Variants:", ""] + [f"* `{v}`: {d}" for v, (d, _) in VARIANTS.items()]
    return "\n".join(lines) + "\n"


def _mean_std(values) -> str:
    return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}" if len(values) > 1 else f"{values.mean():.2f}"


def _markdown(df) -> str:
    """A pandas frame as a Markdown table (floats with 3 decimals)."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    listed = lambda kind: lambda text: [kind(x) for x in text.split(",") if x]  # noqa: E731
    p.add_argument("--variants", type=listed(str), default=SCREEN, help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--datasets", type=listed(str), default=list(DATASETS), help=", ".join(DATASETS))
    p.add_argument("--negatives", type=listed(int), default=[2, 5], help="|N_ij| values")
    p.add_argument("--seeds", type=listed(int), default=[0])
    p.add_argument("--pairs", type=int, default=1_000_000, help="training pairs per run")
    p.add_argument("--evals", type=int, default=5, help="validations per run")
    p.add_argument("--data_root", default=DATA)
    p.add_argument("--out_dir", default=os.path.join(ROOT, "experiments", "results", "negatives_study"))
    p.add_argument("--runs_dir", default=os.path.join(ROOT, "experiments", "runs", "negatives_study"))
    p.add_argument("--dry_run", action="store_true", help="print the plan and its ETA only")
    p.add_argument("--report", action="store_true", help="rewrite study.md from results.csv only")
    args = p.parse_args(argv)
    unknown = sorted(set(args.variants) - set(VARIANTS)) + sorted(set(args.datasets) - set(DATASETS))
    if unknown:
        p.error(f"unknown variant or data set: {', '.join(unknown)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    study = Study(args)
    if args.report:
        study.write()
        print(os.path.join(args.out_dir, "study.md"))
        return 0
    if not args.dry_run:
        append_command(args.out_dir, "experiments.negatives_study", argv)
    study.execute(plan(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
