"""One training run, end to end: data -> split -> tf.data -> `CML.fit` with callbacks -> evaluation -> run dir.

`train(config, model_dir)` is what `python -m cml_tf.train` calls after parsing flags, and what the experiment
runners call directly. The run directory holds::

    config.json      the resolved `Config`, whole
    metrics.csv      one row per validation evaluation: step, epoch, loss, hinge, gor, <metric>@k..., mmr,
                     pairs_per_sec (over the steps since the previous row), train_seconds (cumulative)
    checkpoints/     TensorFlow checkpoints of model + optimizer at every evaluation (resume point)
    best/            the checkpoint with the best validation NDCG@k
    tensorboard/     TensorBoard logs
    embeddings/      user_embeddings.npy, item_embeddings.npy (best model, in its geometry), user_ids.npy,
                     item_ids.npy
    recommendations.npz  top-k of a seeded sample of up to 1,000 test users (best model, train + valid masked):
                     users, items, item_train_count (the notebooks read it)
    results.json     test metrics of the best model, train_seconds, best_step, validation metrics

Every file is written atomically. Running the same command again resumes from the last checkpoint (the batch
stream is a pure function of the step, so the resumed run sees the batches the uninterrupted one would have) and
says so; a finished run (results.json present) is not trained again, and says so with its results.

Everything that can be checked is checked before the run directory is touched: the config, then the data (the
batch must fit the training pairs; ``num_candidates`` larger than the catalog is lowered to the catalog, with a
notice, and saved as used). A run that stops before its first checkpoint (a bad value found late, a non-finite
loss, Ctrl-C) removes what it wrote, so the corrected command starts afresh; a directory whose run never
checkpointed is no run, and a different config there is not refused. Training stops at the first non-finite loss,
naming the step.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import logging
import math
import os
import shutil
import sys
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from cml_tf import datasets, distribute
from cml_tf.config import Config
from cml_tf.evaluation import Evaluator, model_scores, sample_users, write_recommendations
from cml_tf.features import initialise_items_from_features
from cml_tf.interactions import Interactions
from cml_tf.io import save_npy_atomic, write_json_atomic, write_text_atomic
from cml_tf.models import MODELS, MetricModel
from cml_tf.models.base import FIRST_NONFINITE_STEP
from cml_tf.optimizers import make_optimizer
from cml_tf.pipeline import SamplerSpec, TrainingStream
from cml_tf.splits import Split, make_split

log = logging.getLogger("cml_tf")


#: test users (a seeded sample) whose top-k list every run saves in recommendations.npz
RECOMMENDATION_USERS = 1000


class RunError(RuntimeError):
    """A run directory that cannot be used as asked (e.g. it holds a different config)."""


class TooLittleData(ValueError):
    """The data (after the loader's filters and the split) cannot feed the run as configured."""


class NonFiniteLoss(RunError):
    """The training loss became NaN or infinite; ``step`` is the first step whose loss was not finite."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


# --------------------------------------------------------------------------------------------------- data
def load_data(config: Config, **load_kwargs) -> tuple[Interactions, Split]:
    """Loads the data set named by the config and splits it as the config says.

    Args:
        config: the run's config.
        **load_kwargs: passed to `cml_tf.datasets.load` (``cache_dir``, ``use_cache``).
    """
    interactions = datasets.load(config.dataset, config.data_path, **load_kwargs, **config.dataset_options)
    return interactions, split_data(config, interactions)


def split_data(config: Config, interactions: Interactions) -> Split:
    """The config's split of the interactions (seeded by ``split_seed``), validated."""
    split_seed = config.resolved().split_seed
    if config.split == "kfold":
        split = make_split(
            interactions.matrix,
            "kfold",
            num_folds=config.num_folds,
            fold=config.fold,
            valid_fraction=config.valid_fraction,
            seed=split_seed,
        )
    elif config.split == "fo":
        split = make_split(
            interactions.matrix,
            "fo",
            test_fraction=config.test_fraction,
            valid_fraction=config.valid_fraction,
            seed=split_seed,
        )
    else:
        split = make_split(interactions.matrix, "original", seed=split_seed)
    split.validate()
    return split


def item_features(config: Config, interactions: Interactions):
    """[n_items, F] sparse item features for CML+F, or None."""
    if config.features is None:
        return None
    if config.features == "tags":
        from cml_tf.datasets.citeulike import load_tag_features

        return load_tag_features(config.data_path, interactions.n_items, min_count=config.feature_min_count)
    if config.features == "genres":
        # MovieLens u.item's 19 genre flags (cml_tf.side_info), aligned to the interactions' items
        return datasets.load_side_info(config.dataset, config.data_path, interactions).item_groups
    raise ValueError(f"--features: unknown features {config.features!r}")


def fit_to_data(config: Config, split: Split) -> Config:
    """The config adjusted to the data, or TooLittleData naming the flag that cannot hold.

    ``num_candidates`` (2-stage) above the number of drawable items (the catalog; with ``popularity_smoothing=0``
    the items seen in training) is lowered to that number, with a one-line notice: C = catalog is "every item".
    ``batch_size`` above the training pairs and ``num_negatives`` not below the catalog are errors.
    """
    n_users, n_items = split.train.shape
    pairs = int(split.train.nnz)
    where = f"the data has {n_users:,} users x {n_items:,} items after its filters"
    if config.batch_size > pairs:
        raise TooLittleData(
            f"--batch_size={config.batch_size} exceeds the {pairs:,} training pairs ({where}); "
            f"use --batch_size={pairs} or less"
        )
    if config.num_negatives >= n_items:
        raise TooLittleData(f"--num_negatives={config.num_negatives} must be below the {n_items:,} items ({where})")
    if config.sampler == "2stage":
        drawable = n_items
        if config.popularity_smoothing == 0 and config.beta > 0:
            drawable = int(np.count_nonzero(np.diff(split.train.tocsc().indptr)))
        if config.num_candidates > drawable:
            what = "items" if drawable == n_items else "items with a training interaction (--popularity_smoothing=0)"
            log.warning(
                "--num_candidates=%d exceeds the %s %s: using --num_candidates=%d",
                config.num_candidates,
                f"{drawable:,}",
                what,
                drawable,
            )
            config = dataclasses.replace(config, num_candidates=drawable)
        if config.num_negatives > config.num_candidates:
            raise TooLittleData(
                f"--num_negatives={config.num_negatives} exceeds the {config.num_candidates:,} candidates "
                f"the data allows ({where})"
            )
    return config


# --------------------------------------------------------------------------------------------------- model
def build_model(
    config: Config, n_users: int, n_items: int, features=None, steps_per_execution: int = 1, train=None
) -> MetricModel:
    """The compiled model (``config.model``) and its optimizer for a config (call under the strategy's scope).

    Args:
        config: the run's config.
        n_users, n_items: table sizes.
        features: CML+F item features or None.
        steps_per_execution: training steps per compiled call.
        train: [n_users, n_items] training CSR: the neighbourhoods of TransCF, the reference items of AttCML and
            HLR (required by those models).
    """
    ball = config.geometry == "ball"
    # The lazy optimizers clip the rows a sparse gradient touched. Terms over whole tables (CML+F's feature loss,
    # the covariance loss) make the gradients dense, which takes Keras' dense path: then clip with the constraint.
    dense_gradients = not config.sparse_updates or features is not None or config.cov_loss_weight > 0
    options = config.model_options()
    if config.model == "transcf":
        options = {
            "neighbour_weight": options["transcf_neighbour_weight"],
            "distance_weight": options["transcf_distance_weight"],
        }
    if config.model != "cml":
        options["train"] = train
    model = MODELS[config.model](
        n_users,
        n_items,
        embedding_dim=config.embedding_dim,
        geometry=config.geometry,
        margin=config.margin,
        num_negatives=config.num_negatives,
        stage2_weight_cap=config.stage2_weight_cap,
        stage2_cutoff=config.stage2_cutoff,
        stage2_refresh_every=config.stage2_refresh_every,
        gor_weight=config.gor_weight or 0.0,
        use_rank_weight=config.use_rank_weight,
        cov_loss_weight=config.cov_loss_weight,
        init_stddev=config.init_stddev,
        dense_constraint=ball and dense_gradients,
        item_features=features,
        feature_l2_reg=config.feature_l2_reg,
        feature_hidden_dim=config.feature_hidden_dim,
        feature_dropout=config.feature_dropout,
        feature_scale=config.feature_scale,
        clip_norm=config.clip_norm,
        seed=config.seed,
        **options,
    )
    optimizer = make_optimizer(
        config.optimizer,
        config.learning_rate,
        sparse=config.sparse_updates,
        max_row_norm=config.clip_norm if ball else None,
    )
    model.compile(optimizer=optimizer, steps_per_execution=steps_per_execution)
    optimizer.build(model.trainable_variables)
    return model


def read_metrics_csv(path: str) -> list[dict]:
    """Rows of a metrics.csv as dicts of floats (empty list if absent)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8", newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def write_metrics_csv(path: str, rows: list[dict]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (int(v) if k == "step" else v) for k, v in row.items()})
    write_text_atomic(path, buf.getvalue())


#: what a run writes into its directory (removed by --overwrite, and when a run stops before its first checkpoint)
RUN_FILES = (
    "checkpoints",
    "best",
    "tensorboard",
    "embeddings",
    "metrics.csv",
    "results.json",
    "recommendations.npz",
    "config.json",
)


def run_started(model_dir: str) -> bool:
    """Whether ``model_dir`` holds a run that got somewhere: a checkpoint or results (not just a config.json)."""
    return os.path.exists(os.path.join(model_dir, "results.json")) or bool(
        tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    )


def _remove_run_files(model_dir: str) -> None:
    for name in RUN_FILES:
        p = os.path.join(model_dir, name)
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.exists(p):
            os.unlink(p)


def _prepare_run_dir(config: Config, model_dir: str, overwrite: bool) -> None:
    """Writes config.json; refuses a different config where a run has started (a checkpoint or results)."""
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, "config.json")
    started = run_started(model_dir)
    if os.path.exists(path) and started and not overwrite:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        current = json.loads(json.dumps(config.to_dict()))
        # a field added since the run was saved reads as its default (a CML run from before --model is a cml run)
        defaults = json.loads(json.dumps(Config().to_dict()))
        saved = {**{k: v for k, v in defaults.items() if k not in saved}, **saved}
        # where the data lives does not change a run: a moved checkout may resume it
        diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k) and k != "data_path")
        if diff:
            raise RunError(
                f"--model_dir={model_dir} holds a run with a different config (differs in: {', '.join(diff)}); "
                "use another --model_dir, or --overwrite to start afresh"
            )
    elif overwrite or not started:
        # a directory without a checkpoint holds no run (e.g. one stopped by an error): start it afresh
        _remove_run_files(model_dir)
    write_json_atomic(path, config.to_dict())


def evaluate_model(evaluator, model: MetricModel) -> dict:
    """The evaluator's metrics of a model: CML's embeddings by one matmul per batch (sharded when distributed),
    a relational model's scores in chunks of users x items (`Evaluator.evaluate_model`)."""
    if model.relational:
        return evaluator.evaluate_model(model)
    return evaluator.evaluate(*model.embeddings())


# --------------------------------------------------------------------------------------------------- callbacks
class EvaluationCheckpoint(keras.callbacks.Callback):
    """At the end of every evaluation period: validation metrics, a metrics.csv row, the resume checkpoint and,
    when validation NDCG@k improves, the best checkpoint. Adds ``val_<metric>`` to the logs (for EarlyStopping
    and TensorBoard)."""

    def __init__(self, *, evaluator, config, model_dir, checkpoint, manager, best_manager, rows, pairs_per_epoch):
        super().__init__()
        self.evaluator = evaluator
        self.config = config
        self.model_dir = model_dir
        self.checkpoint = checkpoint
        self.manager = manager
        self.best_manager = best_manager
        self.rows = rows
        self.pairs_per_epoch = pairs_per_epoch
        self.monitor = f"ndcg@{config.k}"
        self.best = max((r.get(self.monitor, -np.inf) for r in rows), default=-np.inf)
        self.train_seconds = rows[-1]["train_seconds"] if rows else 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()
        self._step0 = int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        if logs is not None:
            step = int(self.model.optimizer.iterations.numpy())
            bad_step = int(logs.get(FIRST_NONFINITE_STEP, 0))
            if bad_step > 0:
                saved = self.manager.latest_checkpoint
                kept = f"; the last checkpoint (step {int(saved.rsplit('-', 1)[1])}) is kept" if saved else ""
                raise NonFiniteLoss(
                    f"the training loss is not finite (NaN or infinite) at step {bad_step}: training stopped"
                    f"{kept}; lower --learning_rate={self.config.learning_rate:g} or check the data",
                    bad_step,
                )
            elapsed = time.perf_counter() - self._t0
            logs["pairs/s"] = (step - self._step0) * self.config.batch_size / max(elapsed, 1e-9)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs.pop(FIRST_NONFINITE_STEP, None)  # a stop signal (0 here), not a curve for TensorBoard
        seconds = time.perf_counter() - self._t0
        step = int(self.model.optimizer.iterations.numpy())
        self.train_seconds += seconds
        row = {
            "step": step,
            "epoch": step * self.config.batch_size / self.pairs_per_epoch,
            "loss": float(logs.get("loss", np.nan)),
            "hinge": float(logs.get("hinge", np.nan)),
            "gor": float(logs.get("gor", np.nan)),
        }
        if self.evaluator is not None:
            metrics = evaluate_model(self.evaluator, self.model)
            row.update({k: float(v) for k, v in metrics.items() if k != "users"})
            for k, v in metrics.items():
                if k != "users":
                    logs[f"val_{k}"] = float(v)
        row["pairs_per_sec"] = (step - self._step0) * self.config.batch_size / max(seconds, 1e-9)
        logs["pairs/s"] = row["pairs_per_sec"]
        row["train_seconds"] = self.train_seconds
        self.rows.append(row)
        write_metrics_csv(os.path.join(self.model_dir, "metrics.csv"), self.rows)
        value = row.get(self.monitor, -np.inf)
        if self.evaluator is None or value > self.best:
            self.best = value
            self.best_manager.save(checkpoint_number=step)
        self.manager.save(checkpoint_number=step)


class Progress(keras.callbacks.Callback):
    """What a run prints on stdout while it trains, in the terms of the flags.

    Keras counts "epochs" of ``fit``, which here are validation periods of ``--eval_every`` steps, not passes over
    the data (``--epochs``). This names them as periods, with their steps and the epochs (passes) they reach::

        period 3/8 (steps 2001-3000, epoch 4.1 of 20): loss 0.4121, val ndcg@50 0.0712, map@50 0.0301, 35,112 pairs/s

    ``mode`` 1 draws a progress bar over each period's steps (for a terminal) before that line; 2 prints only the
    line (for a log file: no control characters).
    """

    def __init__(self, mode, *, total_steps, eval_every, batch_size, pairs_per_epoch, epochs, k):
        super().__init__()
        self.mode = mode
        self.total_steps = total_steps
        self.eval_every = eval_every
        self.batch_size = batch_size
        self.pairs_per_epoch = pairs_per_epoch
        self.num_periods = math.ceil(total_steps / eval_every)
        self.epochs = epochs if epochs is not None else total_steps * batch_size / pairs_per_epoch
        self.k = k
        self._bar = None

    def _epoch_at(self, step: int) -> float:
        return step * self.batch_size / self.pairs_per_epoch

    def period_label(self, epoch: int) -> str:
        first = epoch * self.eval_every
        last = min(first + self.eval_every, self.total_steps)
        return (
            f"period {epoch + 1}/{self.num_periods} (steps {first + 1}-{last}, "
            f"epoch {self._epoch_at(last):.3g} of {self.epochs:.3g})"
        )

    def on_epoch_begin(self, epoch, logs=None):
        self._first = epoch * self.eval_every
        if self.mode == 1:
            print(self.period_label(epoch), flush=True)
            target = min(self._first + self.eval_every, self.total_steps) - self._first
            self._bar = keras.utils.Progbar(target, stateful_metrics=["loss", "pairs/s"])

    def on_train_batch_end(self, batch, logs=None):
        if self._bar is not None and logs is not None:
            done = int(self.model.optimizer.iterations.numpy()) - self._first
            shown = [(name, float(logs[name])) for name in ("loss", "pairs/s") if name in logs]
            self._bar.update(done, values=shown)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        parts = [f"loss {float(logs.get('loss', np.nan)):.4f}"]
        names = [f"ndcg@{self.k}", f"map@{self.k}", f"recall@{self.k}", "mmr"]
        validation = [
            f"{name} {logs['val_' + name]:{'.1f' if name == 'mmr' else '.4f'}}"
            for name in names
            if "val_" + name in logs
        ]
        if validation:
            parts.append("val " + ", ".join(validation))
        if "pairs/s" in logs:
            parts.append(f"{float(logs['pairs/s']):,.0f} pairs/s")
        self._bar = None
        print(f"{self.period_label(epoch)}: {', '.join(parts)}", flush=True)


def summary_line(results: dict, k: int) -> str:
    """``ndcg@50 0.0712, map@50 0.0301, recall@50 0.1410, mmr 12.3 (best step 960)`` from a results dict."""
    names = [f"ndcg@{k}", f"map@{k}", f"recall@{k}", f"precision@{k}"]
    parts = [f"{name} {results[name]:.4f}" for name in names if name in results]
    if "mmr" in results:
        parts.append(f"mmr {results['mmr']:.1f}")
    best = f" (best step {results['best_step']})" if "best_step" in results else ""
    return ", ".join(parts) + best


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras EarlyStopping whose best value and patience counter survive a resume (read from metrics.csv)."""

    def __init__(self, history: list[float], **kwargs):
        super().__init__(**kwargs)
        self._history = history

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for value in self._history:
            if self.best is None or self._is_improvement(value, self.best):
                self.best, self.wait = value, 0
            else:
                self.wait += 1


# --------------------------------------------------------------------------------------------------- train
def train(
    config: Config,
    model_dir: str,
    *,
    data: tuple[Interactions, Split] | None = None,
    overwrite: bool = False,
    verbose: int | None = None,
) -> dict:
    """Trains (or resumes) a run and returns its results (also written to ``model_dir/results.json``).

    Args:
        config: the run's config (resolved here: derived defaults filled in, then fitted to the data).
        model_dir: the run directory.
        data: an already loaded (interactions, split); default load as the config says.
        overwrite: discard an existing run in ``model_dir`` instead of resuming it.
        verbose: progress on stdout: a progress bar per validation period (1), one line per period (2) or
            nothing (0); None: 1 when stdout is a terminal, else 2.

    Raises:
        ValueError: a bad config (naming the flag); TooLittleData: the data cannot feed the config.
        RunError: ``model_dir`` holds a different run; NonFiniteLoss: the loss became NaN or infinite.
    """
    config = config.resolved()
    config.validate()
    # first: the multi-worker strategy configures the runtime, which must happen before other TensorFlow work
    strategy = distribute.make_strategy(config.strategy)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ValueError(f"--batch_size={config.batch_size} must be divisible by the {replicas} replicas")
    interactions, split = data if data is not None else load_data(config)
    config = fit_to_data(config, split)  # before the run directory: what cannot work fails here
    run = RunPlace(model_dir, strategy, overwrite)
    results = run.finished_results(config)
    if results is not None:
        return results
    stream = training_stream(config, interactions, split, replicas)
    features = item_features(config, interactions)
    with run.prepared(config):
        keras.utils.set_random_seed(config.seed)
        schedule = Schedule.of(config, split.train.nnz)
        with strategy.scope():
            spe = schedule.steps_per_execution
            model = build_model(config, *split.train.shape, features, steps_per_execution=spe, train=split.train)
        state = run.restore(model, schedule)
        callbacks = training_callbacks(config, schedule, run, state, split, strategy, default_verbose(verbose))
        if state.start_step < schedule.total_steps and not _patience_exhausted(state.rows, config):
            distributed = strategy if config.strategy != "default" else None
            fit_periods(model, stream, schedule, state.start_step, callbacks, strategy=distributed)
        return run.finish(config, model, state, interactions, split)


def default_verbose(verbose: int | None) -> int:
    """``verbose``, or 1 (a progress bar) when stdout is a terminal and 2 (a line per period) when not."""
    if verbose is not None:
        return verbose
    return 1 if sys.stdout.isatty() else 2


def training_stream(config: Config, interactions: Interactions, split: Split, replicas: int = 1) -> TrainingStream:
    """The run's batch stream at the GLOBAL batch size (distributed, each replica gets its slice of every batch,
    and a 2-stage run gives every replica its own stage-1 candidates)."""
    spec = SamplerSpec(
        sampler=config.sampler,
        batch_size=config.batch_size,
        num_negatives=config.num_negatives,
        num_candidates=config.num_candidates,
        beta=config.beta,
        popularity_smoothing=config.popularity_smoothing,
    )
    groups = None
    if config.sampler == "side_info":  # genres (MovieLens) or tags (citeulike-t): cml_tf.side_info
        groups = datasets.load_side_info(config.dataset, config.data_path, interactions).item_groups
    return TrainingStream(split.train, spec, seed=config.seed, candidate_groups=replicas, item_groups=groups)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How a run's steps are cut: ``total_steps`` in periods of ``eval_every`` steps (a validation and a
    checkpoint after each), run ``steps_per_execution`` at a time (a divisor of ``eval_every``)."""

    total_steps: int
    eval_every: int
    steps_per_execution: int

    @property
    def num_periods(self) -> int:
        return math.ceil(self.total_steps / self.eval_every)

    @classmethod
    def of(cls, config: Config, pairs: int) -> Schedule:
        """The schedule of ``config`` over ``pairs`` training pairs (``max_steps`` or ``epochs`` passes)."""
        total_steps = config.max_steps or math.ceil(config.epochs * pairs / config.batch_size)
        eval_every = min(config.eval_every, total_steps)
        spe = min(config.steps_per_execution, eval_every)
        if config.strategy != "default" and spe > 1:
            # Keras 3 runs steps 2.. of an execution inside a tf.cond, where the merge_call of the gradient
            # all-reduce fails ("You must feed a value for placeholder tensor", keras-team/keras#19246): one step.
            log.info("--strategy=%s: --steps_per_execution=%d ignored (Keras 3 supports only 1)", config.strategy, spe)
            spe = 1
        # Keras runs whole executions: prefer the largest divisor of eval_every, else round eval_every up
        divisor = max(d for d in range(1, spe + 1) if eval_every % d == 0)
        if 2 * divisor >= spe:
            spe = divisor
        return cls(total_steps, math.ceil(eval_every / spe) * spe, spe)


