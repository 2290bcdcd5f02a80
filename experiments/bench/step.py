"""Where a 2-stage training step's time goes: the step alone, the step fed by the input pipeline, the pipeline alone.

    python -m experiments.bench step --num_negatives=5 --rounds=3 \
        --variants='{"default": {}, "independent draws": {"stage2_replacement": true}, "no GOR": {"gor_weight": 0}}'

Each round times, one after the other, the hinge floor (`experiments.bench.timing.run_floor`, a fresh process) and
for every variant (Config fields changed from the defaults) `CML.fit` through `experiments.bench.timing.time_training`
twice: on the stream's first batch repeated (the step alone) and on the real `TrainingStream` (step + pipeline);
then the pipeline alone (batches pulled from ``TrainingStream.dataset()``, no model). Reports the medians over the
rounds: ms a step, the floor's ms over each, and what the pipeline adds when it shares the cores.
"""

from __future__ import annotations

import time

from experiments.bench.flags import common
from experiments.bench.report import Table, median, spread
from experiments.bench.timing import alternate, run_floor, synthetic_train, time_training


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


def add_arguments(p) -> None:
    """The step benchmark's flags."""
    common(p, users=31500, items=26000, nnz=1_000_000, num_negatives=5, batch_size=256, steps=400, rounds=3)
    common(p, variants={"default": {}})


def run(args) -> list[Table]:
    """One table: the floor, each variant alone and fed, the pipeline alone."""
    train = synthetic_train(args.users, args.items, args.nnz)
    n, b = args.num_negatives, args.batch_size
    measures = {"floor": lambda: run_floor("hinge", args.users, args.items, b, n)["ms_per_step"]}
    for name, fields in args.variants.items():
        measures[f"{name}: the step alone"] = lambda f=fields: time_training(
            train, "2stage", b, n, args.steps, overrides=f, cached=True
        )["ms_per_step"]
        measures[f"{name}: the step fed by the pipeline"] = lambda f=fields: time_training(
            train, "2stage", b, n, args.steps, overrides=f
        )["ms_per_step"]
    measures["pipeline"] = lambda: time_pipeline(train, n, args.steps, b)
    ms = alternate(args.rounds, measures)
    floor_ms = median(ms["floor"])

    def line(measured: str, key: str, **extra) -> dict:
        value = median(ms[key])
        return {"measured": measured, "ms_per_step": value, "ms min..max": spread(ms[key]), **extra}

    rows = [line("floor (bare TF step, no optimizer)", "floor", **{"floor / this": 1.0})]
    for name in args.variants:
        alone, fed = f"{name}: the step alone", f"{name}: the step fed by the pipeline"
        rows.append(line(alone, alone, **{"floor / this": floor_ms / median(ms[alone])}))
        adds = median(ms[fed]) - median(ms[alone])
        rows.append(line(fed, fed, **{"floor / this": floor_ms / median(ms[fed]), "pipeline adds (ms)": adds}))
    rows.append(line("the 2-stage input pipeline alone", "pipeline"))
    heading = (
        f"2-stage step time (B={b}, |N|={n}, C=2000, d=128, {args.users:,} x {args.items:,}, {args.nnz:,} pairs): "
        f"median of {args.rounds} alternating rounds of {args.steps} steps"
    )
    return [Table(heading, ["measured", "ms_per_step", "ms min..max", "floor / this", "pipeline adds (ms)"], rows)]
