"""Stage 2's cost before and after a change: the |N_ij| = 1 stage-2 draw of an earlier commit against this tree's.

    python experiments/bench_stage2.py --before=3b5dd16

Times ``two_stage_select`` (B = 256 positives, C = 2000 candidates, d = 128) of ``cml_tf/samplers.py`` at the
``--before`` commit and of the working tree, with the weight uncapped, at the default cap λ and with a cut-off,
alternating the variants over ``--rounds`` rounds in one process, so that the ratios hold even on a busy machine.
Prints a Markdown table of the median milliseconds per call and the ratio to the earlier code.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def load_samplers_at(rev: str):
    """cml_tf/samplers.py as it was at ``rev``, imported as a stand-alone module."""
    source = subprocess.run(
        ["git", "show", f"{rev}:cml_tf/samplers.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    path = os.path.join(tempfile.mkdtemp(), "samplers_before.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("samplers_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", default="3b5dd16", help="the earlier commit")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--calls", type=int, default=50, help="calls per variant and round")
    args = p.parse_args(argv)

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
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            for _ in range(args.calls):
                out = fn()
            out.numpy()
            times[name].append((time.perf_counter() - t0) / args.calls * 1e3)
    base = float(np.median(times[next(iter(variants))]))
    print(f"| stage 2, B={batch}, C={candidates}, d={dim}, \\|N_ij\\| = 1 | median ms / call | ratio |")
    print("|---|---:|---:|")
    for name, values in times.items():
        print(f"| {name} | {np.median(values):.2f} | {np.median(values) / base:.2f} |")


if __name__ == "__main__":
    main()
