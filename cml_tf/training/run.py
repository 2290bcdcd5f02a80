"""One training run, end to end, as a recipe: data -> split -> tf.data -> model -> `fit` -> test -> run dir.

`train(config, model_dir)` is what `python -m cml_tf.train` calls after parsing flags, and what the experiment
runners call directly; `cml_tf.training.outputs` says what the run directory holds.

Running the same command again resumes from the last checkpoint (the batch stream is a pure function of the step,
so the resumed run sees the batches the uninterrupted one would have) and says so; a finished run (results.json
present) is not trained again, and says so with its results. Either is refused for another config or other data
(`cml_tf.training.outputs.check_same_run`), except that an interrupted run may be given another length
(``max_steps`` / ``epochs``): the learning rate is constant and the batches depend on the step alone, so it then
trains exactly as a run of that length from the start would have.

Everything that can be checked is checked before the run directory is touched: the config, then the data (the
batch must fit the training pairs; ``num_candidates`` larger than the catalog is lowered to the catalog, with a
notice, and saved as used). A run that stops before its first checkpoint (a bad value found late, a non-finite
loss, Ctrl-C) removes what it wrote, so the corrected command starts afresh; a directory whose run never
checkpointed is no run, and a different config there is not refused. Training stops at the first non-finite loss,
naming the step.

With ``temperature_probe`` (``--preset=accurate``), a short run at each τ comes first and the best on validation
goes on from its checkpoint (`probe_temperature`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import warnings

import keras
import numpy as np

from cml_tf.data import loaders
from cml_tf.data.interactions import Interactions
from cml_tf.data.splits import Split
from cml_tf.io import write_json_atomic
from cml_tf.models import MODELS, MetricModel
from cml_tf.sampling.pipeline import SamplerSpec, TrainingStream
from cml_tf.training.callbacks import budget_spent, default_verbose, training_callbacks
from cml_tf.training.config import Config, default_hinge
from cml_tf.training.data import data_identity, fit_to_data, item_features, load_data
from cml_tf.training.distribute import Devices
from cml_tf.training.optimizers import make_optimizer
from cml_tf.training.outputs import (
    RunError,
    RunPlace,
    check_same_run,
    read_metrics_csv,
    remove_run_files,
    run_started,
    write_metrics_csv,
)

log = logging.getLogger("cml_tf")


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
            HLR (required by those models), the history of the user tower (``user_history_weight``).
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
    if config.user_history_weight:
        options["user_history"] = train
        options["user_history_weight"] = config.user_history_weight
        options["user_history_size"] = config.user_history_size
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
        stage2_mask_opposite=config.stage2_mask_opposite,
        stage2_replacement=config.stage2_replacement,
        stage2_uniform_mix=config.stage2_uniform_mix,
        hinge=config.hinge or default_hinge(config.sampler, config.num_negatives),
        loss=config.loss,
        temperature=config.temperature,
        learn_temperature=config.learn_temperature,
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


def train(
    config: Config,
    model_dir: str,
    *,
    data: tuple[Interactions, Split] | None = None,
    overwrite: bool = False,
    verbose: int | None = None,
) -> dict:
    """Trains (or resumes) a run and returns its results (also written to ``model_dir/results.json``); with
    ``config.temperature_probe``, after choosing τ on validation (`probe_temperature`).

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
    devices = Devices(config.strategy)
    if config.batch_size % devices.replicas:
        raise ValueError(f"--batch_size={config.batch_size} must be divisible by the {devices.replicas} replicas")
    interactions, split = data if data is not None else load_data(config)
    config = fit_to_data(config, split)  # before the run directory: what cannot work fails here
    data_id = data_identity(config, interactions)
    probe = None
    if config.temperature_probe:
        config, probe = probe_temperature(config, model_dir, (interactions, split), data_id, overwrite, verbose)
        overwrite = False  # done: the probe started the directory afresh
    run = RunPlace(model_dir, devices, overwrite)
    results = run.finished_results(config, data_id)
    if results is not None:
        return results
    stream = training_stream(config, interactions, split, devices.replicas)
    features = item_features(config, interactions)
    schedule = Schedule.of(config, split.train.nnz)
    with run.prepared(config, data_id, schedule.total_steps, schedule.eval_every):
        keras.utils.set_random_seed(config.seed)
        with devices.scope():
            spe = schedule.steps_per_execution
            model = build_model(config, *split.train.shape, features, steps_per_execution=spe, train=split.train)
        state = run.restore(model, schedule.total_steps)
        callbacks = training_callbacks(config, schedule, run, state, split, default_verbose(verbose))
        stopped = _patience_exhausted(state.rows, config) or budget_spent(state.rows, config.max_train_seconds)
        if state.start_step < schedule.total_steps and not stopped:
            fit_periods(model, stream, schedule, state.start_step, callbacks, devices)
        extra = {"temperature_probe": probe} if probe else None
        return run.finish(config, model, state, interactions, split, extra=extra)