@dataclasses.dataclass
class RunState:
    """What a run resumes from: its checkpoint and managers, the step, and the metrics rows up to that step."""

    checkpoint: tf.train.Checkpoint
    manager: tf.train.CheckpointManager
    best_manager: tf.train.CheckpointManager
    start_step: int
    rows: list


class RunPlace:
    """Where a run lives: ``model_dir`` for the chief; other workers of a multi-worker strategy write a temporary
    copy (Keras' multi-worker pattern) and every worker resumes from the chief's checkpoints."""

    def __init__(self, model_dir: str, strategy, overwrite: bool):
        self.model_dir, self.strategy, self.overwrite = model_dir, strategy, overwrite
        self.chief = distribute.is_chief(strategy)
        self.run_dir = distribute.write_dir(model_dir, strategy)
        if not self.chief and os.path.isdir(self.run_dir):
            shutil.rmtree(self.run_dir)

    def finished_results(self, config: Config) -> dict | None:
        """The results of a finished run in ``model_dir`` (refusing a different config), else None."""
        path = os.path.join(self.model_dir, "results.json")
        finished = os.path.exists(path) and not self.overwrite
        distribute.agree(self.strategy, [finished], "whether the run in --model_dir is finished")
        if not finished:
            return None
        if self.chief:
            _prepare_run_dir(config, self.run_dir, False)  # refuses a different config
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
        log.info("%s: already finished; results: %s", self.model_dir, summary_line(results, config.k))
        return results

    @contextlib.contextmanager
    def prepared(self, config: Config):
        """Writes config.json (refusing a different started run); a run that stops before its first checkpoint
        is no run: it leaves no config.json claiming the directory (nor the directory, if it made it)."""
        existed = os.path.isdir(self.run_dir)
        _prepare_run_dir(config, self.run_dir, self.overwrite or not self.chief)
        try:
            yield
        except BaseException:
            if self.chief and not run_started(self.run_dir):
                _remove_run_files(self.run_dir)
                if not existed and os.path.isdir(self.run_dir) and not os.listdir(self.run_dir):
                    os.rmdir(self.run_dir)
            raise

    def restore(self, model: MetricModel, schedule: Schedule) -> RunState:
        """The checkpoints of ``model`` + optimizer, restored from the last one when the run resumes (otherwise
        CML+F starts its items at their feature projection, as CollMetric's optimize() does)."""
        checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        manager = tf.train.CheckpointManager(checkpoint, os.path.join(self.run_dir, "checkpoints"), max_to_keep=2)
        best_manager = tf.train.CheckpointManager(checkpoint, os.path.join(self.run_dir, "best"), max_to_keep=1)
        start_step = 0
        resumable = self.chief or not self.overwrite
        latest = tf.train.latest_checkpoint(os.path.join(self.model_dir, "checkpoints")) if resumable else None
        if latest:
            checkpoint.restore(latest).assert_existing_objects_matched()
            start_step = int(model.optimizer.iterations.numpy())
            log.info("%s: resuming from step %d of %d", self.model_dir, start_step, schedule.total_steps)
        elif model.feature_projection is not None:
            initialise_items_from_features(model)
            model.refresh_stage2_snapshot()
        distribute.agree(self.strategy, [start_step], "the step to resume from")
        metrics_path = os.path.join(self.model_dir, "metrics.csv")
        rows = [r for r in read_metrics_csv(metrics_path) if r["step"] <= start_step] if latest else []
        return RunState(checkpoint, manager, best_manager, start_step, rows)

    def finish(self, config: Config, model, state: RunState, interactions, split) -> dict:
        """Tests the best checkpoint and writes the results (`finish`). Other workers take part in the
        (collective) test evaluation, keep their final embeddings and drop the rest."""
        if self.chief:
            args = (model, state.checkpoint, state.best_manager, interactions, split)
            return finish(config, self.model_dir, *args, strategy=self.strategy)
        best_manager = state.best_manager
        if not best_manager.latest_checkpoint:
            best_dir = os.path.join(self.model_dir, "best")
            best_manager = tf.train.CheckpointManager(state.checkpoint, best_dir, max_to_keep=1)
        args = (model, state.checkpoint, best_manager, interactions, split)
        results = finish(config, self.run_dir, *args, strategy=self.strategy)
        distribute.remove_worker_dir(self.run_dir)
        return results


