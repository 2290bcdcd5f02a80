"""What a run writes into its directory, and how it resumes and finishes there.

::

    config.json      the resolved `Config`, whole
    data.json        the data's identity: data_path, a fingerprint of its content, users, items, pairs
    metrics.csv      one row per validation evaluation: step, epoch, loss, hinge, gor, <metric>@k..., mmr,
                     pairs_per_sec (over the steps since the previous row), train_seconds (cumulative)
    checkpoints/     TensorFlow checkpoints of model + optimizer at every evaluation (resume point)
    best/            the checkpoint with the best validation NDCG@k
    tensorboard/     TensorBoard logs
    embeddings/      user_embeddings.npy, item_embeddings.npy (best model, in its geometry), user_ids.npy,
                     item_ids.npy
    recommendations.npz  top-k of a seeded sample of up to 1,000 test users (best model, train + valid masked):
                     users, items, item_train_count (the notebooks read it)
    results.json     test metrics of the best model, train_seconds, best_step, validation metrics (and, with a
                     temperature probe, its choice: ``temperature_probe``)
    temperature_probe/tau-<τ>/  with ``temperature_probe``: the short run at each τ (a run directory each); the
                     chosen one's checkpoints and metrics rows start the run (its ``train_seconds`` then count the
                     other probes' training too: `cml_tf.training.run.probe_temperature`)

Every file is written atomically. `RunPlace` is where a run lives: it refuses a directory that holds a different
run (another config, or other data: `check_same_run`, before anything is written), says when a run is already
finished, restores the last checkpoint to resume, removes what a run wrote when it stops before its first
checkpoint, and `finish` tests the best checkpoint and writes the results.

A run is bound to its data by data.json's fingerprint of the loaded interactions (the split is a function of them and
of the config): the same content under another path resumes (a moved checkout), other content is refused. A run
from before data.json has no fingerprint: it resumes only from the same data path, and records the fingerprint
of the data it resumes on (a finished one is only read, so it records nothing). An interrupted run may resume with
another length (``--max_steps``, ``--epochs`` or ``--max_train_seconds``) unless it has already trained past the new
end.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import logging
import os
import shutil

import numpy as np
import tensorflow as tf

from cml_tf.evaluation.evaluator import Evaluator
from cml_tf.evaluation.scores import model_scores
from cml_tf.evaluation.toplists import sample_users, write_recommendations
from cml_tf.io import save_npy_atomic, write_json_atomic, write_text_atomic
from cml_tf.models.base import MetricModel
from cml_tf.models.features import initialise_items_from_features
from cml_tf.training.config import Config, config_differences
from cml_tf.training.distribute import Devices, remove_worker_dir

log = logging.getLogger("cml_tf")


#: test users (a seeded sample) whose top-k list every run saves in recommendations.npz
RECOMMENDATION_USERS = 1000


class RunError(RuntimeError):
    """A run directory that cannot be used as asked (e.g. it holds a different config)."""


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
    "data.json",
    "temperature_probe",
)
#: the run's data: its path, a fingerprint of its content and its sizes (`cml_tf.training.data.data_identity`)
DATA_FILE = "data.json"


def run_started(model_dir: str) -> bool:
    """Whether ``model_dir`` holds a run that got somewhere: a checkpoint or results (not just a config.json)."""
    return os.path.exists(os.path.join(model_dir, "results.json")) or bool(
        tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    )


def remove_run_files(model_dir: str) -> None:
    for name in RUN_FILES:
        p = os.path.join(model_dir, name)
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.exists(p):
            os.unlink(p)


#: the config fields that set the schedule's length: an interrupted run may resume with other values
LENGTH_FIELDS = ("max_steps", "epochs", "max_train_seconds")


def _checkpoint_step(model_dir: str) -> int | None:
    """The step of the last resume checkpoint in ``model_dir`` (saved as ``ckpt-<step>``), or None."""
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    return int(latest.rsplit("-", 1)[1]) if latest else None


def _describe_data(data: dict) -> str:
    return f"{data.get('data_path')}: {data['users']:,} users x {data['items']:,} items, {data['pairs']:,} pairs"


def _check_same_data(model_dir: str, saved: dict, data: dict) -> None:
    """Refuses ``data`` (a `data_identity`) unless it is the data of the run in ``model_dir``.

    A run records its data's fingerprint in data.json; its content decides (a moved checkout may resume). A run from
    before data.json has no fingerprint: only its data path can be compared, and must be the same.
    """
    label = f"--model_dir={model_dir}"
    path = os.path.join(model_dir, DATA_FILE)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            recorded = json.load(f)
        if recorded.get("fingerprint") == data["fingerprint"]:
            return
        sizes = ("users", "items", "pairs")
        same_sizes = ", other content" if all(recorded.get(k) == data[k] for k in sizes) else ""
        raise RunError(
            f"{label} holds a run trained on other data (the run: {_describe_data(recorded)}; now: "
            f"{_describe_data(data)}{same_sizes}); use another --model_dir, or --overwrite to start afresh"
        )
    was, now = saved.get("data_path"), data["data_path"]
    if (was and os.path.normpath(was)) != (now and os.path.normpath(now)):
        raise RunError(
            f"{label} holds a run that recorded no data fingerprint (made before cml_tf recorded one) on "
            f"--data_path={was}, not {now}: its data cannot be compared; pass --data_path={was}, or use another "
            "--model_dir, or --overwrite to start afresh"
        )


def check_same_run(
    config: Config,
    model_dir: str,
    data: dict,
    total_steps: int | None = None,
    eval_every: int | None = None,
) -> None:
    """Raises RunError (one line naming ``model_dir``, what differs and how to proceed) unless the run saved in
    ``model_dir`` is ``config``'s run on ``data``. Reads only; the caller writes after it passed.

    Args:
        config: the resolved config of the command.
        model_dir: a directory holding a run (its config.json).
        data: the command's `cml_tf.training.data.data_identity`.
        total_steps, eval_every: the command's schedule, for an interrupted run (None: a finished run, whose
            length is compared as any other field). An interrupted run may resume with another length
            (``LENGTH_FIELDS``) as long as its last checkpoint is not past the new end and falls on a validation
            step of the new schedule (or is its end).
    """
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        saved = json.load(f)
    # a field added since the run was saved reads as its default, the fields a run does not read and the data path
    # (checked with the data's content below) count as equal (`config_differences`)
    ignored = set(LENGTH_FIELDS) if total_steps is not None else set()
    diff = [k for k in config_differences(saved, config) if k not in ignored]
    if diff:
        finished = " finished" if total_steps is None else ""
        raise RunError(
            f"--model_dir={model_dir} holds a{finished} run with a different config (differs in: {', '.join(diff)}); "
            "use another --model_dir, or --overwrite to start afresh"
        )
    _check_same_data(model_dir, saved, data)
    step = _checkpoint_step(model_dir) if total_steps is not None else None
    if step is None:
        return
    length = f"--max_steps={config.max_steps}" if config.max_steps is not None else f"--epochs={config.epochs:g}"
    if step > total_steps:
        raise RunError(
            f"--model_dir={model_dir} holds a run trained to step {step}, past the end of this one ({length}: "
            f"{total_steps} steps); ask for {step} steps or more to go on with it, or use another --model_dir, or "
            "--overwrite to start afresh"
        )
    if step < total_steps and step % eval_every:
        raise RunError(
            f"--model_dir={model_dir} holds a run whose last checkpoint (step {step}) is not a validation step of "
            f"this one ({length}: validations every {eval_every} steps), so it cannot go on from there; use its "
            "former length, or another --model_dir, or --overwrite to start afresh"
        )
    current = config.to_dict()
    changed = [f"--{k} {saved.get(k)} -> {current[k]}" for k in LENGTH_FIELDS if saved.get(k) != current[k]]
    if changed:
        log.info("%s: the run's length changes (%s): %d steps in all", model_dir, ", ".join(changed), total_steps)


def _prepare_run_dir(
    config: Config,
    model_dir: str,
    overwrite: bool,
    data: dict,
    total_steps: int | None = None,
    eval_every: int | None = None,
) -> None:
    """Writes config.json and data.json, after refusing a different run where one has started (a checkpoint or
    results; see `check_same_run`): nothing is written when it is refused."""
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, "config.json")
    started = run_started(model_dir)
    if os.path.exists(path) and started and not overwrite:
        check_same_run(config, model_dir, data, total_steps, eval_every)
    elif overwrite or not started:
        # a directory without a checkpoint holds no run (e.g. one stopped by an error): start it afresh
        remove_run_files(model_dir)
    write_json_atomic(path, config.to_dict())
    write_json_atomic(os.path.join(model_dir, DATA_FILE), data)


def interrupted_message(model_dir: str) -> str:
    """What an interrupted command (Ctrl-C) prints: how to go on from what ``model_dir`` holds, if anything."""
    step = _checkpoint_step(model_dir)
    if step is not None:
        return f"interrupted: run the same command to resume {model_dir} from its last checkpoint (step {step})"
    if os.path.exists(os.path.join(model_dir, "results.json")):
        return f"interrupted: {model_dir} holds a finished run"
    probes = os.path.join(model_dir, "temperature_probe")
    if os.path.isdir(probes) and any(run_started(os.path.join(probes, p)) for p in os.listdir(probes)):
        return (
            f"interrupted during the temperature probe: run the same command to go on in {model_dir} (the probes "
            "trained so far are kept)"
        )
    return (
        f"interrupted before the first checkpoint: nothing was saved; run the same command to start {model_dir} again"
    )


def summary_line(results: dict, k: int) -> str:
    """``ndcg@50 0.0712, map@50 0.0301, recall@50 0.1410, mmr 12.3 (best step 960)`` from a results dict."""
    names = [f"ndcg@{k}", f"map@{k}", f"recall@{k}", f"precision@{k}"]
    parts = [f"{name} {results[name]:.4f}" for name in names if name in results]
    if "mmr" in results:
        parts.append(f"mmr {results['mmr']:.1f}")
    best = f" (best step {results['best_step']})" if "best_step" in results else ""
    return ", ".join(parts) + best


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

    def __init__(self, model_dir: str, devices: Devices, overwrite: bool):
        self.model_dir, self.devices, self.overwrite = model_dir, devices, overwrite
        self.chief = devices.chief
        self.run_dir = devices.write_dir(model_dir)
        if not self.chief and os.path.isdir(self.run_dir):
            shutil.rmtree(self.run_dir)

    def finished_results(self, config: Config, data: dict) -> dict | None:
        """The results of a finished run in ``model_dir``, else None. A finished run of another config or on other
        data (``data``: `cml_tf.training.data.data_identity`) is refused; nothing is written."""
        path = os.path.join(self.model_dir, "results.json")
        finished = os.path.exists(path) and not self.overwrite
        self.devices.agree([finished], "whether the run in --model_dir is finished")
        if not finished:
            return None
        if self.chief:
            check_same_run(config, self.model_dir, data)
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
        log.info("%s: already finished; results: %s", self.model_dir, summary_line(results, config.k))
        return results

    @contextlib.contextmanager
    def prepared(self, config: Config, data: dict, total_steps: int, eval_every: int):
        """Writes config.json and data.json, refusing a different started run (`check_same_run`: ``data`` the
        run's `cml_tf.training.data.data_identity`, ``total_steps`` and ``eval_every`` its schedule); a run that
        stops before its first checkpoint is no run: it leaves no config.json claiming the directory (nor the
        directory, if it made it)."""
        existed = os.path.isdir(self.run_dir)
        overwrite = self.overwrite or not self.chief
        _prepare_run_dir(config, self.run_dir, overwrite, data, total_steps, eval_every)
        try:
            yield
        except BaseException:
            if self.chief and not run_started(self.run_dir):
                remove_run_files(self.run_dir)
                if not existed and os.path.isdir(self.run_dir) and not os.listdir(self.run_dir):
                    os.rmdir(self.run_dir)
            raise

    def restore(self, model: MetricModel, total_steps: int) -> RunState:
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
            log.info("%s: resuming from step %d of %d", self.model_dir, start_step, total_steps)
        elif model.feature_projection is not None:
            initialise_items_from_features(model)
            model.refresh_stage2_snapshot()
        self.devices.agree([start_step], "the step to resume from")
        metrics_path = os.path.join(self.model_dir, "metrics.csv")
        rows = [r for r in read_metrics_csv(metrics_path) if r["step"] <= start_step] if latest else []
        return RunState(checkpoint, manager, best_manager, start_step, rows)

    def finish(self, config: Config, model, state: RunState, interactions, split, extra=None) -> dict:
        """Tests the best checkpoint and writes the results (`finish`; ``extra``: more entries of results.json).
        Other workers take part in the (collective) test evaluation, keep their final embeddings and drop the rest."""
        if self.chief:
            args = (model, state.checkpoint, state.best_manager, interactions, split)
            return finish(config, self.model_dir, *args, devices=self.devices, extra=extra)
        best_manager = state.best_manager
        if not best_manager.latest_checkpoint:
            best_dir = os.path.join(self.model_dir, "best")
            best_manager = tf.train.CheckpointManager(state.checkpoint, best_dir, max_to_keep=1)
        args = (model, state.checkpoint, best_manager, interactions, split)
        results = finish(config, self.run_dir, *args, devices=self.devices)
        remove_worker_dir(self.run_dir)
        return results


def finish(config, model_dir, model, checkpoint, best_manager, interactions, split, devices=None, extra=None) -> dict:
    """Restores the best checkpoint, evaluates it on the test set, writes embeddings and results.json (with the
    entries of ``extra`` added).

    With ``devices`` of several replicas the test users are sharded across them (every worker must call this).
    """
    rows = read_metrics_csv(os.path.join(model_dir, "metrics.csv"))
    if best_manager.latest_checkpoint:
        checkpoint.restore(best_manager.latest_checkpoint).expect_partial()
    best_step = int(model.optimizer.iterations.numpy())
    user_vectors, item_vectors = (np.asarray(t) for t in model.embeddings())
    test_evaluator = Evaluator.for_split(
        split,
        "test",
        config.protocol or "cml",
        k=config.k,
        users=sample_users(split.test, config.test_users, config.split_seed),
    )
    if devices is not None:
        test_evaluator = devices.evaluator(test_evaluator)
    test = test_evaluator.evaluate_model(model)
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
    path = os.path.join(model_dir, "recommendations.npz")
    write_recommendations(path, scores, split, users, config.k, protocol=config.protocol or "cml")
    results.update(extra or {})
    write_json_atomic(os.path.join(model_dir, "results.json"), results)
    return results
