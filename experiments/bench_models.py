"""Training pairs/s and full-ranking evaluation time per model (`cml_tf.models`), at experiments/hlr_table.py's
settings.

    python -m experiments.bench_models                       # ml-100k (10-core, ratings >= 4), fo split
    python -m experiments.bench_models --models=cml,hlr --steps=100

For each model: a fresh instance at the table's settings (d = 100, batch 1,000, one uniform negative, ball, Adam,
M = 20, P = 50; CML also with the 2-stage sampler), warmed up by one `fit` of ``--warmup`` steps (tracing), then
timed over one `fit` of ``--steps`` steps (20 steps per compiled call); then every test user is ranked against the
whole catalog twice with the evaluator (`Evaluator.evaluate_model`: one matmul per batch for CML, chunks of users x
items for the relational models) and the second call is timed (the first one traces). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.bench_models")
    p.add_argument("--models", default="cml-uniform,cml-2stage,lrml,transcf,attcml,hlr")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=40)
    args = p.parse_args(argv)

    from cml_tf.cli import console

    console.setup_logging(False)
    console.import_tensorflow(False)
    warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed")
    import dataclasses

    from cml_tf.data import loaders
    from cml_tf.evaluation.evaluator import Evaluator
    from cml_tf.sampling.pipeline import SamplerSpec, TrainingStream
    from cml_tf.training.data import fit_to_data, split_data
    from cml_tf.training.run import build_model
    from experiments.hlr_table import DATASETS, run_config

    name, path, options = DATASETS["ml-100k"]
    interactions = loaders.load(name, path, **options)
    settings = argparse.Namespace(epochs=1.0, evals=1, eval_users=None)
    split = split_data(run_config(settings, "ml-100k", "cml-uniform", 0, 1), interactions)
    seen = (split.train + split.valid).tocsr()
    print(
        f"ml-100k: {interactions.n_users:,} users x {interactions.n_items:,} items; "
        f"{split.train.nnz:,} training pairs; {args.steps} timed steps of 1,000 pairs",
        flush=True,
    )
    print("| model | pairs/s | ms/step | full ranking s | users | chunk |\n|---|---:|---:|---:|---:|---:|")
    for method in args.models.split(","):
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
        chunk = getattr(evaluator, "last_chunk", None) if model.relational else "–"
        print(
            f"| {method} | {args.steps * config.batch_size / seconds:,.0f} | {1000 * seconds / args.steps:.1f} | "
            f"{ranking:.2f} | {len(evaluator.users):,} | {chunk} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
