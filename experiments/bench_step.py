"""Where a 2-stage training step's time goes: the step alone, the step fed by the input pipeline, the pipeline alone.

    python experiments/bench_step.py --num_negatives=5 --rounds=3 \
        --variants='{"default": {}, "independent draws": {"stage2_replacement": true}, "no GOR": {"gor_weight": 0}}'

Each round times, one after the other, the speed floor (`experiments.benchmark.run_floor`, a fresh process) and
for every variant (Config fields changed from the defaults) `CML.fit` through `experiments.benchmark.time_training`
twice: on the stream's first batch repeated (the step alone) and on the real `TrainingStream` (step + pipeline);
then the pipeline alone (batches pulled from ``TrainingStream.dataset()``, no model). Prints a Markdown table of the
medians over the rounds: ms a step, the floor's ms over each, and what the pipeline adds when it shares the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from experiments.benchmark import run_floor, synthetic_train, table, time_training  # noqa: E402


def time_pipeline(train, num_negatives: int, batches: int, batch_size: int = 256) -> float:
    """ms per 2-stage batch of ``TrainingStream.dataset()`` alone (after a warm-up of 10 batches)."""
    from cml_tf.sampling.pipeline import SamplerSpec, TrainingStream

    spec = SamplerSpec(sampler="2stage", batch_size=batch_size, num_negatives=num_negatives)
    it = iter(TrainingStream(train, spec, seed=0).dataset())
    for _ in range(10):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return (time.perf_counter() - start) / batches * 1e3


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=31500)
    p.add_argument("--items", type=int, default=26000)
    p.add_argument("--nnz", type=int, default=1_000_000)
    p.add_argument("--num_negatives", type=int, default=5)
    p.add_argument("--steps", type=int, default=400, help="timed steps per measurement (after a warm-up)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--variants", default='{"default": {}}', help="JSON: name -> Config fields")
    args = p.parse_args(argv)
    try:
        variants = json.loads(args.variants)
    except json.JSONDecodeError as e:
        p.error(f"--variants is not JSON: {e}")
    if not isinstance(variants, dict) or not all(isinstance(v, dict) for v in variants.values()):
        p.error("--variants must be a JSON object of name -> object of Config fields")
    train = synthetic_train(args.users, args.items, args.nnz)
    n = args.num_negatives
    floor, pipeline = [], []
    step = {name: [] for name in variants}
    stream = {name: [] for name in variants}
    for r in range(args.rounds):
        measured = run_floor(args.users, args.items, 256, n)
        floor.append(measured["ms_per_step"] if measured else float("nan"))
        for name, fields in variants.items():
            step[name].append(time_training(train, "2stage", 256, n, args.steps, 1, overrides=fields, cached=True))
            stream[name].append(time_training(train, "2stage", 256, n, args.steps, 1, overrides=fields))
        pipeline.append(time_pipeline(train, n, args.steps))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    floor_ms = float(np.median(floor))
    rows = [{"measured": "floor (bare TF step, no optimizer)", "ms_per_step": floor_ms, "floor / this": 1.0}]
    for name in variants:
        alone = float(np.median([x["ms_per_step"] for x in step[name]]))
        fed = float(np.median([x["ms_per_step"] for x in stream[name]]))
        rows.append({"measured": f"{name}: the step alone", "ms_per_step": alone, "floor / this": floor_ms / alone})
        rows.append(
            {
                "measured": f"{name}: the step fed by the pipeline",
                "ms_per_step": fed,
                "floor / this": floor_ms / fed,
                "pipeline adds (ms)": fed - alone,
            }
        )
    rows.append({"measured": "the 2-stage input pipeline alone", "ms_per_step": float(np.median(pipeline))})
    print(
        f"## 2-stage step time (B=256, |N|={n}, C=2000, d=128, {args.users:,} x {args.items:,}, {args.nnz:,} pairs): "
        f"median of {args.rounds} rounds of {args.steps} steps\n"
    )
    print(table(rows, ["measured", "ms_per_step", "floor / this", "pipeline adds (ms)"]))


if __name__ == "__main__":
    main()
