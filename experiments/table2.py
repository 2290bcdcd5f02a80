"""The paper's Table 2 (Tran et al., SIGIR 2019): CML with uniform / popular / 2-stage negative sampling.

Grid: uniform sampling at batch sizes 4096, 1024 and 256, popular and 2-stage sampling at 256, each with
|N_ij| in {1, 2, 5}, each cell on the 4 per-user cross-validation folds (``Config(split="kfold", fold=f,
num_folds=4)``); plus the baselines of `experiments.baselines` (popularity, ALS, BPR, EASE^R) on the same folds.

Usage::

    python -m experiments.table2 --quick                         # citeulike-t, whole grid, about an hour on 2 cores
    python -m experiments.table2 --dataset=citeulike --data_path=../shared/data/citeulike-t   # paper settings
    python -m experiments.table2 --quick --samplers=2stage --num_negatives=5 --folds=0 --baselines=
    python -m experiments.table2 --dataset=synthetic --num_users=300 --num_items=500 --max_steps=50

Every run goes through `cml_tf.training.train` into ``<out_dir>/<sampler>-b<batch>-n<N>/fold<f>`` (baselines:
``<out_dir>/baselines/<name>/fold<f>``); a finished run (results.json present) is not trained again, an interrupted
one resumes from its last checkpoint, so re-running the same command continues the grid. The data set is loaded
once and split once per fold. Outputs in ``<results_dir>``, rewritten (atomically) after every run:

    results.csv    one row per (cell or baseline) x fold: dataset, method, sampler, batch_size, num_negatives, fold,
                   map@50, ndcg@50, recall@50, mmr, train_seconds, pairs_per_sec, steps, then run (its directory
                   relative to out_dir), params and trials (baselines' chosen hyper-parameters and search budget)
    table2.md      the table (see `experiments.tables`), table2.tex the same in LaTeX
    command.txt    the command line, the git commit and the resolved settings (appended: a run of part of the
                   grid replaces only its rows of results.csv)

Each run directory also gets ``recommendations.npz``: ``users`` (a seeded sample of up to ``--rec_users`` test
users), ``items`` [users, rec_k] (their top-k, train + valid items masked, as the test evaluation ranks),
``item_train_count`` [n_items] (for the popularity-bias notebook).

``--quick``: citeulike-t (``../shared/data/citeulike-t``), every CML run sees the same number of training pairs
(``QUICK_PAIRS_PER_RUN``; steps = pairs / batch size) with ``QUICK_EVALS_PER_RUN`` validations on
``QUICK_EVAL_USERS`` sampled users, learning rate ``QUICK_LEARNING_RATE``; any flag given explicitly wins.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __package__ in (None, ""):  # run as a script: python experiments/table2.py
    sys.path.insert(0, ROOT)

from absl import app, flags  # noqa: E402

from cml_tf.cli import data_flags  # noqa: E402,F401  (defines --dataset, --data_path and the data set options)

# ------------------------------------------------------------------------------------------------ the grid
UNIFORM_BATCH_SIZES = (4096, 1024, 256)
SAMPLED_BATCH_SIZE = 256  # popular and 2-stage
#: the grid's rows: name -> the Config fields of its runs. "2stage" is cml_tf's default 2-stage sampler (capped
#: inverse density; at |N_ij| > 1 one hinge per negative, averaged); "2stage-min" the same sampler with the paper's
#: hinge (the min over the |N_ij| negatives; the default before experiments/negatives_study.py, and the "2stage" row
#: of the earlier runs); "2stage-paper" the paper's uncapped weighting with its hinge; "dns" the hardest of 8
#: uniform draws per negative; "softmax" `--preset=accurate`'s loss (the sampled softmax over the 2-stage
#: sampler's C candidates, τ = 0.5, log q corrected) and "in_batch" the same loss over the batch's positives. The
#: softmax rows read no |N_ij|: they run once, in the first |N_ij| column.
SAMPLER_FIELDS: dict[str, dict] = {
    "uniform": {"sampler": "uniform"},
    "popular": {"sampler": "popular"},
    "2stage": {"sampler": "2stage"},
    "2stage-min": {"sampler": "2stage", "hinge": "min"},
    "2stage-paper": {"sampler": "2stage", "stage2_weight_cap": None, "hinge": "min"},
    "dns": {"sampler": "dns"},
    "softmax": {"sampler": "2stage", "loss": "softmax", "temperature": 0.5},
    "in_batch": {"sampler": "in_batch", "loss": "softmax", "temperature": 0.5},
}
SAMPLERS = tuple(SAMPLER_FIELDS)
#: the rows a plain run grids (--samplers): the earlier rows' "2stage-min" cells are the "2stage" cells of runs
#: made before the default hinge changed (experiments/results/citeulike/command.txt)
DEFAULT_SAMPLERS = ("uniform", "popular", "2stage", "2stage-paper", "dns", "softmax", "in_batch")
N_FREE = ("softmax", "in_batch")
NUM_NEGATIVES = (1, 2, 5)
FOLDS = (0, 1, 2, 3)
NUM_FOLDS = 4
K = 50

# ------------------------------------------------------------------------------------------------ --quick
# Measured on the 2-core machine (citeulike-t, fold 0, 89k training pairs): uniform ~50-110k pairs/s, popular
# ~35-60k, 2-stage ~22-40k (|N_ij| = 5 .. 1), plus ~8 s per run of set-up and test evaluation. 1.2M pairs per run
# (~13 epochs) gives ~8 min per fold for the 15 cells, ~33 min for 4 folds, + ~2-3 min of baselines per fold
# (ALS ~5 s and BPR ~7 s per 100 iterations per fit, 8 trials + the final fit each).
QUICK_DATASET = "citeulike"
QUICK_DATA_PATH = os.path.join(ROOT, "..", "shared", "data", "citeulike-t")
QUICK_PAIRS_PER_RUN = 1_200_000
QUICK_EVALS_PER_RUN = 5
QUICK_EVAL_USERS = 1000
QUICK_LEARNING_RATE = (
    None  # the Config default: the paper's Adam lr 1e-4 (with the sphere's small init, see cml_tf.training.config)
)
QUICK_BASELINE_TRIALS = 8

REC_USERS = 1000
REC_K = 50

FLAGS = flags.FLAGS


def _ints(name, default, help_text):
    flags.DEFINE_list(name, [str(x) for x in default], help_text)


flags.DEFINE_string("out_dir", None, "Run directories (default experiments/runs/<dataset>).")
flags.DEFINE_string(
    "results_dir", None, "results.csv, table2.md/.tex, command.txt (default experiments/results/<dataset>)."
)
_ints("folds", FOLDS, "Folds to run (test fold indices).")
flags.DEFINE_integer("num_folds", NUM_FOLDS, "K of the per-user K-fold split.")
flags.DEFINE_bool("quick", False, "The ~1 hour citeulike-t preset (see the module docstring); explicit flags win.")
flags.DEFINE_list(
    "samplers",
    list(DEFAULT_SAMPLERS),
    f"Rows of the grid, some of {', '.join(SAMPLERS)}: uniform, popular, 2stage (the default: capped stage 2, "
    "at |N_ij| > 1 the mean hinge), 2stage-min (the same with the paper's min hinge), 2stage-paper (uncapped, "
    "the paper's weighting and hinge), dns, softmax (--preset=accurate's loss), in_batch (softmax over the batch).",
)
_ints("num_negatives", NUM_NEGATIVES, "|N_ij| values.")
_ints("uniform_batch_sizes", UNIFORM_BATCH_SIZES, "Batch sizes of the uniform sampler.")
flags.DEFINE_integer("batch_size", SAMPLED_BATCH_SIZE, "Batch size of the popular and 2-stage samplers.")
flags.DEFINE_float(
    "epochs",
    None,
    "Passes over the training pairs (default the Config's; ignored with --max_steps or --pairs_per_run).",
)
flags.DEFINE_integer("max_steps", None, "Training steps of every run (overrides --pairs_per_run and --epochs).")
flags.DEFINE_integer(
    "pairs_per_run",
    None,
    f"Training pairs per run; steps = ceil(pairs / batch size) (--quick: {QUICK_PAIRS_PER_RUN:,}).",
)
flags.DEFINE_integer(
    "evals_per_run", None, f"Validations per run: eval_every = ceil(steps / this) (--quick: {QUICK_EVALS_PER_RUN})."
)
flags.DEFINE_integer("eval_every", None, "Validation every N steps (overrides --evals_per_run).")
flags.DEFINE_integer("eval_users", None, f"Validation users sampled (--quick: {QUICK_EVAL_USERS}; default all).")
flags.DEFINE_float("learning_rate", None, f"Learning rate (--quick: {QUICK_LEARNING_RATE}; default the Config's).")
flags.DEFINE_integer("embedding_dim", None, "d (default the Config's, 128).")
flags.DEFINE_integer("num_candidates", None, "C of the 2-stage sampler (default the Config's, 2000).")
flags.DEFINE_integer(
    "early_stopping_patience", None, "Evaluations without improvement before stopping (default the Config's: never)."
)
flags.DEFINE_integer("seed", 0, "Seed of the splits, the models and the baseline search.")
flags.DEFINE_list(
    "baselines",
    ["popularity", "als", "bpr", "ease"],
    "Baselines (empty: none): popularity, als, bpr, ease (EASE^R: dense items x items, O(items^3) per trial).",
)
flags.DEFINE_integer(
    "baseline_trials",
    None,
    f"Hyper-parameter configurations tried per baseline and fold (--quick: {QUICK_BASELINE_TRIALS}; default 8).",
)
flags.DEFINE_integer("baseline_factors", 128, "Latent factors of ALS and BPR.")
flags.DEFINE_integer("num_threads", 2, "implicit's threads for ALS / BPR.")
flags.DEFINE_integer("rec_users", REC_USERS, "Test users whose top-k is saved in recommendations.npz (0: none).")
flags.DEFINE_integer("rec_k", REC_K, "Length of the saved top-k lists.")
flags.DEFINE_integer("verbose", 0, "Keras progress during training: 0 silent, 1 bar, 2 one line per evaluation.")
flags.DEFINE_bool("dry_run", False, "Print the planned runs and exit.")


@dataclasses.dataclass(frozen=True)
class Cell:
    sampler: str
    batch_size: int
    num_negatives: int

    @property
    def name(self) -> str:
        return f"{self.sampler}-b{self.batch_size}-n{self.num_negatives}"


@dataclasses.dataclass
class Settings:
    """Everything the runner needs, resolved from the flags (see `settings_from_flags`)."""

    dataset: str
    data_path: str | None
    dataset_options: dict
    cache_dir: str | None
    use_cache: bool
    out_dir: str
    results_dir: str
    folds: list[int]
    num_folds: int
    cells: list[Cell]
    baselines: list[str]
    baseline_trials: int
    baseline_factors: int
    num_threads: int
    max_steps: int | None
    pairs_per_run: int | None
    epochs: float | None
    evals_per_run: int | None
    eval_every: int | None
    eval_users: int | None
    learning_rate: float | None
    embedding_dim: int | None
    num_candidates: int | None
    early_stopping_patience: int | None
    seed: int
    rec_users: int
    rec_k: int
    verbose: int
    argv: list[str] = dataclasses.field(default_factory=list)


def make_cells(samplers, num_negatives, uniform_batch_sizes, batch_size) -> list[Cell]:
    """The grid in table order: uniform at each batch size (largest first), then popular, then 2-stage."""
    unknown = [s for s in samplers if s not in SAMPLERS]
    if unknown:
        raise ValueError(f"--samplers: unknown {', '.join(unknown)}; expected some of {', '.join(SAMPLERS)}")
    cells = []
    for sampler in SAMPLERS:
        if sampler not in samplers:
            continue
        sizes = sorted(set(uniform_batch_sizes), reverse=True) if sampler == "uniform" else [batch_size]
        for b in sizes:
            for n in num_negatives[:1] if sampler in N_FREE else num_negatives:
                cells.append(Cell(sampler, int(b), int(n)))
    return cells


def settings_from_flags(argv: list[str], fv=FLAGS) -> Settings:
    """Resolves --quick and the defaults; explicit flags always win."""

    def pick(name, quick_value, default=None):
        if fv[name].present:
            return fv[name].value
        if fv.quick:
            return quick_value
        return default if fv[name].value is None else fv[name].value

    if fv.quick and not fv["dataset"].present:
        fv.dataset = QUICK_DATASET
        if not fv["data_path"].present:
            fv.data_path = os.path.abspath(QUICK_DATA_PATH)
    name, options = data_flags.options_from_flags(fv)
    data_path = os.path.abspath(fv.data_path) if fv.data_path else None
    out_dir = fv.out_dir or os.path.join(ROOT, "experiments", "runs", name)
    results_dir = fv.results_dir or os.path.join(ROOT, "experiments", "results", name)
    folds = [int(f) for f in fv.folds]
    bad = [f for f in folds if not 0 <= f < fv.num_folds]
    if bad:
        raise ValueError(f"--folds: {bad} not in [0, {fv.num_folds})")
    baselines = [b.strip() for b in fv.baselines if b.strip()]
    from experiments.baselines import BASELINES, DEFAULT_TRIALS

    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ValueError(f"--baselines: unknown {', '.join(unknown)}; expected some of {', '.join(BASELINES)}")
    return Settings(
        dataset=name,
        data_path=data_path,
        dataset_options=options,
        cache_dir=fv.cache_dir,
        use_cache=bool(fv.use_cache),
        out_dir=out_dir,
        results_dir=results_dir,
        folds=folds,
        num_folds=fv.num_folds,
        cells=make_cells(
            [s.strip() for s in fv.samplers],
            [int(n) for n in fv.num_negatives],
            [int(b) for b in fv.uniform_batch_sizes],
            fv.batch_size,
        ),
        baselines=baselines,
        baseline_trials=pick("baseline_trials", QUICK_BASELINE_TRIALS, DEFAULT_TRIALS),
        baseline_factors=fv.baseline_factors,
        num_threads=fv.num_threads,
        max_steps=fv.max_steps,
        pairs_per_run=pick("pairs_per_run", QUICK_PAIRS_PER_RUN),
        epochs=fv.epochs,
        evals_per_run=pick("evals_per_run", QUICK_EVALS_PER_RUN),
        eval_every=fv.eval_every,
        eval_users=pick("eval_users", QUICK_EVAL_USERS),
        learning_rate=pick("learning_rate", QUICK_LEARNING_RATE),
        embedding_dim=fv.embedding_dim,
        num_candidates=fv.num_candidates,
        early_stopping_patience=fv.early_stopping_patience,
        seed=fv.seed,
        rec_users=fv.rec_users,
        rec_k=fv.rec_k,
        verbose=fv.verbose,
        argv=list(argv[1:]),
    )


# ------------------------------------------------------------------------------------------------ configs
def run_steps(settings: Settings, batch_size: int, train_pairs: int) -> int:
    """Training steps of a run: --max_steps, else pairs_per_run / batch, else epochs (the Config's rule)."""
    from cml_tf.training.config import Config

    if settings.max_steps:
        return settings.max_steps
    if settings.pairs_per_run:
        return max(1, math.ceil(settings.pairs_per_run / batch_size))
    epochs = settings.epochs if settings.epochs is not None else Config.epochs
    return max(1, math.ceil(epochs * train_pairs / batch_size))


def cell_config(settings: Settings, cell: Cell, fold: int, train_pairs: int):
    """The `Config` of one CML run."""
    from cml_tf.training.config import Config

    values = {
        "dataset": settings.dataset,
        "data_path": settings.data_path,
        "dataset_options": dict(settings.dataset_options),
        "split": "kfold",
        "num_folds": settings.num_folds,
        "fold": fold,
        **SAMPLER_FIELDS[cell.sampler],
        "batch_size": cell.batch_size,
        "num_negatives": cell.num_negatives,
        "seed": settings.seed,
        "split_seed": settings.seed,
        "k": K,
    }
    steps = run_steps(settings, cell.batch_size, train_pairs)
    if settings.max_steps or settings.pairs_per_run:
        values["max_steps"] = steps
    elif settings.epochs is not None:
        values["epochs"] = settings.epochs
    if settings.eval_every:
        values["eval_every"] = settings.eval_every
    elif settings.evals_per_run:
        values["eval_every"] = max(1, math.ceil(steps / settings.evals_per_run))
    for name in ("eval_users", "learning_rate", "embedding_dim", "num_candidates", "early_stopping_patience"):
        value = getattr(settings, name)
        if value is not None:
            values[name] = value
    return Config(**values)


def data_config(settings: Settings, fold: int) -> dict:
    """What identifies a fold's data, for the baselines' config.json."""
    return {
        "dataset": settings.dataset,
        "data_path": settings.data_path,
        "dataset_options": settings.dataset_options,
        "split": "kfold",
        "num_folds": settings.num_folds,
        "fold": fold,
        "valid_fraction": 0.1,
        "split_seed": settings.seed,
    }


# ------------------------------------------------------------------------------------------------ outputs
RESULT_COLUMNS = [
    "dataset",
    "method",
    "sampler",
    "batch_size",
    "num_negatives",
    "fold",
    f"map@{K}",
    f"ndcg@{K}",
    f"recall@{K}",
    "mmr",
    "train_seconds",
    "pairs_per_sec",
    "steps",
    "run",
    "params",
    "trials",
]


def result_row(settings: Settings, method: str, cell: Cell | None, fold: int, results: dict, run: str) -> dict:
    row = {
        "dataset": settings.dataset,
        "method": method,
        "sampler": cell.sampler if cell else "",
        "batch_size": cell.batch_size if cell else "",
        "num_negatives": cell.num_negatives if cell else "",
        "fold": fold,
    }
    for m in (f"map@{K}", f"ndcg@{K}", f"recall@{K}", "mmr", "train_seconds", "pairs_per_sec", "steps"):
        row[m] = results.get(m, float("nan"))
    row["run"] = run
    row["params"] = json.dumps(results["params"], sort_keys=True) if "params" in results else ""
    row["trials"] = results.get("budget", "")
    return row


def _row_id(row: dict) -> tuple:
    """What a results row is a result of: (method, sampler, batch size, |N_ij|, fold), as comparable strings."""

    def norm(value) -> str:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return str(value or "")
        return "" if math.isnan(number) else f"{number:g}"

    return tuple(norm(row.get(c)) for c in ("method", "sampler", "batch_size", "num_negatives", "fold"))


def earlier_rows(settings: Settings) -> list[dict]:
    """The rows of an existing results.csv: a run of part of the grid replaces only the rows it produces."""
    import pandas as pd

    path = os.path.join(settings.results_dir, "results.csv")
    if not os.path.exists(path):
        return []
    return pd.read_csv(path).to_dict("records")


def write_outputs(settings: Settings, rows: list[dict], earlier: list[dict] = ()) -> None:
    """results.csv, table2.md and table2.tex (atomically): ``rows``, and the ``earlier`` rows they do not replace."""
    import pandas as pd

    from cml_tf.io import write_text_atomic
    from experiments import tables

    produced = {_row_id(r) for r in rows}
    rows = [r for r in earlier if _row_id(r) not in produced] + list(rows)
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    write_text_atomic(os.path.join(settings.results_dir, "results.csv"), df.to_csv(index=False, lineterminator="\n"))
    if df.empty:
        return
    title = f"Table 2 — {settings.dataset}"
    write_text_atomic(os.path.join(settings.results_dir, "table2.md"), tables.render_markdown(df, K, title=title))
    write_text_atomic(os.path.join(settings.results_dir, "table2.tex"), tables.render_latex(df, K))


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
        return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def write_command(settings: Settings) -> None:
    from cml_tf.io import write_text_atomic

    resolved = {k: v for k, v in dataclasses.asdict(settings).items() if k not in ("argv", "cells")}
    resolved["cells"] = [c.name for c in settings.cells]
    text = (
        f"command: {shlex.join(['python', '-m', 'experiments.table2', *settings.argv])}\n"
        f"cwd: {os.getcwd()}\n"
        f"git commit: {git_commit()}\n"
        f"started: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n"
        f"settings: {json.dumps(resolved, sort_keys=True, default=str)}\n"
    )
    path = os.path.join(settings.results_dir, "command.txt")
    if os.path.exists(path):  # results.csv keeps the earlier rows, so command.txt keeps the commands behind them
        with open(path, encoding="utf-8") as f:
            text = f.read().rstrip("\n") + "\n\n# then:\n" + text
    write_text_atomic(path, text)


def distance_scores(run_dir: str):
    """users -> -||u - v||^2 from a CML run's saved embeddings (its geometry)."""
    import numpy as np

    from cml_tf.evaluation.scores import distance_scores as scores

    u = np.load(os.path.join(run_dir, "embeddings", "user_embeddings.npy"))
    v = np.load(os.path.join(run_dir, "embeddings", "item_embeddings.npy"))
    return scores(u, v)


# ------------------------------------------------------------------------------------------------ runner
def _fmt(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def run(settings: Settings, *, log=print) -> list[dict]:
    """Runs the grid (skipping finished runs) and writes the results; returns the results.csv rows."""
    from cml_tf import training
    from cml_tf.data import loaders
    from cml_tf.evaluation.toplists import sample_users, write_recommendations
    from cml_tf.training.config import Config
    from cml_tf.training.data import split_data
    from experiments import baselines as B

    os.makedirs(settings.results_dir, exist_ok=True)
    earlier = earlier_rows(settings)
    write_command(settings)
    interactions = loaders.load(
        settings.dataset,
        settings.data_path,
        cache_dir=settings.cache_dir,
        use_cache=settings.use_cache,
        **settings.dataset_options,
    )
    log(
        f"{settings.dataset}: {interactions.n_users:,} users x {interactions.n_items:,} items, "
        f"{interactions.nnz:,} pairs; {len(settings.cells)} cells + {len(settings.baselines)} baselines x "
        f"{len(settings.folds)} folds -> {settings.out_dir}"
    )
    total = (len(settings.cells) + len(settings.baselines)) * len(settings.folds)
    rows: list[dict] = []
    t_start = time.perf_counter()
    worked = 0  # runs that did work (trained or evaluated), for the ETA
    done = 0

    def progress(label: str, results: dict, seconds: float, skipped: bool):
        nonlocal done, worked
        done += 1
        worked += 0 if skipped else 1
        elapsed = time.perf_counter() - t_start
        eta = elapsed / worked * (total - done) if worked else float("nan")
        status = "done before" if skipped else f"{seconds:.0f}s"
        log(
            f"[{done}/{total}] {label}: ndcg@{K}={results.get(f'ndcg@{K}', float('nan')):.4f} "
            f"map@{K}={results.get(f'map@{K}', float('nan')):.4f} mmr={results.get('mmr', float('nan')):.1f} "
            f"({status}) | elapsed {_fmt(elapsed)}, ETA {_fmt(eta) if worked else '?'}"
        )
        sys.stdout.flush()

    for fold in settings.folds:
        base = Config(split="kfold", num_folds=settings.num_folds, fold=fold, split_seed=settings.seed)
        split = split_data(base, interactions)  # depends only on (data, num_folds, fold, split_seed)
        rec_users = sample_users(split.test, settings.rec_users, settings.seed) if settings.rec_users else None

        for name in settings.baselines:
            run_dir = os.path.join(settings.out_dir, "baselines", name, f"fold{fold}")
            skipped = os.path.exists(os.path.join(run_dir, "results.json"))
            rec_path = os.path.join(run_dir, "recommendations.npz")

            def save_recs(fitted, rec_path=rec_path, split=split, users=rec_users):
                if users is not None:
                    write_recommendations(rec_path, B.score_function(fitted), split, users, settings.rec_k)

            t0 = time.perf_counter()
            results = B.run_baseline(
                name,
                split,
                run_dir,
                config=data_config(settings, fold),
                k=K,
                trials=settings.baseline_trials,
                factors=settings.baseline_factors,
                eval_users=settings.eval_users,
                seed=settings.seed,
                num_threads=settings.num_threads,
                on_fitted=save_recs,
            )
            rows.append(result_row(settings, name, None, fold, results, os.path.relpath(run_dir, settings.out_dir)))
            write_outputs(settings, rows, earlier)
            progress(f"{name} fold{fold}", results, time.perf_counter() - t0, skipped)

        for cell in settings.cells:
            config = cell_config(settings, cell, fold, split.train.nnz)
            run_dir = os.path.join(settings.out_dir, cell.name, f"fold{fold}")
            skipped = os.path.exists(os.path.join(run_dir, "results.json"))
            t0 = time.perf_counter()
            results = training.train(config, run_dir, data=(interactions, split), verbose=settings.verbose)
            rec_path = os.path.join(run_dir, "recommendations.npz")
            # training writes its own (default) recommendations.npz; this one follows --rec_users / --rec_k
            if rec_users is not None and (not skipped or not os.path.exists(rec_path)):
                write_recommendations(rec_path, distance_scores(run_dir), split, rec_users, settings.rec_k)
            rows.append(result_row(settings, "cml", cell, fold, results, os.path.relpath(run_dir, settings.out_dir)))
            write_outputs(settings, rows, earlier)
            progress(f"{cell.name} fold{fold}", results, time.perf_counter() - t0, skipped)

    log(
        f"wrote {os.path.join(settings.results_dir, 'results.csv')} and table2.md / table2.tex "
        f"({_fmt(time.perf_counter() - t_start)})"
    )
    return rows


def plan(settings: Settings) -> list[str]:
    lines = []
    for fold in settings.folds:
        lines += [f"fold{fold} baseline {b} ({settings.baseline_trials} trials)" for b in settings.baselines]
        for cell in settings.cells:
            steps = run_steps(settings, cell.batch_size, 0) if (settings.max_steps or settings.pairs_per_run) else "?"
            lines.append(f"fold{fold} {cell.name}: steps={steps}")
    return lines


_COMMAND_ARGV: list[str] | None = None  # set by `cli`; else sys.argv


def main(argv):
    try:
        settings = settings_from_flags(_COMMAND_ARGV or sys.argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if FLAGS.dry_run:
        print("\n".join(plan(settings)))
        return 0
    run(settings)
    return 0


def cli(argv: list[str]) -> int:
    """Parses ``argv`` (argv[0] is the program name) and runs; for tests and notebooks (re-parses the flags)."""
    global _COMMAND_ARGV
    FLAGS.unparse_flags()
    _COMMAND_ARGV = list(argv)
    try:
        return main(FLAGS(argv))
    finally:
        _COMMAND_ARGV = None


if __name__ == "__main__":
    app.run(main)
