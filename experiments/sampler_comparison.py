"""Issue 3's check of the paper's claims on citeulike-t, at an equal number of training pairs for every run.

    python experiments/sampler_comparison.py --data_path=../shared/data/citeulike-t --pairs=2000000

Runs (original 3:1:1 split, d=128, |N_ij|=1, Adam lr 1e-4 lazy unless noted): uniform@4096, uniform@256,
popular@256, 2stage@256 (the default stage 2), with --dense the same 2stage@256 and uniform@256 with the exact
dense Adam (``--nosparse_updates``: Keras' Adam on gradients whose repeated rows are summed, as TF1's), with
--unsummed the same two on Keras 3's Adam as it is (each repeated row of an embedding gradient squared on its own:
Σg² instead of (Σg)², cml_tf's dense path before it summed them), and with --stage2_caps=1,none 2stage@256 with
stage 2's weight capped at each λ (``--stage2_weight_cap``; none = the paper's uncapped weight).
Prints one Markdown table of validation NDCG@50 / MAP@50 / Recall@50 / MMR (best validation evaluation), the test
metrics of that checkpoint, and the training throughput; writes it to <out_dir>/comparison.md.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

RUNS = [
    ("uniform@4096", {"sampler": "uniform", "batch_size": 4096}),
    ("uniform@256", {"sampler": "uniform", "batch_size": 256}),
    ("popular@256", {"sampler": "popular", "batch_size": 256}),
    ("2stage@256", {"sampler": "2stage", "batch_size": 256}),
]
DENSE_RUNS = [
    ("2stage@256 dense Adam", {"sampler": "2stage", "batch_size": 256, "sparse_updates": False}),
    ("uniform@256 dense Adam", {"sampler": "uniform", "batch_size": 256, "sparse_updates": False}),
]
UNSUMMED = " rows not summed"  # run-name suffix: Keras 3's Adam as it is (see the module docstring)
UNSUMMED_RUNS = [(name + UNSUMMED, overrides) for name, overrides in DENSE_RUNS]


def keras_adam_as_is(name, learning_rate, sparse=True, max_row_norm=None):
    """`cml_tf.training.optimizers.make_optimizer`, but Keras 3's own dense Adam (repeated rows not summed)."""
    import keras

    from cml_tf.training.optimizers import make_optimizer

    if name == "adam" and not sparse:
        return keras.optimizers.Adam(learning_rate=learning_rate)
    return make_optimizer(name, learning_rate, sparse=sparse, max_row_norm=max_row_norm)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_path", default=os.path.join(ROOT, "..", "shared", "data", "citeulike-t"))
    p.add_argument("--out_dir", default=os.path.join(ROOT, "experiments", "runs", "sampler_comparison"))
    p.add_argument("--pairs", type=int, default=2_000_000, help="training pairs per run (steps = pairs / batch)")
    p.add_argument("--evals", type=int, default=8, help="validation evaluations per run")
    p.add_argument("--dense", action="store_true", help="also run the dense-Adam variants")
    p.add_argument("--unsummed", action="store_true", help="also run them on Keras 3's Adam as it is")
    p.add_argument("--learning_rate", type=float, default=None)
    p.add_argument("--only", default=None, help="comma list of run names to run")
    p.add_argument(
        "--stage2_caps",
        default="",
        help="comma list of --stage2_weight_cap values (λ >= 1, or none): extra 2stage@256 runs",
    )
    args = p.parse_args(argv)

    from cml_tf.io import write_text_atomic
    from cml_tf.training import run as training
    from cml_tf.training.config import Config
    from cml_tf.training.data import load_data

    base = Config(
        dataset="citeulike", data_path=os.path.abspath(args.data_path), split="original", split_seed=1, seed=1
    )
    data = load_data(base)
    rows = []
    runs = RUNS + (DENSE_RUNS if args.dense else []) + (UNSUMMED_RUNS if args.unsummed else [])
    for cap in filter(None, args.stage2_caps.split(",")):
        value = None if cap.strip().lower() == "none" else float(cap)
        runs.append((f"2stage@256 cap {cap}", {"sampler": "2stage", "batch_size": 256, "stage2_weight_cap": value}))
    if args.only:
        runs = [r for r in runs if r[0] in args.only.split(",")]
    for name, overrides in runs:
        steps = args.pairs // overrides["batch_size"]
        eval_every = max(20, steps // args.evals // 20 * 20)
        extra = {"learning_rate": args.learning_rate} if args.learning_rate else {}
        config = Config(**{**base.to_dict(), **overrides, **extra, "max_steps": steps, "eval_every": eval_every})
        model_dir = os.path.join(args.out_dir, name.replace("@", "_b").replace(" ", "_"))
        if os.path.exists(os.path.join(model_dir, "config.json")):
            # a run of an older version of the code / other settings: start afresh rather than refuse
            saved = Config.load(os.path.join(model_dir, "config.json"))
            if saved != config.resolved():
                import shutil

                shutil.rmtree(model_dir)
        build = training.make_optimizer  # build_model's optimizer factory, swapped for the unsummed runs
        if name.endswith(UNSUMMED):
            training.make_optimizer = keras_adam_as_is
        try:
            results = training.train(config, model_dir, data=data, verbose=0)
        finally:
            training.make_optimizer = build
        v = results["valid"]
        rows.append(
            f"| {name} | {steps * overrides['batch_size']:,} | {v['ndcg@50']:.4f} | {v['map@50']:.4f} | "
            f"{v['recall@50']:.4f} | {v['mmr']:.1f} | {results['ndcg@50']:.4f} | {results['map@50']:.4f} | "
            f"{results['recall@50']:.4f} | {results['mmr']:.1f} | {results['pairs_per_sec']:,.0f} |"
        )
        print(rows[-1], flush=True)
    header = (
        "| run | pairs | val NDCG@50 | val MAP@50 | val Recall@50 | val MMR | test NDCG@50 | test MAP@50 | "
        "test Recall@50 | test MMR | pairs/s (median) |\n|" + "---|" * 11
    )
    table = header + "\n" + "\n".join(rows) + "\n"
    print(table)
    write_text_atomic(os.path.join(args.out_dir, "comparison.md"), table)


if __name__ == "__main__":
    main()