#: where a run keeps its temperature probes: <model_dir>/temperature_probe/tau-<τ>/
PROBE_DIR = "temperature_probe"


def probe_steps(config: Config, pairs: int) -> int:
    """The length of each temperature probe: ``temperature_probe_epochs`` over ``pairs`` training pairs, rounded to
    whole validation periods of the run's schedule (so the chosen probe's last checkpoint is a step the run validates
    at), at least one period and at most the whole run."""
    schedule = Schedule.of(config, pairs)
    periods = math.floor(config.temperature_probe_epochs * pairs / config.batch_size / schedule.eval_every + 0.5)
    return min(max(periods, 1) * schedule.eval_every, schedule.total_steps)


def probe_temperature(
    config: Config, model_dir: str, data: tuple[Interactions, Split], data_id: dict, overwrite: bool, verbose
) -> tuple[Config, dict]:
    """Picks τ on validation: a short run at each τ of ``config.temperature_probe``, the best goes on.

    Each probe is the run itself at that τ, cut to `probe_steps` (``temperature_probe_epochs``), in
    ``model_dir/temperature_probe/tau-<τ>/`` (a run directory: an interrupted probe resumes, a finished one is read;
    one of another config is trained again while the run itself has not started). The τ whose best validation
    NDCG@k is highest (the first on a tie) is chosen and recorded in ``temperature_probe/choice.json``, and the run
    starts from that probe's last checkpoint and metrics rows: the batches depend on the step alone, so it trains
    exactly as a run at that τ from the start would have, and the chosen probe's steps are not trained twice. The
    rows' ``train_seconds`` then count the other probes' training too, so ``max_train_seconds`` bounds the whole
    (each probe gets an equal share of it) and results.json's ``train_seconds`` is all the training the run took.
    A started run resumes at its recorded τ without probing again.

    Args:
        config: the run's config, resolved and fitted to the data.
        model_dir: the run directory; with ``overwrite`` everything the run wrote there (probes included) is removed
            first.
        data: the loaded (interactions, split); data_id: its `cml_tf.training.data.data_identity`.
        verbose: as `train`'s.

    Returns:
        the config at the chosen τ, and the record (results.json's ``temperature_probe``):
        ``{"chosen": τ, "steps": probe steps, "valid": {"τ": NDCG@k}, "train_seconds": {"τ": seconds}}``.

    Raises:
        ValueError: the split has no validation pairs; RunError: ``model_dir`` holds another run.
    """
    split = data[1]
    if not split.valid.nnz:
        raise ValueError("--temperature_probe chooses τ on validation, and this split has none (--valid_fraction=0)")
    pairs = split.train.nnz
    if overwrite:
        remove_run_files(model_dir)
    choice_path = os.path.join(model_dir, PROBE_DIR, "choice.json")
    if run_started(model_dir):
        if os.path.exists(choice_path):  # the run goes on at the τ it chose (RunPlace checks the rest)
            with open(choice_path, encoding="utf-8") as f:
                record = json.load(f)
            return dataclasses.replace(config, temperature=float(record["chosen"])), record
        # a run without a recorded choice: refuse another config before any probe trains
        with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
            saved_tau = json.load(f).get("temperature") or config.temperature
        _check_started_run(dataclasses.replace(config, temperature=saved_tau), model_dir, data_id, pairs)
    steps = probe_steps(config, pairs)
    taus = config.temperature_probe
    budget = config.max_train_seconds / len(taus) if config.max_train_seconds is not None else None
    key = f"ndcg@{config.k}"
    valid, seconds, dirs = {}, {}, {}
    for tau in taus:
        probe = dataclasses.replace(
            config,
            temperature=tau,
            temperature_probe=(),
            max_steps=steps,
            max_train_seconds=budget,
            early_stopping_patience=0,
        )
        dirs[tau] = os.path.join(model_dir, PROBE_DIR, f"tau-{tau:g}")
        if not run_started(model_dir) and _holds_other_run(probe, dirs[tau], data_id, pairs):
            log.info("%s holds a probe of another config: it is trained again", dirs[tau])
            shutil.rmtree(dirs[tau])
        log.info("temperature probe: tau = %g for %d steps (%s)", tau, steps, dirs[tau])
        results = train(probe, dirs[tau], data=data, verbose=verbose)
        valid[tau] = float(results["valid"].get(key, -math.inf))
        seconds[tau] = float(results["train_seconds"])
    chosen = max(taus, key=lambda t: valid[t])  # max keeps the first of equal values
    log.info(
        "temperature probe: valid %s %s: tau = %g goes on",
        key,
        ", ".join(f"{valid[t]:.4f} at tau = {t:g}" for t in taus),
        chosen,
    )
    record = {
        "chosen": chosen,
        "steps": steps,
        "valid": {f"{t:g}": valid[t] for t in taus},
        "train_seconds": {f"{t:g}": seconds[t] for t in taus},
    }
    if not run_started(model_dir):
        write_json_atomic(choice_path, record)
        _start_from_probe(dirs[chosen], model_dir, sum(s for t, s in seconds.items() if t != chosen))
    return dataclasses.replace(config, temperature=chosen), record


