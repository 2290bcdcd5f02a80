"""The timing loops the subcommands share: repeated calls, A/B rounds alternated, cml_tf training through its real
path, and the bare-TF speed floors run in fresh processes.

The floors: ``hinge`` is ../shared/bench/floor.py (forward + backward + stage 2 of the 2-stage triplet hinge, no
optimizer update; at |N_ij| > 1 this package's `floor_n.py`, the same step at that |N_ij|), ``softmax`` is
../shared/bench/floor_softmax.py (the sampled softmax over C shared candidates, no optimizer update). Both print
``... X ms/step, Y pos pairs/s``.
"""

from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from experiments.bench.report import ROOT

SHARED_BENCH = os.path.join(ROOT, "..", "shared", "bench")
#: --floor name -> the floor script (../shared/bench)
FLOORS = {"hinge": os.path.join(SHARED_BENCH, "floor.py"), "softmax": os.path.join(SHARED_BENCH, "floor_softmax.py")}
#: the hinge floor's step at any |N_ij|
FLOOR_N = os.path.join(ROOT, "experiments", "bench", "floor_n.py")


class FloorMissing(Exception):
    """A floor script is absent or printed no figure."""


def repeat(fn: Callable[[], object], times: int) -> tuple[list[float], object]:
    """Calls ``fn`` ``times`` times.

    Returns:
        (the seconds of each call, the last call's result).
    """
    seconds, result = [], None
    for _ in range(times):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return seconds, result


def alternate(rounds: int, measures: dict[str, Callable[[], float]], label: str = "") -> dict[str, list[float]]:
    """Runs every measure once a round, in order, for ``rounds`` rounds (so all see the same machine state).

    Args:
        rounds: how many rounds.
        measures: name -> a call returning one figure.
        label: what the progress line on stderr says after each round.

    Returns:
        name -> the figure of each round.
    """
    figures: dict[str, list[float]] = {name: [] for name in measures}
    for r in range(rounds):
        for name, measure in measures.items():
            figures[name].append(measure())
        done = ", ".join(f"{name} {values[-1]:,.2f}" for name, values in figures.items())
        print(f"{label}round {r + 1}/{rounds}: {done}", file=sys.stderr, flush=True)
    return figures


def synthetic_train(n_users: int, n_items: int, nnz: int, seed: int = 0) -> sp.csr_matrix:
    """Random training matrix with Zipf-like item popularity (the popular / 2-stage samplers see a skew)."""
    rng = np.random.default_rng(seed)
    items = (rng.zipf(1.2, nnz) - 1) % n_items
    items = rng.permutation(n_items)[items]  # popular items scattered over the id range
    users = rng.integers(0, n_users, nnz)
    m = sp.csr_matrix((np.ones(nnz, np.float32), (users, items)), shape=(n_users, n_items))
    m.data[:] = 1.0
    return m


def time_training(
    train,
    sampler: str = "2stage",
    batch_size: int = 256,
    num_negatives: int = 1,
    steps: int = 200,
    repeats: int = 1,
    dense: bool = False,
    overrides: dict | None = None,
    cached: bool = False,
    preset: str | None = None,
) -> dict:
    """Median ms/step and pairs/s of `CML.fit` on ``train`` over ``repeats`` fresh model instances.

    Each repeat builds a new model (speed can differ between instances of the same model: memory placement, thread
    scheduling), warms it up (tracing, first steps), then times one ``fit`` of ``steps`` steps, fed by the run's own
    `TrainingStream` (`cml_tf.training.run.training_stream`).

    Args:
        train: [n_users, n_items] training CSR.
        sampler, batch_size, num_negatives: the Config fields.
        steps: timed steps (20 per compiled call when a multiple of 20).
        repeats: fresh model instances.
        dense: Keras' dense optimizer instead of the lazy one.
        overrides: Config fields changed from the defaults (or the preset's), e.g. ``{"stage2_replacement": True}``.
        cached: the step alone, on the stream's first batch repeated, without the input pipeline's work.
        preset: the `cml_tf.training.config.PRESETS` entry to start from (e.g. ``"accurate"``).

    Returns:
        {"ms_per_step", "pairs_per_s" (medians), "ms": [each repeat's ms/step]}.
    """
    import warnings

    import keras

    warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed")
    from cml_tf.data.splits import Split
    from cml_tf.training.config import Config
    from cml_tf.training.run import build_model, training_stream

    fields = {"sampler": sampler, "batch_size": batch_size, "num_negatives": num_negatives, "sparse_updates": not dense}
    config = Config(preset=preset, **{**fields, **(overrides or {})}).resolved()
    empty = sp.csr_matrix(train.shape, dtype=np.float32)
    stream = training_stream(config, None, Split(train, empty, empty))
    spe = 20 if steps % 20 == 0 else 1
    dataset = stream.dataset()
    if cached:
        dataset = dataset.take(1).cache().repeat()
    ms = []
    for _ in range(repeats):
        model = build_model(config, *train.shape, steps_per_execution=spe, train=train)
        model.fit(dataset, epochs=1, steps_per_epoch=2 * spe, verbose=0)  # trace + warm-up
        start = time.perf_counter()
        model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
        ms.append((time.perf_counter() - start) / steps * 1e3)
        del model
        keras.backend.clear_session()
        gc.collect()
    median = float(np.median(ms))
    return {"ms_per_step": median, "pairs_per_s": config.batch_size / median * 1e3, "ms": ms}


def floor_script(floor: str, num_negatives: int = 1) -> str:
    """The script of a `FLOORS` name at |N_ij| = ``num_negatives`` (the hinge floor's at |N_ij| > 1: `FLOOR_N`)."""
    return FLOOR_N if floor == "hinge" and num_negatives != 1 else FLOORS[floor]


def run_floor(floor: str, n_users: int, n_items: int, batch: int = 256, num_negatives: int = 1) -> dict:
    """One run of a speed floor in a fresh process.

    Args:
        floor: a `FLOORS` name: "hinge" (at |N_ij| > 1: `FLOOR_N`) or "softmax" (|N_ij| does not enter it).
        n_users, n_items, batch: the floor's table sizes and batch.
        num_negatives: the hinge floor's |N_ij|.

    Returns:
        {"ms_per_step", "pairs_per_s"}.

    Raises:
        FloorMissing: the script is absent or printed no figure.
    """
    script = floor_script(floor, num_negatives)
    if not os.path.exists(script):
        raise FloorMissing(f"the speed floor {os.path.normpath(script)} was not found")
    command = [sys.executable, script, str(n_users), str(n_items), str(batch)]
    if script == FLOOR_N:
        command.append(str(num_negatives))
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    m = re.search(r"([\d.]+) ms/step, ([\d,]+) pos pairs/s", out.stdout)
    if not m:
        raise FloorMissing(f"the speed floor {os.path.normpath(script)} printed no figure: {out.stderr[-300:]}")
    return {"ms_per_step": float(m.group(1)), "pairs_per_s": float(m.group(2).replace(",", ""))}
