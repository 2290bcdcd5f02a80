"""The CML family on equal terms: CML (uniform, 2-stage), LRML, TransCF, AttCML and HLR, with baselines.

    python -m experiments.hlr_table                                   # ml-100k, 3 seeds (the committed table)
    python -m experiments.hlr_table --datasets=citeulike --seeds=0    # citeulike-t (see the README for its cost)
    python -m experiments.hlr_table --report                          # rewrite the tables from the finished runs

Protocol (the RecSys 2021 paper's, from its reference code deezer/recsys21-hlr, where it has one):

* data: ml-100k with ratings >= 4 as positives, 10-core (iteratively: users and items with >= 10 interactions,
  the reference's ``n_core``); citeulike-t as CollMetric shipped it (its loader has no count filter);
* split: ``--split=fo``: 20% of the interactions (at random) for test, 10% of the rest for validation, one split
  (``split_seed`` 0) shared by every model and seed;
* models: the reference's ml-20m configs (``configs/mvlens/10-core/*/fo_*.json``): d = 100, batch 1,000 pairs, one
  uniform negative, Adam, rows clipped to the unit ball, margin per model (`MODELS`), M = 20 memories, P = 50
  reference items; CML also with the default 2-stage sampler (this repository's, at the same settings); no GOR
  (the reference has none). The learning rate is one for all, ``--learning_rate`` = 5e-3: the reference's rates
  (2e-4 to 7.5e-4, `MODELS`, for up to 150k steps on ml-20m) leave every model below popularity at 10 epochs of
  ml-100k (CML-uniform test NDCG@10 0.11 against popularity's 0.17); 5e-3 was chosen on CML-uniform's validation
  NDCG@10 among 7.5e-4, 5e-3 and 2e-2 (0.123 at 5e-3, 0.098 at 2e-2). ``--learning_rate=0`` runs the reference's;
* equal training pairs (``--epochs`` passes over the training pairs, the same for every model), validation NDCG@10
  every ``--evals`` th of the run on ``--eval_users`` sampled users, the best validation checkpoint is the model that
  is tested (the model chosen on validation);
* metrics at k = 10 (NDCG, MRR as the reference computes it, MAP, recall, precision) and MMR, test mean ± std over
  ``--seeds``; each run's training time, pairs/s and the time of its full-ranking test evaluation;
* baselines: popularity, implicit's ALS and EASE^R (`experiments.baselines`), tuned on the same validation split.

Runs live in ``--out_dir`` (``runs/hlr_table/<dataset>/<method>/seed<s>``); a finished run is not trained again and
an interrupted one resumes, so the same command continues a stopped table. Results: ``results.csv`` (one row per
run), ``hlr_table.md``, ``command.txt`` and ``curves/<dataset>/<method>/seed<s>.csv`` (each run's metrics.csv: the
learning curves notebooks/07_models.ipynb draws) in ``--results_dir``. Flags are parsed with argparse (not absl) so that
this module can be imported beside `experiments.table2`, whose absl flags share names.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shlex
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = 10
DATASETS = {
    "ml-100k": (
        "movielens",
        "../shared/data/ml-100k",
        {"min_rating": 4.0, "min_user_interactions": 10, "min_item_users": 10, "iterative_core": True},
    ),
    # a small synthetic set: the notebook fixture (notebooks/make_hlr_fixture.py)
    "synthetic": ("synthetic", None, {"num_users": 150, "num_items": 200, "num_interactions": 4000}),
    # the citeulike loader takes no filter (its users.dat is the data set CollMetric used, as is)
    "citeulike": ("citeulike", "../shared/data/citeulike-t", {}),
}
#: method -> Config fields (beside `COMMON`): the reference's ml-20m configs (learning rate, margin)
MODELS = {
    "cml-uniform": {"model": "cml", "sampler": "uniform", "learning_rate": 7.5e-4, "margin": 0.5},
    "cml-2stage": {"model": "cml", "sampler": "2stage", "learning_rate": 7.5e-4, "margin": 0.5},
    "lrml": {"model": "lrml", "sampler": "uniform", "learning_rate": 2e-4, "margin": 0.2, "num_memories": 20},
    "transcf": {"model": "transcf", "sampler": "uniform", "learning_rate": 5e-4, "margin": 0.5},
    "attcml": {"model": "attcml", "sampler": "uniform", "learning_rate": 2e-4, "margin": 0.2, "max_num_prefs": 50},
    "hlr": {
        "model": "hlr",
        "sampler": "uniform",
        "learning_rate": 2e-4,
        "margin": 0.2,
        "max_num_prefs": 50,
        "num_memories": 20,
    },
}
COMMON = {
    "split": "fo",
    "split_seed": 0,
    "embedding_dim": 100,
    "batch_size": 1000,
    "num_negatives": 1,
    "geometry": "ball",
    "clip_norm": 1.0,
    "optimizer": "adam",
    "gor_weight": 0.0,
    "k": K,
}
BASELINES = ("popularity", "als", "ease")
METRICS = [f"ndcg@{K}", f"mrr@{K}", f"map@{K}", f"recall@{K}", f"precision@{K}", "mmr"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.hlr_table", description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="ml-100k", help=f"comma-separated, of {', '.join(DATASETS)}")
    p.add_argument("--methods", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--baselines", default=",".join(BASELINES), help="comma-separated (empty: none)")
    p.add_argument("--seeds", default="0,1,2", help="training seeds (the split is shared)")
    p.add_argument("--epochs", type=float, default=10.0, help="passes over the training pairs, for every model")
    p.add_argument(
        "--learning_rate",
        type=float,
        default=5e-3,
        help="one Adam learning rate for every model (0: each model's reference rate, see MODELS)",
    )
    p.add_argument("--evals", type=int, default=4, help="validations per run")
    p.add_argument("--eval_users", type=int, default=500, help="validation users sampled per validation")
    p.add_argument("--baseline_trials", type=int, default=10, help="random-search budget of ALS and EASE^R")
    p.add_argument("--out_dir", default="runs/hlr_table")
    p.add_argument("--results_dir", default=os.path.join(ROOT, "experiments", "results", "hlr_table"))
    p.add_argument("--report", action="store_true", help="only rewrite the tables from finished runs")
    args = p.parse_args(argv)
    args.datasets = [d for d in args.datasets.split(",") if d]
    args.methods = [m for m in args.methods.split(",") if m]
    args.baselines = [b for b in args.baselines.split(",") if b]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    for name, values, allowed in (
        ("datasets", args.datasets, DATASETS),
        ("methods", args.methods, MODELS),
        ("baselines", args.baselines, BASELINES),
    ):
        bad = [v for v in values if v not in allowed]
        if bad:
            p.error(f"--{name}: unknown {', '.join(bad)}; expected some of {', '.join(allowed)}")
    if args.epochs <= 0 or args.evals < 1:
        p.error("--epochs must be positive and --evals >= 1")
    args.argv = list(argv)
    return args


def run_config(args, dataset: str, method: str, seed: int, train_pairs: int):
    """The Config of one run: `COMMON`, the method's fields, equal pairs, ``evals`` validations."""
    from cml_tf.config import Config

    name, path, options = DATASETS[dataset]
    steps = int(np.ceil(args.epochs * train_pairs / COMMON["batch_size"]))
    fields = dict(MODELS[method])
    if args.learning_rate > 0:
        fields["learning_rate"] = args.learning_rate
    return Config(
        dataset=name,
        data_path=path,
        dataset_options=dict(options),
        **COMMON,
        **fields,
        max_steps=steps,
        eval_every=max(1, int(np.ceil(steps / args.evals))),
        eval_users=args.eval_users,
        seed=seed,
    )


