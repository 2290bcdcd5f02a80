"""The callbacks of a run's `fit`: validation with checkpoints and metrics.csv, progress, early stopping."""

from __future__ import annotations

import math
import os
import sys
import time
from typing import TYPE_CHECKING

import keras
import numpy as np

from cml_tf.data.splits import Split
from cml_tf.evaluation.evaluator import Evaluator
from cml_tf.evaluation.toplists import sample_users
from cml_tf.models.step import FIRST_NONFINITE_STEP
from cml_tf.training.config import Config
from cml_tf.training.distribute import Devices
from cml_tf.training.outputs import RunError, RunPlace, RunState, write_metrics_csv

if TYPE_CHECKING:
    from cml_tf.training.run import Schedule


class NonFiniteLoss(RunError):
    """The training loss became NaN or infinite; ``step`` is the first step whose loss was not finite."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


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
            metrics = self.evaluator.evaluate_model(self.model)
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


def progress_bar(done: int, target: int, seconds: float, loss: float | None, pairs_per_sec: float | None) -> str:
    """One state of the terminal progress bar: ``120/1000 [===>      ] 3s - loss 0.4121 - 41,049 pairs/s``.

    Args:
        done: steps done in the period; target: the period's steps; seconds: time since the period began.
        loss: the last loss shown to 4 decimals, or None; pairs_per_sec: shown as a whole number with thousands
            separators, or None.
    """
    width = 30
    filled = min(width, int(width * done / max(target, 1)))
    arrow = "=" * max(filled - 1, 0) + (">" if 0 < filled < width else "=" if filled else "")
    text = f"{done:{len(str(target))}d}/{target} [{arrow:<{width}}] {seconds:.0f}s"
    if loss is not None:
        text += f" - loss {loss:.4f}"
    if pairs_per_sec is not None:
        text += f" - {pairs_per_sec:,.0f} pairs/s"
    return text


class Progress(keras.callbacks.Callback):
    """What a run prints on stdout while it trains, in the terms of the flags.

    Keras counts "epochs" of ``fit``, which here are validation periods of ``--eval_every`` steps, not passes over
    the data (``--epochs``). This names them as periods, with their steps and the epochs (passes) they reach::

        period 3/8 (steps 2001-3000, epoch 4.1 of 20): loss 0.4121, val ndcg@50 0.0712, map@50 0.0301, 35,112 pairs/s

    ``mode`` 1 draws a progress bar over each period's steps (for a terminal, `progress_bar`, redrawn at most every
    0.1 s) before that line; 2 prints only the line (for a log file: no control characters).
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
            self._bar = {"target": target, "start": time.time(), "drawn": 0.0, "width": 0}

    def _draw(self, done: int, logs: dict, end: str = "") -> None:
        bar = self._bar
        values = [float(logs[name]) if name in logs else None for name in ("loss", "pairs/s")]
        line = progress_bar(done, bar["target"], time.time() - bar["start"], *values)
        sys.stdout.write("\r" + line.ljust(bar["width"]) + end)
        sys.stdout.flush()
        bar["width"], bar["drawn"] = len(line), time.time()

    def on_train_batch_end(self, batch, logs=None):
        if self._bar is not None and logs is not None and time.time() - self._bar["drawn"] >= 0.1:
            self._draw(int(self.model.optimizer.iterations.numpy()) - self._first, logs)

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
        if self._bar is not None:  # the bar's last state, then the period's line below it
            self._draw(int(self.model.optimizer.iterations.numpy()) - self._first, logs, end="\n")
        self._bar = None
        print(f"{self.period_label(epoch)}: {', '.join(parts)}", flush=True)


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


class TimeBudget(keras.callbacks.Callback):
    """Stops `fit` at the end of the first validation period whose cumulative training seconds (metrics.csv's
    ``train_seconds``, evaluation excluded, carried over a resume) reach ``max_train_seconds``."""

    def __init__(self, rows: list[dict], max_train_seconds: float):
        super().__init__()
        self.rows = rows
        self.max_train_seconds = max_train_seconds

    def on_epoch_end(self, epoch, logs=None):
        if budget_spent(self.rows, self.max_train_seconds):
            self.model.stop_training = True


def budget_spent(rows: list[dict], max_train_seconds: float | None) -> bool:
    """Whether the run whose metrics rows are ``rows`` has used its training-time budget (None: no budget)."""
    return max_train_seconds is not None and bool(rows) and rows[-1]["train_seconds"] >= max_train_seconds


def default_verbose(verbose: int | None) -> int:
    """``verbose``, or 1 (a progress bar) when stdout is a terminal and 2 (a line per period) when not."""
    if verbose is not None:
        return verbose
    return 1 if sys.stdout.isatty() else 2


def validation_evaluator(config: Config, split: Split, devices: Devices | None = None) -> Evaluator | None:
    """The evaluator of the validation periods (a seeded sample of ``eval_users`` validation users, training
    items masked; sharded over the replicas of ``devices``); None without validation pairs."""
    if not split.valid.nnz:
        return None
    users = sample_users(split.valid, config.eval_users, config.seed)
    evaluator = Evaluator(split.train, split.valid, k=config.k, users=users)
    return devices.evaluator(evaluator) if devices is not None else evaluator


def training_callbacks(
    config: Config, schedule: Schedule, run: RunPlace, state: RunState, split: Split, verbose: int
) -> list[keras.callbacks.Callback]:
    """Validation + checkpoints + metrics.csv, TensorBoard, progress (``verbose``), early stopping and the
    training-time budget (after the validation, which writes the period's row it reads)."""
    pairs = split.train.nnz
    evaluator = validation_evaluator(config, split, run.devices)
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
    if config.max_train_seconds is not None:
        callbacks.append(TimeBudget(state.rows, config.max_train_seconds))
    return callbacks
