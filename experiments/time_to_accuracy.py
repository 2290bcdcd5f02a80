"""Batch size and learning rate by time to accuracy: which setting of ``--preset=accurate`` reaches the best
validation NDCG soonest?

    python -m experiments.time_to_accuracy --dry_run        # the plan and its ETA
    python -m experiments.time_to_accuracy                  # every data set x setting (resumable)
    python -m experiments.time_to_accuracy --report         # time_to_accuracy.md from curves.csv

The sampled softmax of the preset shares its C stage-1 candidates across the batch, so a larger batch is cheaper per
pair; whether it also learns as much per second is what this measures. Every setting of ``--grid``
(``batch_size:learning_rate``, the rest of the preset unchanged) trains on each data set for ``--budget`` minutes of
training time (``Config.max_train_seconds``: validation excluded, the run stops at the first validation past it;
``--epochs`` is only a cap), validating every ``--eval_pairs`` training pairs on every validation user. Data sets:

* ``citeulike``: citeulike-t, CollMetric's 3:1:1 split with its own seed (1), validation NDCG@50 (as the screen
  behind the preset, `experiments.accurate`);
* ``ml-1m``: the fixed ML-1M split of LightGCN++ (``--dataset=lightgcn``), its valid.txt, NDCG@20.

Only validation is read: each run's metrics.csv rows become curves.csv. At each budget of ``--budgets`` (minutes),
a setting's score is the best validation NDCG it reached within that much training time (the checkpoint a run with
that budget would keep); time_to_accuracy.md gives the table per data set, the setting that leads at each budget and
every setting's training pairs/s. ``notebooks/09_time_to_accuracy.ipynb`` plots the curves.

Timings are wall-clock: run it on a quiet machine, one run at a time. Outputs in ``--out_dir`` (default
experiments/results/time_to_accuracy): curves.csv, time_to_accuracy.md, command.txt (appended). Runs in
``--runs_dir`` (default experiments/runs/time_to_accuracy, not committed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from experiments.stage2_sweep import DATA, _fmt, append_command  # noqa: E402

#: name -> (Config fields of the data and its split, k of the validation NDCG)
DATASETS: dict[str, tuple[dict, int]] = {
    "citeulike": ({"dataset": "citeulike", "data_path": "citeulike-t", "split": "original", "split_seed": 1}, 50),
    "ml-1m": ({"dataset": "lightgcn", "data_path": "ml-1m-lightgcn", "split": "given"}, 20),
}
#: the preset's own setting first (batch 256, Adam lr 1e-4), then larger batches at the same and larger rates
GRID = ["256:1e-4", "256:3e-4", "1024:1e-4", "1024:3e-4", "4096:3e-4", "4096:1e-3"]
OUT = os.path.join(ROOT, "experiments", "results", "time_to_accuracy")
RUNS = os.path.join(ROOT, "experiments", "runs", "time_to_accuracy")
COLUMNS = ["dataset", "setting", "batch_size", "learning_rate", "step", "epoch", "train_seconds", "val_ndcg", "k"]


def parse_setting(text: str) -> tuple[int, float]:
    """``"1024:3e-4"`` -> (1024, 0.0003); raises ValueError naming the setting."""
    try:
        batch, rate = text.split(":")
        batch_size, learning_rate = int(batch), float(rate)
    except ValueError:
        raise ValueError(f"--grid: {text!r} is not batch_size:learning_rate (e.g. 1024:3e-4)") from None
    if batch_size <= 0 or not learning_rate > 0:
        raise ValueError(f"--grid: {text!r} needs a positive batch size and learning rate")
    return batch_size, learning_rate


def run_config(dataset: str, setting: str, args):
    """The `Config` of one run: the preset, the setting's batch size and rate, the budget, validation every
    ``eval_pairs`` pairs."""
    from cml_tf.training.config import PRESETS, Config

    fields, k = DATASETS[dataset]
    batch_size, learning_rate = parse_setting(setting)
    fields = {
        **PRESETS["accurate"],
        **fields,
        "data_path": os.path.abspath(os.path.join(args.data_root, fields["data_path"])),
        "k": k,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "epochs": args.epochs,
        "max_train_seconds": max(args.budgets) * 60.0,
        "eval_every": max(1, round(args.eval_pairs / batch_size)),
        "seed": args.seed,
    }
    return Config(**fields)


def curve_rows(dataset: str, setting: str, k: int, metrics_rows: list[dict]) -> list[dict]:
    """curves.csv rows of one run from its metrics.csv rows (validation NDCG@k per validation)."""
    batch_size, learning_rate = parse_setting(setting)
    return [
        {
            "dataset": dataset,
            "setting": setting,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "step": int(r["step"]),
            "epoch": float(r["epoch"]),
            "train_seconds": float(r["train_seconds"]),
            "val_ndcg": float(r[f"ndcg@{k}"]),
            "k": k,
        }
        for r in metrics_rows
    ]


def best_within(curves, budgets_min: list[float]):
    """Per (dataset, setting): the best validation NDCG reached within each budget of training minutes (NaN where
    the first validation came later), and its training pairs/s over the run.

    Args:
        curves: a frame of `COLUMNS` rows.
        budgets_min: the budgets, in minutes.

    Returns:
        A frame indexed by (dataset, setting) with one column per budget (``"1 min"``...) and ``pairs/s``.
    """
    import numpy as np
    import pandas as pd

    rows = []
    for (dataset, setting), run in curves.groupby(["dataset", "setting"], sort=False):
        run = run.sort_values("step")
        row = {"dataset": dataset, "setting": setting}
        for b in budgets_min:
            within = run[run.train_seconds <= b * 60.0].val_ndcg
            row[f"{b:g} min"] = float(within.max()) if len(within) else np.nan
        last = run.iloc[-1]
        row["pairs/s"] = last.step * last.batch_size / last.train_seconds
        rows.append(row)
    return pd.DataFrame(rows).set_index(["dataset", "setting"])


def render(curves, budgets_min: list[float]) -> str:
    """time_to_accuracy.md: per data set, the best validation NDCG within each budget for every setting (the
    leader of each budget in bold), and the leaders."""
    import numpy as np

    table = best_within(curves, budgets_min)
    lines = [
        "# Time to accuracy: `--preset=accurate` by batch size and learning rate",
        "",
        "`python -m experiments.time_to_accuracy` (module docstring: what is run and how it is scored). Each cell is "
        "the best validation NDCG a setting reached within that much training time (validation excluded); bold: the "
        "best setting at that budget. pairs/s: training pairs per second of training over the whole run.",
    ]
    for dataset, sub in table.groupby(level="dataset", sort=False):
        k = int(curves[curves.dataset == dataset].k.iloc[0])
        sub = sub.droplevel("dataset")
        budgets = [c for c in sub.columns if c.endswith(" min")]
        leaders = {c: sub[c].idxmax() if sub[c].notna().any() else None for c in budgets}
        lines += ["", f"## {dataset} (validation NDCG@{k})", ""]
        lines += ["| batch:lr | " + " | ".join(budgets) + " | pairs/s |", "|:---|" + "---:|" * (len(budgets) + 1)]
        for setting, row in sub.iterrows():
            cells = []
            for c in budgets:
                text = "—" if np.isnan(row[c]) else f"{row[c]:.4f}"
                cells.append(f"**{text}**" if leaders[c] == setting else text)
            lines.append(f"| {setting} | " + " | ".join(cells) + f" | {row['pairs/s']:,.0f} |")
        lines += ["", "Leads: " + "; ".join(f"{c}: {leaders[c]}" for c in budgets if leaders[c] is not None) + "."]
    return "\n".join(lines) + "\n"


class Sweep:
    def __init__(self, args):
        self.args = args
        self.data: dict = {}

    def run_dir(self, dataset: str, setting: str) -> str:
        budget = f"{max(self.args.budgets):g}min"
        return os.path.join(self.args.runs_dir, f"{budget}-s{self.args.seed}", dataset, setting.replace(":", "-lr"))

    def load(self, dataset: str, config):
        if dataset not in self.data:
            from cml_tf.training.data import load_data

            self.data[dataset] = load_data(config, announce=False)
        return self.data[dataset]

    def execute(self) -> None:
        import logging

        from cml_tf import training
        from cml_tf.training.outputs import read_metrics_csv

        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        plan = [(d, s) for d in self.args.datasets for s in self.args.grid]
        done = [p for p in plan if os.path.exists(os.path.join(self.run_dir(*p), "results.json"))]
        per_run = max(self.args.budgets) * 60 * 1.25 + 20  # validations and start-up
        print(f"plan: {len(plan)} runs, {len(done)} finished already; ETA ~{_fmt(per_run * (len(plan) - len(done)))}")
        for d, s in plan:
            print(f"  {d:<10} {s:<10} {'done' if (d, s) in done else ''}")
        if self.args.dry_run:
            return
        started = time.perf_counter()
        curves = []
        for i, (dataset, setting) in enumerate(plan, 1):
            config = run_config(dataset, setting, self.args)
            run_dir = self.run_dir(dataset, setting)
            training.train(config, run_dir, data=self.load(dataset, config), verbose=0)
            rows = curve_rows(dataset, setting, config.k, read_metrics_csv(os.path.join(run_dir, "metrics.csv")))
            curves += rows
            last, best = rows[-1], max(r["val_ndcg"] for r in rows)
            print(
                f"[{i}/{len(plan)}] {dataset} {setting}: val ndcg@{config.k} best {best:.4f}"
                f" ({last['step']:,} steps, epoch {last['epoch']:.1f}, {last['train_seconds']:.0f} s) | elapsed "
                f"{_fmt(time.perf_counter() - started)}",
                flush=True,
            )
            self.write(curves)

    def write(self, new_rows: list[dict]) -> None:
        """Writes curves.csv (the runs of this sweep replace earlier rows of theirs) and time_to_accuracy.md."""
        import pandas as pd

        path = os.path.join(self.args.out_dir, "curves.csv")
        new = pd.DataFrame(new_rows, columns=COLUMNS)
        if os.path.exists(path):
            old = pd.read_csv(path)
            ran = set(zip(new.dataset, new.setting))
            old = old[[(d, s) not in ran for d, s in zip(old.dataset, old.setting)]]
            new = pd.concat([old, new], ignore_index=True) if len(old) else new
        os.makedirs(self.args.out_dir, exist_ok=True)
        new.to_csv(path + ".tmp", index=False)
        os.replace(path + ".tmp", path)
        report(self.args.out_dir, self.args.budgets)


def report(out_dir: str, budgets_min: list[float]) -> str:
    """Renders ``out_dir``/time_to_accuracy.md from its curves.csv and returns it."""
    import pandas as pd

    text = render(pd.read_csv(os.path.join(out_dir, "curves.csv")), budgets_min)
    path = os.path.join(out_dir, "time_to_accuracy.md")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
    return text


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m experiments.time_to_accuracy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    listed = lambda kind: lambda text: [kind(x) for x in text.split(",") if x]  # noqa: E731
    p.add_argument("--datasets", type=listed(str), default=list(DATASETS), help=", ".join(DATASETS))
    p.add_argument("--grid", type=listed(str), default=GRID, help="batch_size:learning_rate settings")
    p.add_argument("--budgets", type=listed(float), default=[1.0, 2.0, 3.0], help="training minutes to score at")
    p.add_argument("--epochs", type=float, default=1000.0, help="a cap on passes (the budget ends the run first)")
    p.add_argument("--eval_pairs", type=int, default=128_000, help="validate every this many training pairs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data_root", default=DATA)
    p.add_argument("--out_dir", default=OUT)
    p.add_argument("--runs_dir", default=RUNS)
    p.add_argument("--dry_run", action="store_true")
    p.add_argument("--report", action="store_true", help="only render time_to_accuracy.md from curves.csv")
    args = p.parse_args(argv)
    unknown = [d for d in args.datasets if d not in DATASETS]
    if unknown:
        p.error(f"--datasets: unknown {', '.join(unknown)}; expected {', '.join(DATASETS)}")
    try:
        for setting in args.grid:
            parse_setting(setting)
    except ValueError as e:
        p.error(str(e))
    if not args.grid or not args.budgets or min(args.budgets) <= 0:
        p.error("--grid and --budgets need at least one value, budgets positive")
    if args.eval_pairs <= 0:
        p.error("--eval_pairs must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report:
        if not os.path.exists(os.path.join(args.out_dir, "curves.csv")):
            print(f"no curves.csv in {args.out_dir}: run python -m experiments.time_to_accuracy first", file=sys.stderr)
            return 1
        print(report(args.out_dir, args.budgets))
        return 0
    if not args.dry_run:
        append_command(args.out_dir, "experiments.time_to_accuracy", argv)
    Sweep(args).execute()
    if not args.dry_run:
        print(report(args.out_dir, args.budgets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