def _fmt(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def run(args, log=print) -> list[dict]:
    """Runs every (dataset, method, seed) and baseline not finished yet; writes the outputs after each."""
    from cml_tf import datasets, training
    from experiments import baselines as B

    os.makedirs(args.results_dir, exist_ok=True)
    write_command(args)
    rows: list[dict] = []
    jobs = [(d, m, s) for d in args.datasets for m in args.methods for s in args.seeds]
    jobs += [(d, f"baseline:{b}", 0) for d in args.datasets for b in args.baselines]
    t_start, worked = time.perf_counter(), 0
    for dataset in args.datasets:
        name, path, options = DATASETS[dataset]
        interactions = datasets.load(name, path, **options)
        split = training.split_data(run_config(args, dataset, "cml-uniform", 0, 1), interactions)
        parts = split.summary()
        log(
            f"{dataset}: {interactions.n_users:,} users x {interactions.n_items:,} items, {interactions.nnz:,} pairs; "
            f"fo split: {parts['train_pairs']:,} / {parts['valid_pairs']:,} / {parts['test_pairs']:,}"
        )
        for method, seed in [(m, s) for m in args.methods for s in args.seeds] + [
            (f"baseline:{b}", 0) for b in args.baselines
        ]:
            is_baseline = method.startswith("baseline:")
            label = method.split(":", 1)[1] if is_baseline else method
            run_dir = os.path.join(args.out_dir, dataset, label, "baseline" if is_baseline else f"seed{seed}")
            skipped = os.path.exists(os.path.join(run_dir, "results.json"))
            t0 = time.perf_counter()
            if is_baseline:
                results = B.run_baseline(
                    label,
                    split,
                    run_dir,
                    config={"dataset": name, "dataset_options": options, "split": "fo", "split_seed": 0},
                    k=K,
                    trials=args.baseline_trials,
                    factors=COMMON["embedding_dim"],
                    eval_users=args.eval_users,
                    seed=seed,
                )
            else:
                config = run_config(args, dataset, method, seed, split.train.nnz)
                results = training.train(config, run_dir, data=(interactions, split), verbose=0)
            rows.append(result_row(dataset, label, seed, results, run_dir, is_baseline))
            write_outputs(args, rows)
            worked += 0 if skipped else 1
            done = len(rows)
            elapsed = time.perf_counter() - t_start
            eta = _fmt(elapsed / worked * (len(jobs) - done)) if worked else "?"
            log(
                f"[{done}/{len(jobs)}] {dataset} {label} seed {seed}: ndcg@{K} {results.get(f'ndcg@{K}', np.nan):.4f}"
                f", mrr@{K} {results.get(f'mrr@{K}', np.nan):.4f}, mmr {results.get('mmr', np.nan):.1f} "
                f"({'done before' if skipped else f'{time.perf_counter() - t0:.0f}s'}) | elapsed {_fmt(elapsed)}, "
                f"ETA {eta}"
            )
            sys.stdout.flush()
    return rows


def result_row(dataset, method, seed, results, run_dir, is_baseline) -> dict:
    row = {"dataset": dataset, "method": method, "seed": seed, "run": run_dir}
    row.update({m: results.get(m, np.nan) for m in METRICS})
    row["best_step"] = results.get("best_step", np.nan)
    row["train_seconds"] = results.get("train_seconds", np.nan)
    row["pairs_per_sec"] = results.get("pairs_per_sec", np.nan)
    row["test_eval_seconds"] = results.get("test_eval_seconds", np.nan)
    row["kind"] = "baseline" if is_baseline else "model"
    return row


def collect(args) -> list[dict]:
    """The rows of every finished run under ``out_dir`` (for --report)."""
    rows = []
    for dataset in args.datasets:
        for method in args.methods:
            for seed in args.seeds:
                path = os.path.join(args.out_dir, dataset, method, f"seed{seed}", "results.json")
                if os.path.exists(path):
                    with open(path, encoding="utf-8") as f:
                        rows.append(result_row(dataset, method, seed, json.load(f), os.path.dirname(path), False))
        for name in args.baselines:
            path = os.path.join(args.out_dir, dataset, name, "baseline", "results.json")
            if os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    rows.append(result_row(dataset, name, 0, json.load(f), os.path.dirname(path), True))
    return rows


def _finite_mean(values) -> float:
    """The mean of the finite values (NaN when none: baselines have no pairs/s)."""
    finite = [float(v) for v in values if np.isfinite(float(v))]
    return float(np.mean(finite)) if finite else float("nan")


def render_markdown(rows: list[dict]) -> str:
    """One table per data set: test metrics mean ± std over seeds, then time (training s, pairs/s, test eval s)."""
    order = [*MODELS, *BASELINES]
    lines = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        lines += [
            f"### {dataset}",
            "",
            "| method | seeds | " + " | ".join(METRICS) + " | train s | pairs/s | test eval s |",
            "|---|---:|" + "---:|" * (len(METRICS) + 3),
        ]
        mine = [r for r in rows if r["dataset"] == dataset]
        for method in sorted(dict.fromkeys(r["method"] for r in mine), key=lambda m: order.index(m)):
            runs = [r for r in mine if r["method"] == method]
            cells = []
            for m in METRICS:
                values = np.array([float(r[m]) for r in runs])
                if m == "mmr":
                    cells.append(f"{values.mean():.1f}" + (f" ± {values.std():.1f}" if len(values) > 1 else ""))
                else:
                    cells.append(f"{values.mean():.4f}" + (f" ± {values.std():.4f}" if len(values) > 1 else ""))
            times = [_finite_mean([r[c] for r in runs]) for c in ("train_seconds", "pairs_per_sec")]
            eval_s = _finite_mean([r["test_eval_seconds"] for r in runs])
            pps = "–" if not np.isfinite(times[1]) else f"{times[1]:,.0f}"
            ev = "–" if not np.isfinite(eval_s) else f"{eval_s:.1f}"
            lines.append(f"| {method} | {len(runs)} | " + " | ".join(cells) + f" | {times[0]:.0f} | {pps} | {ev} |")
        lines.append("")
    return "\n".join(lines)


def write_outputs(args, rows: list[dict]) -> None:
    from cml_tf.io import write_text_atomic

    if not rows:
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(os.path.join(args.results_dir, "results.csv"), buf.getvalue())
    head = (
        f"# The CML family at k = {K} (test, mean ± std over seeds; the model chosen on validation)\n\n"
        f"Command: `{shlex.join(['python', '-m', 'experiments.hlr_table', *args.argv])}` (see command.txt)\n\n"
    )
    write_text_atomic(os.path.join(args.results_dir, "hlr_table.md"), head + render_markdown(rows))
    # the learning curves (validation metrics per period) travel with the table: the runs themselves do not
    for row in rows:
        source = os.path.join(row["run"], "metrics.csv")
        if row["kind"] == "model" and os.path.exists(source):
            target = os.path.join(args.results_dir, "curves", row["dataset"], row["method"], f"seed{row['seed']}.csv")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(source, encoding="utf-8") as f:
                write_text_atomic(target, f.read())


def write_command(args) -> None:
    from cml_tf.io import write_text_atomic
    from experiments.table2 import git_commit

    settings = {k: v for k, v in vars(args).items() if k != "argv"}
    text = (
        f"command: {shlex.join(['python', '-m', 'experiments.hlr_table', *args.argv])}\n"
        f"cwd: {os.getcwd()}\n"
        f"git commit: {git_commit()}\n"
        f"started: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n"
        f"settings: {json.dumps(settings, sort_keys=True, default=str)}\n"
    )
    write_text_atomic(os.path.join(args.results_dir, "command.txt"), text)


def cli(argv: list[str]) -> int:
    args = parse_args(argv)
    from cml_tf import console

    console.setup_logging(False)
    console.import_tensorflow(False)
    if args.report:
        rows = collect(args)
        write_outputs(args, rows)
        print(render_markdown(rows))
        return 0
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