def validation_evaluator(config: Config, split: Split, strategy=None) -> Evaluator | None:
    """The evaluator of the validation periods (a seeded sample of ``eval_users`` validation users, training
    items masked; sharded over a ``strategy``'s replicas); None without validation pairs."""
    if not split.valid.nnz:
        return None
    users = sample_users(split.valid, config.eval_users, config.seed)
    evaluator = Evaluator(split.train, split.valid, k=config.k, users=users)
    return distribute.evaluator_for(evaluator, strategy) if strategy is not None else evaluator


def training_callbacks(
    config: Config, schedule: Schedule, run: RunPlace, state: RunState, split: Split, strategy, verbose: int
) -> list[keras.callbacks.Callback]:
    """Validation + checkpoints + metrics.csv, TensorBoard, progress (``verbose``) and early stopping."""
    pairs = split.train.nnz
    evaluator = validation_evaluator(config, split, strategy)
    callbacks: list[keras.callbacks.Callback] = [
        EvaluationCheckpoint(
            evaluator=evaluator,
            config=config,
            model_dir=run.run_dir,
            checkpoint=state.checkpoint,
            manager=state.manager,
            best_manager=state.best_manager,
            rows=state.rows,
            pairs_per_epoch=pairs,
        ),
        keras.callbacks.TensorBoard(os.path.join(run.run_dir, "tensorboard"), update_freq="epoch", write_graph=False),
    ]
    if verbose:
        callbacks.append(
            Progress(
                verbose,
                total_steps=schedule.total_steps,
                eval_every=schedule.eval_every,
                batch_size=config.batch_size,
                pairs_per_epoch=pairs,
                epochs=None if config.max_steps else config.epochs,
                k=config.k,
            )
        )
    if config.early_stopping_patience and evaluator is not None:
        key = f"ndcg@{config.k}"
        history = [r[key] for r in state.rows if key in r]
        patience = config.early_stopping_patience
        callbacks.append(ResumableEarlyStopping(history, monitor=f"val_{key}", mode="max", patience=patience))
    return callbacks


