"""What a run writes into its directory, and how it resumes and finishes there.

::

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

Every file is written atomically. `RunPlace` is where a run lives: it refuses a directory that holds a different
run, says when a run is already finished, restores the last checkpoint to resume, removes what a run wrote when it
stops before its first checkpoint, and `finish` tests the best checkpoint and writes the results.
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
        # a field added since the run was saved reads as its default (a CML run from before --model is a cml run);
        # where the data lives does not change a run: a moved checkout may resume it
        diff = config_differences(saved, config)
        if diff:
            raise RunError(
                f"--model_dir={model_dir} holds a run with a different config (differs in: {', '.join(diff)}); "
                "use another --model_dir, or --overwrite to start afresh"
            )
    elif overwrite or not started:
        # a directory without a checkpoint holds no run (e.g. one stopped by an error): start it afresh
        _remove_run_files(model_dir)
    write_json_atomic(path, config.to_dict())


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

    def finished_results(self, config: Config) -> dict | None:
        """The results of a finished run in ``model_dir`` (refusing a different config), else None."""
        path = os.path.join(self.model_dir, "results.json")
        finished = os.path.exists(path) and not self.overwrite
        self.devices.agree([finished], "whether the run in --model_dir is finished")
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

    def finish(self, config: Config, model, state: RunState, interactions, split) -> dict:
        """Tests the best checkpoint and writes the results (`finish`). Other workers take part in the
        (collective) test evaluation, keep their final embeddings and drop the rest."""
        if self.chief:
            args = (model, state.checkpoint, state.best_manager, interactions, split)
            return finish(config, self.model_dir, *args, devices=self.devices)
        best_manager = state.best_manager
        if not best_manager.latest_checkpoint:
            best_dir = os.path.join(self.model_dir, "best")
            best_manager = tf.train.CheckpointManager(state.checkpoint, best_dir, max_to_keep=1)
        args = (model, state.checkpoint, best_manager, interactions, split)
        results = finish(config, self.run_dir, *args, devices=self.devices)
        remove_worker_dir(self.run_dir)
        return results


def finish(config, model_dir, model, checkpoint, best_manager, interactions, split, devices=None) -> dict:
    """Restores the best checkpoint, evaluates it on the test set, writes embeddings and results.json.

    With ``devices`` of several replicas the test users are sharded across them (every worker must call this).
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
    write_recommendations(os.path.join(model_dir, "recommendations.npz"), scores, split, users, config.k)
    write_json_atomic(os.path.join(model_dir, "results.json"), results)
    return results
