"""The commands as a user runs them, for the tests: one subprocess runner, and a training run killed mid-way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from cml_tf.training.config import Config
from cml_tf.training.outputs import read_metrics_csv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: a synthetic data set small enough to train in seconds
TINY = {"num_users": 300, "num_items": 500, "num_interactions": 6000}


def tiny_config(**kw) -> Config:
    """A run on `TINY` in seconds: 60 steps of 64 pairs validated every 20 (the fields given override)."""
    values = dict(
        dataset="synthetic",
        dataset_options=TINY,
        batch_size=64,
        num_candidates=200,
        max_steps=60,
        eval_every=20,
        steps_per_execution=10,
        learning_rate=1e-3,
    )
    values.update(kw)
    return Config(**values)


def run_command(module, *args, timeout=300, cwd=ROOT, env=None, pythonpath=None, user_env=False):
    """``python -m <module> <args>`` from ``cwd`` (the project root), stdout and stderr captured as text.

    TensorFlow's own log lines are silenced (``TF_CPP_MIN_LOG_LEVEL=3``) unless ``user_env``: then the environment is
    the user's (no ``TF_CPP_MIN_LOG_LEVEL`` of ours), to check what the command prints by itself. The project root
    (after ``pythonpath``) is on ``PYTHONPATH``, so the command finds the checkout from any ``cwd``; no GPU.
    """
    environ = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if not user_env:
        environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    environ["CUDA_VISIBLE_DEVICES"] = ""
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, ROOT) if p)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**environ, **(env or {})},
    )


def kill_training(args, model_dir: str, rows: int = 2, timeout: float = 240) -> bool:
    """Starts ``python -m cml_tf.train <args>`` and kills it (SIGKILL) once metrics.csv holds ``rows`` rows: with two,
    the first validation's checkpoint (written just after its row) exists. Returns whether it was killed (False: the
    run ended first)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cml_tf.train", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    metrics = os.path.join(model_dir, "metrics.csv")
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(metrics) and len(read_metrics_csv(metrics)) >= rows:
            break
        time.sleep(0.1)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return killed


def synthetic_config(num_users: int, num_items: int, num_interactions: int, **fields):
    """The `Config` of a run on the embedded synthetic data set of that size (``fields`` as `Config`'s)."""
    from cml_tf.training.config import Config

    size = {"num_users": num_users, "num_items": num_items, "num_interactions": num_interactions}
    return Config(dataset="synthetic", dataset_options=size, **fields)