def fit_periods(model, stream: TrainingStream, schedule: Schedule, start_step: int, callbacks, strategy=None) -> None:
    """`fit` from the period holding ``start_step`` to ``total_steps``, one Keras epoch per validation period
    (``strategy``: a distributed run's; each replica gets its slice of every global batch).

    A finite stream that ends exactly at total_steps: Keras stops the last (shorter) period when the input runs
    out, even mid-execution, and still validates at its end, so every run trains exactly total_steps.
    """
    done = start_step // schedule.eval_every
    first = done * schedule.eval_every
    if strategy is not None:
        dataset = distribute.distributed_dataset(
            strategy, stream, start_step=first, num_steps=schedule.total_steps - first
        )
    else:
        dataset = stream.dataset(start_step=first, num_steps=schedule.total_steps - first)
    with warnings.catch_warnings():
        # the last period may be shorter (the stream ends at total_steps), and the stream is shuffled already
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed")
        model.fit(
            dataset,
            epochs=schedule.num_periods,
            initial_epoch=done,
            steps_per_epoch=schedule.eval_every,
            callbacks=callbacks,
            verbose=0,  # Progress prints instead: Keras' "Epoch k/n" would count validation periods
        )


def _patience_exhausted(rows: list[dict], config: Config) -> bool:
    """Whether early stopping (``early_stopping_patience`` > 0) has ended the run whose metrics rows are ``rows``."""
    key = f"ndcg@{config.k}"
    values = [r[key] for r in rows if key in r]
    if not config.early_stopping_patience or not values:
        return False
    best_at = int(np.argmax(values))
    return len(values) - 1 - best_at >= config.early_stopping_patience


