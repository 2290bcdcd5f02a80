"""Stage 2's cost before and after a change: the |N_ij| = 1 stage-2 draw of an earlier commit against this tree's.

    python -m experiments.bench stage2 --before=3b5dd16

Times ``two_stage_select`` (B = 256 positives, C = 2000 candidates, d = 128) of ``cml_tf/samplers.py`` at the
``--before`` commit and of the working tree, with the weight uncapped, at the default cap λ and with a cut-off,
alternating the variants over ``--rounds`` rounds in one process, so that the ratios hold even on a busy machine.
Reports the median milliseconds per call (min..max over the rounds) and the ratio to the earlier code.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import tempfile
import time

from experiments.bench.flags import common
from experiments.bench.report import ROOT, Table, median, spread
from experiments.bench.timing import alternate


def load_samplers_at(rev: str):
    """cml_tf/samplers.py as it was at ``rev``, imported as a stand-alone module."""
    shown = subprocess.run(["git", "show", f"{rev}:cml_tf/samplers.py"], cwd=ROOT, capture_output=True, text=True)
    if shown.returncode:
        from cml_tf.cli import console

        console.fail(f"--before: no cml_tf/samplers.py at {rev!r}")
    source = shown.stdout
    path = os.path.join(tempfile.mkdtemp(), "samplers_before.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("samplers_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def add_arguments(p) -> None:
    """The stage-2 benchmark's flags."""
    common(p, before="3b5dd16", rounds=15)
    p.add_argument("--calls", type=int, default=50, help="calls per variant and round")


def run(args) -> list[Table]:
    """One table: each variant's median ms a call and its ratio to the earlier commit's."""
    import numpy as np
    import tensorflow as tf

    from cml_tf.sampling import two_stage as after
    from cml_tf.training.config import Config

    before = load_samplers_at(args.before)
    rng = np.random.default_rng(0)
    batch, candidates, dim = 256, 2000, 128
    pos = tf.math.l2_normalize(tf.constant(rng.normal(size=(batch, dim)), tf.float32), -1)
    cand = tf.math.l2_normalize(tf.constant(rng.normal(size=(candidates, dim)), tf.float32), -1)
    mask = tf.constant(rng.random((batch, candidates)) < 0.01)
    seed = tf.constant([1, 2], tf.int64)
    cap = Config().stage2_weight_cap
    variants = {
        f"{args.before} (uncapped)": lambda: before.two_stage_select(pos, cand, mask, 1, seed),
        "this tree, uncapped": lambda: after.two_stage_select(pos, cand, mask, 1, seed, weight_cap=None),
        f"this tree, λ = {cap:g} (default)": lambda: after.two_stage_select(pos, cand, mask, 1, seed, weight_cap=cap),
        f"this tree, λ = {cap:g}, D_min = 1": lambda: after.two_stage_select(
            pos, cand, mask, 1, seed, weight_cap=cap, cutoff=1.0
        ),
    }
    for fn in variants.values():  # trace, compile, warm up
        for _ in range(10):
            fn().numpy()

    def ms_per_call(fn) -> float:
        t0 = time.perf_counter()
        for _ in range(args.calls):
            out = fn()
        out.numpy()
        return (time.perf_counter() - t0) / args.calls * 1e3

    times = alternate(args.rounds, {name: lambda fn=fn: ms_per_call(fn) for name, fn in variants.items()})
    base = median(times[next(iter(variants))])
    rows = [
        {"variant": name, "ms / call": median(v), "min..max": spread(v), "ratio": median(v) / base}
        for name, v in times.items()
    ]
    heading = f"Stage 2, B={batch}, C={candidates}, d={dim}, |N_ij| = 1: median of {args.rounds} alternating rounds"
    return [Table(heading, ["variant", "ms / call", "min..max", "ratio"], rows)]
