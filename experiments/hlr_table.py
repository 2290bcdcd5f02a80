"""The CML family on equal terms: CML (uniform, 2-stage), LRML, TransCF, AttCML and HLR, with baselines.

    python -m experiments.hlr_table                                   # ml-100k, 3 seeds (the committed table)
    python -m experiments.hlr_table --datasets=citeulike --lr_from=ml-100k --test_users=1000 --eval_users=250
    python -m experiments.hlr_table --report                          # rewrite the tables from the finished runs

Protocol (the RecSys 2021 paper's, from its reference code deezer/recsys21-hlr, where it has one):

* data: ml-100k with ratings >= 4 as positives, 10-core (iteratively: users and items with >= 10 interactions,
  the reference's ``n_core``); citeulike-t as CollMetric shipped it (its loader has no count filter);
* split: ``--split=fo``: 20% of the interactions (at random) for test, 10% of the rest for validation, one split
  (``split_seed`` 0) shared by every model and seed;
* models: the reference's ml-20m configs (``configs/mvlens/10-core/*/fo_*.json``): d = 100, batch 1,000 pairs, one
  uniform negative, Adam, rows clipped to the unit ball, margin per model (`MODELS`), M = 20 memories, P = 50
  reference items; CML also with the default 2-stage sampler (this repository's, at the same settings); two
  controls: CML at the relational models' margin (``cml-margin0.2``) and HLR at CML's (``hlr-margin0.5``); no GOR
  (the reference has none);
* learning rate, tuned on validation per model: the reference's rates (2e-4 to 7.5e-4, `MODELS`) are for up to
  150k steps on ml-20m and leave every model below popularity at this budget, so the first seed of every
  (data set, model) runs at each of ``--learning_rates`` and the rate with the best validation NDCG@10 is the one
  the other seeds run at (``--learning_rates=0``: each model's reference rate). ``--lr_from=D`` skips the screen
  and takes, for every model, the rate chosen on data set D (whose screen must have run into the same
  ``--out_dir``): for data sets where a screen of the slow models costs too much;
* equal training pairs (``--epochs`` passes over the training pairs, the same for every model), validation NDCG@10
  every ``--evals`` th of the run on ``--eval_users`` sampled users, the best validation checkpoint is the model that
  is tested (the model chosen on validation);
* metrics at k = 10 (NDCG, MRR, the reference's MRR (``mrr_sum``: every hit's reciprocal rank added, what the
  paper's MRR@10 reports), MAP, recall, precision) and MMR, test mean ± std over ``--seeds``, on every test user
  or on ``--test_users`` of them (a sample seeded by the split's seed: the same users for every model, seed and
  baseline); each run's training time, pairs/s and the time of its full-ranking test evaluation;
* baselines: popularity, implicit's ALS and EASE^R (`experiments.baselines`), tuned on the same validation split.

Runs live in ``--out_dir`` (``runs/hlr_table/<dataset>/<method>/lr<rate>/seed<s>``); a finished run is not trained
again and an interrupted one resumes, so the same command continues a stopped table. Results in ``--results_dir``:
``results.csv`` (one row per run at the chosen rate), ``lr_screen.csv`` (every rate tried: validation NDCG@10 of
the first seed), ``hlr_table.md``, ``command.txt`` and ``curves/<dataset>/<method>/seed<s>.csv`` (each chosen run's
metrics.csv: the learning curves notebooks/07_models.ipynb draws). Flags are parsed with argparse (not absl) so that
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
    # controls: CML at the margin the reference gives LRML, AttCML and HLR on MovieLens (0.2), HLR at CML's (0.5)
    "cml-margin0.2": {"model": "cml", "sampler": "uniform", "learning_rate": 7.5e-4, "margin": 0.2},
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
MODELS["hlr-margin0.5"] = {**MODELS["hlr"], "margin": 0.5}
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


def method_rank(method: str) -> int:
    """Where a method sorts in the tables: `MODELS`, then `BASELINES`, then any other (an earlier table's)."""
    order = [*MODELS, *BASELINES]
    return order.index(method) if method in order else len(order)


METRICS = [f"ndcg@{K}", f"mrr@{K}", f"mrr_sum@{K}", f"map@{K}", f"recall@{K}", f"precision@{K}", "mmr"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.hlr_table", description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="ml-100k", help=f"comma-separated, of {', '.join(DATASETS)}")
    p.add_argument("--methods", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--baselines", default=",".join(BASELINES), help="comma-separated (empty: none)")
    p.add_argument("--seeds", default="0,1,2", help="training seeds (the split is shared)")
    p.add_argument("--epochs", type=float, default=10.0, help="passes over the training pairs, for every model")
    p.add_argument(
        "--learning_rates",
        default="2.5e-4,1e-3,5e-3,2e-2",
        help="Adam rates screened per model on the first seed's validation (0: each model's reference rate)",
    )
    p.add_argument("--lr_from", default=None, help="take every model's rate chosen on this data set (no screen)")
    p.add_argument("--evals", type=int, default=4, help="validations per run")
    p.add_argument("--eval_users", type=int, default=500, help="validation users sampled per validation")
    p.add_argument("--test_users", type=int, default=None, help="test users sampled (same for all; default all)")
    p.add_argument("--baseline_trials", type=int, default=10, help="random-search budget of ALS and EASE^R")
    p.add_argument("--out_dir", default="runs/hlr_table")
    p.add_argument("--results_dir", default=os.path.join(ROOT, "experiments", "results", "hlr_table"))
    p.add_argument("--report", action="store_true", help="only rewrite the tables from finished runs")
    args = p.parse_args(argv)
    args.datasets = [d for d in args.datasets.split(",") if d]
    args.methods = [m for m in args.methods.split(",") if m]
    args.baselines = [b for b in args.baselines.split(",") if b]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    try:
        args.learning_rates = [float(r) for r in args.learning_rates.split(",") if r]
    except ValueError:
        p.error(f"--learning_rates: expected comma-separated numbers, got {args.learning_rates!r}")
    if not args.learning_rates or any(r < 0 for r in args.learning_rates):
        p.error("--learning_rates: give at least one rate, none negative")
    if args.lr_from is not None and args.lr_from not in DATASETS:
        p.error(f"--lr_from: unknown data set {args.lr_from!r}; expected one of {', '.join(DATASETS)}")
    if not args.seeds:
        p.error("--seeds: give at least one seed")
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
    if args.test_users is not None and args.test_users < 1:
        p.error("--test_users must be positive")
    args.argv = list(argv)
    return args


def run_config(args, dataset: str, method: str, seed: int, train_pairs: int, learning_rate: float = 0.0):
    """The Config of one run: `COMMON`, the method's fields, equal pairs, ``evals`` validations; the method's
    reference rate unless ``learning_rate`` > 0."""
    from cml_tf.training.config import Config

    name, path, options = DATASETS[dataset]
    steps = int(np.ceil(args.epochs * train_pairs / COMMON["batch_size"]))
    fields = dict(MODELS[method])
    if learning_rate > 0:
        fields["learning_rate"] = learning_rate
    return Config(
        dataset=name,
        data_path=path,
        dataset_options=dict(options),
        **COMMON,
        **fields,
        max_steps=steps,
        eval_every=max(1, int(np.ceil(steps / args.evals))),
        eval_users=args.eval_users,
        test_users=getattr(args, "test_users", None),
        seed=seed,
    )


def _fmt(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def run_dir_of(args, dataset: str, method: str, seed: int, rate: float) -> str:
    """Where one run lives: ``<out_dir>/<dataset>/<method>/lr<rate>/seed<seed>`` (``lr0``: the reference rate)."""
    return os.path.join(args.out_dir, dataset, method, f"lr{rate:g}", f"seed{seed}")


def chosen_rate(args, dataset: str, method: str) -> float | None:
    """The rate of ``--learning_rates`` whose first-seed run has the best validation NDCG@10 on ``dataset`` (ties:
    the first), among those that finished (`run` finishes them all before it chooses; a control may have run at
    fewer rates); None when none has."""
    best, best_score = None, -np.inf
    for rate in args.learning_rates:
        path = os.path.join(run_dir_of(args, dataset, method, args.seeds[0], rate), "results.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                score = json.load(f).get("valid", {}).get(f"ndcg@{K}", -np.inf)
            if best is None or score > best_score:
                best, best_score = rate, score
    return best


def run(args, log=print) -> list[dict]:
    """Runs every (dataset, method, rate, seed) and baseline not finished yet; writes the outputs after each.

    Per (dataset, method): the first seed at every rate of ``--learning_rates`` (the screen; or the rate chosen on
    ``--lr_from``), then the other seeds at the rate chosen on validation.
    """
    from cml_tf import training
    from cml_tf.data import loaders
    from cml_tf.training.data import split_data
    from experiments import baselines as B

    os.makedirs(args.results_dir, exist_ok=True)
    write_command(args)
    screen = 1 if args.lr_from else len(args.learning_rates)
    total = len(args.datasets) * (len(args.methods) * (screen + len(args.seeds) - 1) + len(args.baselines))
    t_start, worked, done = time.perf_counter(), 0, 0

    def report(dataset, label, seed, rate, results, skipped, t0):
        nonlocal worked, done
        write_outputs(args, collect(args))
        worked += 0 if skipped else 1
        done += 1
        elapsed = time.perf_counter() - t_start
        eta = _fmt(elapsed / worked * (total - done)) if worked else "?"
        lr = "" if rate is None else f" lr {rate:g}"
        log(
            f"[{done}/{total}] {dataset} {label}{lr} seed {seed}: ndcg@{K} {results.get(f'ndcg@{K}', np.nan):.4f} "
            f"(valid {results.get('valid', {}).get(f'ndcg@{K}', np.nan):.4f}), mrr@{K} "
            f"{results.get(f'mrr@{K}', np.nan):.4f}, mmr {results.get('mmr', np.nan):.1f} "
            f"({'done before' if skipped else f'{time.perf_counter() - t0:.0f}s'}) | elapsed {_fmt(elapsed)}, "
            f"ETA {eta}"
        )
        sys.stdout.flush()

    def train_one(dataset, data, method, seed, rate):
        run_dir = run_dir_of(args, dataset, method, seed, rate)
        skipped = os.path.exists(os.path.join(run_dir, "results.json"))
        t0 = time.perf_counter()
        config = run_config(args, dataset, method, seed, data[1].train.nnz, rate)
        results = training.train(config, run_dir, data=data, verbose=0)
        report(dataset, method, seed, rate, results, skipped, t0)

    for dataset in args.datasets:
        name, path, options = DATASETS[dataset]
        interactions = loaders.load(name, path, **options)
        split = split_data(run_config(args, dataset, "cml-uniform", 0, 1), interactions)
        parts = split.summary()
        log(
            f"{dataset}: {interactions.n_users:,} users x {interactions.n_items:,} items, {interactions.nnz:,} pairs; "
            f"fo split: {parts['train_pairs']:,} / {parts['valid_pairs']:,} / {parts['test_pairs']:,}"
        )

        # the screens of every method first (the rates --lr_from needs), then the other seeds
        rates = {}
        for method in args.methods:
            if args.lr_from:
                rates[method] = chosen_rate(args, args.lr_from, method)
                if rates[method] is None:
                    raise SystemExit(
                        f"error: --lr_from={args.lr_from}: the {method} screen on {args.lr_from} has not finished in "
                        f"{args.out_dir}; run python -m experiments.hlr_table --datasets={args.lr_from} first"
                    )
            else:
                for rate in args.learning_rates:
                    train_one(dataset, (interactions, split), method, args.seeds[0], rate)
                rates[method] = chosen_rate(args, dataset, method)
        for method in args.methods:
            for seed in args.seeds[0 if args.lr_from else 1 :]:
                train_one(dataset, (interactions, split), method, seed, rates[method])
        for label in args.baselines:
            run_dir = os.path.join(args.out_dir, dataset, label, "baseline")
            skipped = os.path.exists(os.path.join(run_dir, "results.json"))
            t0 = time.perf_counter()
            results = B.run_baseline(
                label,
                split,
                run_dir,
                config={"dataset": name, "dataset_options": options, "split": "fo", "split_seed": 0},
                k=K,
                trials=args.baseline_trials,
                factors=COMMON["embedding_dim"],
                eval_users=args.eval_users,
                test_users=args.test_users,
                test_seed=0,  # COMMON's split_seed, as the models' runs sample their test users
                seed=0,
            )
            report(dataset, label, 0, None, results, skipped, t0)
    return collect(args)


def result_row(dataset, method, seed, results, run_dir, is_baseline, rate=None) -> dict:
    row = {"dataset": dataset, "method": method, "seed": seed, "lr": rate if rate is not None else np.nan}
    row["run"] = run_dir
    row.update({m: results.get(m, np.nan) for m in METRICS})
    row["valid_ndcg"] = results.get("valid", {}).get(f"ndcg@{K}", np.nan)
    row["best_step"] = results.get("best_step", np.nan)
    row["train_seconds"] = results.get("train_seconds", np.nan)
    row["pairs_per_sec"] = results.get("pairs_per_sec", np.nan)
    row["test_eval_seconds"] = results.get("test_eval_seconds", np.nan)
    row["test_users"] = results.get("test_users", np.nan)
    row["kind"] = "baseline" if is_baseline else "model"
    return row


def _read(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def collect(args, screen: bool = False) -> list[dict]:
    """The rows of the finished runs under ``out_dir``: every seed at the chosen rate and the baselines, or with
    ``screen`` the first seed at every rate tried (the learning-rate screen)."""
    rows = []
    for dataset in args.datasets:
        for method in args.methods:
            rate = chosen_rate(args, args.lr_from or dataset, method)
            if screen:
                if args.lr_from:
                    continue
                runs = [(args.seeds[0], r) for r in args.learning_rates]
            else:
                runs = [] if rate is None else [(s, rate) for s in args.seeds]
            for seed, r in runs:
                run_dir = run_dir_of(args, dataset, method, seed, r)
                results = _read(os.path.join(run_dir, "results.json"))
                if results is not None:
                    row = result_row(dataset, method, seed, results, run_dir, False, r)
                    if screen:
                        row["chosen"] = r == rate
                    rows.append(row)
        if screen:
            continue
        for name in args.baselines:
            run_dir = os.path.join(args.out_dir, dataset, name, "baseline")
            results = _read(os.path.join(run_dir, "results.json"))
            if results is not None:
                rows.append(result_row(dataset, name, 0, results, run_dir, True))
    return rows


def _finite_mean(values) -> float:
    """The mean of the finite values (NaN when none: baselines have no pairs/s)."""
    finite = [float(v) for v in values if np.isfinite(float(v))]
    return float(np.mean(finite)) if finite else float("nan")


def _cell(values, digits: int) -> str:
    values = np.asarray(values, float)
    return f"{values.mean():.{digits}f}" + (f" ± {values.std():.{digits}f}" if len(values) > 1 else "")


def render_markdown(rows: list[dict], screen: list[dict] = ()) -> str:
    """One table per data set: test metrics mean ± std over seeds, the rate, then time (training s, pairs/s, test
    eval s); then the learning-rate screen (validation NDCG@10 of the first seed at every rate)."""
    lines = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == dataset]
        users = sorted({int(float(r["test_users"])) for r in mine if np.isfinite(float(r["test_users"]))})
        lines += [
            f"### {dataset}",
            "",
            f"Test users: {', '.join(f'{u:,}' for u in users)}.",
            "",
            "| method | lr | seeds | " + " | ".join(METRICS) + " | train s | pairs/s | test eval s |",
            "|---|---:|---:|" + "---:|" * (len(METRICS) + 3),
        ]
        for method in sorted(dict.fromkeys(r["method"] for r in mine), key=method_rank):
            runs = [r for r in mine if r["method"] == method]
            cells = [_cell([float(r[m]) for r in runs], 1 if m == "mmr" else 4) for m in METRICS]
            times = [_finite_mean([r[c] for r in runs]) for c in ("train_seconds", "pairs_per_sec")]
            eval_s = _finite_mean([r["test_eval_seconds"] for r in runs])
            rate = _finite_mean([r["lr"] for r in runs])
            lr = "–" if not np.isfinite(rate) else f"{rate:g}"
            pps = "–" if not np.isfinite(times[1]) else f"{times[1]:,.0f}"
            ev = "–" if not np.isfinite(eval_s) else f"{eval_s:.1f}"
            lines.append(
                f"| {method} | {lr} | {len(runs)} | " + " | ".join(cells) + f" | {times[0]:.0f} | {pps} | {ev} |"
            )
        lines.append("")
        tried = [r for r in screen if r["dataset"] == dataset]
        if tried:
            rates = sorted({float(r["lr"]) for r in tried})
            lines += [
                f"Learning-rate screen on {dataset} (validation NDCG@{K} of seed {tried[0]['seed']}; **chosen**):",
                "",
                "| method | " + " | ".join(f"{r:g}" for r in rates) + " |",
                "|---|" + "---:|" * len(rates),
            ]
            for method in sorted(dict.fromkeys(r["method"] for r in tried), key=method_rank):
                cells = []
                for rate in rates:
                    hit = [r for r in tried if r["method"] == method and float(r["lr"]) == rate]
                    if not hit:
                        cells.append("")
                        continue
                    text = f"{float(hit[0]['valid_ndcg']):.4f}"
                    cells.append(f"**{text}**" if str(hit[0]["chosen"]) == "True" else text)
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def _merge_csv(path: str, rows: list[dict], args) -> list[dict]:
    """``rows`` plus the rows of ``path`` (earlier invocations') of the other (data set, method) pairs: each
    invocation rewrites the rows of its own data sets x methods and baselines and keeps the rest of the table."""
    mine = set(args.methods) | set(args.baselines)
    kept = []
    if os.path.exists(path):
        with open(path, encoding="utf-8", newline="") as f:
            kept = [r for r in csv.DictReader(f) if not (r["dataset"] in args.datasets and r["method"] in mine)]
    merged = kept + rows
    datasets = list(dict.fromkeys(r["dataset"] for r in merged))
    return sorted(merged, key=lambda r: (datasets.index(r["dataset"]), method_rank(r["method"]), int(r["seed"])))


def _write_csv(path: str, rows: list[dict]) -> None:
    from cml_tf.io import write_text_atomic

    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def write_outputs(args, rows: list[dict]) -> None:
    """results.csv, lr_screen.csv and hlr_table.md (this invocation's data sets beside the earlier ones'), and the
    chosen runs' learning curves."""
    from cml_tf.io import write_text_atomic

    results_csv = os.path.join(args.results_dir, "results.csv")
    screen_csv = os.path.join(args.results_dir, "lr_screen.csv")
    all_rows = _merge_csv(results_csv, rows, args)
    screen = _merge_csv(screen_csv, collect(args, screen=True), args)
    if not all_rows:
        return
    _write_csv(results_csv, all_rows)
    if screen:
        _write_csv(screen_csv, screen)
    head = (
        f"# The CML family at k = {K} (test, mean ± std over seeds; the model chosen on validation)\n\n"
        "Commands: see command.txt\n\n"
    )
    write_text_atomic(os.path.join(args.results_dir, "hlr_table.md"), head + render_markdown(all_rows, screen))
    # the learning curves (validation metrics per period) travel with the table: the runs themselves do not
    for row in rows:
        source = os.path.join(row["run"], "metrics.csv")
        if row["kind"] == "model" and os.path.exists(source):
            target = os.path.join(args.results_dir, "curves", row["dataset"], row["method"], f"seed{row['seed']}.csv")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(source, encoding="utf-8") as f:
                write_text_atomic(target, f.read())


def write_command(args) -> None:
    """Adds this invocation to command.txt (the table is the union of its invocations)."""
    from experiments.table2 import git_commit

    settings = {k: v for k, v in vars(args).items() if k != "argv"}
    text = (
        f"command: {shlex.join(['python', '-m', 'experiments.hlr_table', *args.argv])}\n"
        f"cwd: {os.getcwd()}\n"
        f"git commit: {git_commit()}\n"
        f"started: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n"
        f"settings: {json.dumps(settings, sort_keys=True, default=str)}\n\n"
    )
    with open(os.path.join(args.results_dir, "command.txt"), "a", encoding="utf-8") as f:
        f.write(text)


def cli(argv: list[str]) -> int:
    args = parse_args(argv)
    from cml_tf.cli import console

    console.setup_logging(False)
    console.import_tensorflow(False)
    if args.report:
        os.makedirs(args.results_dir, exist_ok=True)
        write_outputs(args, collect(args))
        with open(os.path.join(args.results_dir, "hlr_table.md"), encoding="utf-8") as f:
            print(f.read())
        return 0
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