def finish(config, model_dir, model, checkpoint, best_manager, interactions, split, strategy=None) -> dict:
    """Restores the best checkpoint, evaluates it on the test set, writes embeddings and results.json.

    With a ``strategy`` of several replicas the test users are sharded across them (every worker must call this).
    """
    rows = read_metrics_csv(os.path.join(model_dir, "metrics.csv"))
    if best_manager.latest_checkpoint:
        checkpoint.restore(best_manager.latest_checkpoint).expect_partial()
    best_step = int(model.optimizer.iterations.numpy())
    user_vectors, item_vectors = (np.asarray(t) for t in model.embeddings())
    seen = (split.train + split.valid).tocsr()
    test_evaluator = Evaluator(
        seen,
        split.test,
        k=config.k,
        users=sample_users(split.test, config.test_users, config.split_seed),
        item_popularity=np.asarray(split.train.sum(0)).ravel(),
    )
    if strategy is not None:
        test_evaluator = distribute.evaluator_for(test_evaluator, strategy)
    test = evaluate_model(test_evaluator, model)
    emb_dir = os.path.join(model_dir, "embeddings")
    save_npy_atomic(os.path.join(emb_dir, "user_embeddings.npy"), user_vectors)
    save_npy_atomic(os.path.join(emb_dir, "item_embeddings.npy"), item_vectors)
    save_npy_atomic(os.path.join(emb_dir, "user_ids.npy"), interactions.user_ids)
    save_npy_atomic(os.path.join(emb_dir, "item_ids.npy"), interactions.item_ids)
    best_row = next((r for r in rows if int(r["step"]) == best_step), rows[-1] if rows else {})
    results = {k: float(v) for k, v in test.items() if k != "users"}
    results.update(
        {
            "test_users": int(test["users"]),
            "best_step": best_step,
            "steps": int(rows[-1]["step"]) if rows else best_step,
            "train_seconds": float(rows[-1]["train_seconds"]) if rows else 0.0,
            "pairs_per_sec": float(np.median([r["pairs_per_sec"] for r in rows])) if rows else 0.0,
            # full ranking of every test user (the first call includes tracing)
            "test_eval_seconds": float(getattr(test_evaluator, "last_seconds", float("nan"))),
            "valid": {k: v for k, v in best_row.items() if "@" in k or k == "mmr"},
        }
    )
    users = sample_users(split.test, RECOMMENDATION_USERS, config.seed)
    scores = model_scores(model, split.train.shape[1])
    write_recommendations(os.path.join(model_dir, "recommendations.npz"), scores, split, users, config.k)
    write_json_atomic(os.path.join(model_dir, "results.json"), results)
    return results
