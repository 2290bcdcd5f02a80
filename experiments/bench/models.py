"""Training pairs/s and full-ranking evaluation time per model (`cml_tf.models`), at experiments/hlr_table.py's
settings.

    python -m experiments.bench models                       # ml-100k (10-core, ratings >= 4), fo split
    python -m experiments.bench models --models=cml-uniform,hlr --steps=100

For each model: a fresh instance at the table's settings (d = 100, batch 1,000, one uniform negative, ball, Adam,
M = 20, P = 50; CML also with the 2-stage sampler), warmed up by one `fit` of ``--warmup`` steps (tracing), then
timed over one `fit` of ``--steps`` steps (20 steps per compiled call); then every test user is ranked against the
whole catalog twice with the evaluator (`Evaluator.evaluate_model`: one matmul per batch for CML, chunks of users x
items for the relational models) and the second call is timed (the first one traces).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

from experiments.bench.flags import common, names
from experiments.bench.report import Table

COLUMNS = ["model", "pairs/s", "ms/step", "full ranking s", "users", "chunk"]


def add_arguments(p) -> None:
    """The model benchmark's flags."""
    p.add_argument("--models", type=names, default=["cml-uniform", "cml-2stage", "lrml", "transcf", "attcml", "hlr"])
    p.add_argument("--warmup", type=int, default=40, help="steps of the warm-up fit (tracing)")
    common(p, steps=200)


def run(args) -> list[Table]:
    """One row per model."""
    import dataclasses

    from cml_tf.data import loaders
    from cml_tf.evaluation.evaluator import Evaluator
    from cml_tf.sampling.pipeline import SamplerSpec, TrainingStream
    from cml_tf.training.data import fit_to_data, split_data
    from cml_tf.training.run import build_model
    from experiments.hlr_table import DATASETS, run_config

    warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed")
    name, path, options = DATASETS["ml-100k"]
    interactions = loaders.load(name, path, **options)
    settings = argparse.Namespace(epochs=1.0, evals=1, eval_users=None)
    split = split_data(run_config(settings, "ml-100k", "cml-uniform", 0, 1), interactions)
    seen = (split.train + split.valid).tocsr()
    rows = []
    for method in args.models:
        config = run_config(settings, "ml-100k", method, 0, split.train.nnz, 5e-3)
        config = fit_to_data(dataclasses.replace(config, steps_per_execution=20).resolved(), split)
        model = build_model(config, *split.train.shape, steps_per_execution=20, train=split.train)
        spec = SamplerSpec(config.sampler, config.batch_size, config.num_negatives, config.num_candidates)
        stream = TrainingStream(split.train, spec, seed=0)
        model.fit(stream.dataset(0, args.warmup), epochs=1, steps_per_epoch=args.warmup, verbose=0)
        t0 = time.perf_counter()
        model.fit(stream.dataset(args.warmup, args.steps), epochs=1, steps_per_epoch=args.steps, verbose=0)
        seconds = time.perf_counter() - t0
        evaluator = Evaluator(seen, split.test, k=10)
        evaluator.evaluate_model(model)
        t0 = time.perf_counter()
        evaluator.evaluate_model(model)
        ranking = time.perf_counter() - t0
        rows.append(
            {
                "model": method,
                "pairs/s": args.steps * config.batch_size / seconds,
                "ms/step": 1000 * seconds / args.steps,
                "full ranking s": ranking,
                "users": len(evaluator.users),
                "chunk": getattr(evaluator, "last_chunk", None) if model.relational else "–",
            }
        )
        print(f"{method}: {rows[-1]}", file=sys.stderr, flush=True)
    heading = (
        f"ml-100k: {interactions.n_users:,} users x {interactions.n_items:,} items; {split.train.nnz:,} training "
        f"pairs; {args.steps} timed steps of 1,000 pairs"
    )
    return [Table(heading, COLUMNS, rows)]