def _check_started_run(config: Config, model_dir: str, data_id: dict, pairs: int) -> None:
    """`check_same_run` for the run started in ``model_dir`` (finished or interrupted, as it is)."""
    schedule = Schedule.of(config, pairs)
    finished = os.path.exists(os.path.join(model_dir, "results.json"))
    length = (None, None) if finished else (schedule.total_steps, schedule.eval_every)
    check_same_run(config, model_dir, data_id, *length)


def _holds_other_run(config: Config, model_dir: str, data_id: dict, pairs: int) -> bool:
    """Whether ``model_dir`` holds a started run that ``config`` (on ``data_id``) could not go on with."""
    if not (os.path.exists(os.path.join(model_dir, "config.json")) and run_started(model_dir)):
        return False
    try:
        _check_started_run(config, model_dir, data_id, pairs)
    except RunError:
        return True
    return False


def _start_from_probe(probe_dir: str, model_dir: str, other_seconds: float) -> None:
    """Starts the run in ``model_dir`` from the probe in ``probe_dir``: its best and last checkpoints and its metrics
    rows (``train_seconds`` plus the other probes' ``other_seconds``). The checkpoints go last: their presence makes
    the directory a started run, so an interruption before leaves none."""
    for name in ("config.json", "best", "metrics.csv", "checkpoints"):
        path = os.path.join(model_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.unlink(path)
    rows = read_metrics_csv(os.path.join(probe_dir, "metrics.csv"))
    for row in rows:
        row["train_seconds"] += other_seconds
    for name in ("best", "checkpoints"):
        src, dst = os.path.join(probe_dir, name), os.path.join(model_dir, name)
        if name == "checkpoints":
            write_metrics_csv(os.path.join(model_dir, "metrics.csv"), rows)
        shutil.rmtree(dst + ".tmp", ignore_errors=True)
        shutil.copytree(src, dst + ".tmp")
        os.replace(dst + ".tmp", dst)


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
        popularity_uniform_mix=config.popularity_uniform_mix,
        batch_distinct=config.batch_distinct_negatives,
        dns_k=config.dns_k,
        softmax=config.loss == "softmax",
        in_batch=config.softmax_in_batch,
    )
    groups = None
    if config.sampler == "side_info":  # genres (MovieLens) or tags (citeulike-t): cml_tf.data.side_info
        groups = loaders.load_side_info(config.dataset, config.data_path, interactions).item_groups
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


def fit_periods(
    model, stream: TrainingStream, schedule: Schedule, start_step: int, callbacks, devices: Devices
) -> None:
    """`fit` from the period holding ``start_step`` to ``total_steps``, one Keras epoch per validation period
    (``devices``: where the run computes; distributed, each replica gets its slice of every global batch).

    A finite stream that ends exactly at total_steps: Keras stops the last (shorter) period when the input runs
    out, even mid-execution, and still validates at its end, so every run trains exactly total_steps.
    """
    done = start_step // schedule.eval_every
    first = done * schedule.eval_every
    dataset = devices.dataset(stream, start_step=first, num_steps=schedule.total_steps - first)
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
