"""Speed benchmark of cml_tf on this machine: prints one Markdown table per part.

Usage (from the repository root):
    python experiments/benchmark.py                    # everything (training grid, floor, evaluation, 48M-row load)
    python experiments/benchmark.py --quick            # a smaller grid, no 48M-row load
    python experiments/benchmark.py --parts=train,floor --catalogs=26000,160000 --repeats=3

Training throughput is measured through the real path (`TrainingStream` -> `CML.fit` with the lazy optimizer and
20 steps per execution), as positive pairs per second: the median over ``--repeats`` fresh model instances, each
warmed up and then timed over one ``fit`` of ``--steps`` steps.
The speed floor is ../shared/bench/floor.py (a bare TF 2-stage forward/backward + stage 2, no optimizer) run in
the same session, so the two are compared as a ratio measured together.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import re
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

FLOOR = os.path.join(ROOT, "..", "shared", "bench", "floor.py")


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
    train, sampler, batch_size, num_negatives, steps, repeats, dense=False, overrides=None, cached=False
) -> dict:
    """Median ms/step and pairs/s of `CML.fit` on ``train``, over ``repeats`` fresh model instances (``overrides``:
    Config fields changed from the defaults, e.g. ``{"stage2_replacement": True}``; ``cached``: the step alone, on
    the stream's first batch repeated, without the input pipeline's work).

    Each repeat builds a new model (speed can differ between instances of the same model: memory placement, thread
    scheduling), warms it up (tracing, first steps), then times one ``fit`` of ``steps`` steps.
    """
    import warnings

    import keras

    warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed")
    from cml_tf.sampling.pipeline import SamplerSpec, TrainingStream
    from cml_tf.training.config import Config
    from cml_tf.training.run import build_model

    config = Config(
        sampler=sampler,
        batch_size=batch_size,
        num_negatives=num_negatives,
        sparse_updates=not dense,
        **(overrides or {}),
    ).resolved()
    spec = SamplerSpec(sampler=sampler, batch_size=batch_size, num_negatives=num_negatives)
    stream = TrainingStream(train, spec, seed=0)
    spe = 20 if steps % 20 == 0 else 1
    dataset = stream.dataset()
    if cached:
        dataset = dataset.take(1).cache().repeat()
    times = []
    for _ in range(repeats):
        model = build_model(config, *train.shape, steps_per_execution=spe)
        model.fit(dataset, epochs=1, steps_per_epoch=2 * spe, verbose=0)  # trace + warm-up
        t = time.perf_counter()
        model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
        times.append((time.perf_counter() - t) / steps)
        del model
        keras.backend.clear_session()
        gc.collect()
    ms = float(np.median(times)) * 1e3
    return {
        "ms_per_step": ms,
        "pairs_per_s": batch_size / ms * 1e3,
        "spread": f"{min(times) * 1e3:.2f}..{max(times) * 1e3:.2f}",
    }


def run_floor(n_users: int, n_items: int, batch: int = 256, num_negatives: int = 1) -> dict | None:
    """The speed floor: ../shared/bench/floor.py at |N_ij| = 1, experiments/floor.py (its idea at any |N_ij|)."""
    if num_negatives == 1 and not os.path.exists(FLOOR):
        return None
    script = FLOOR if num_negatives == 1 else os.path.join(ROOT, "experiments", "floor.py")
    command = [sys.executable, script, str(n_users), str(n_items), str(batch), str(num_negatives)]
    out = subprocess.run(command, capture_output=True, text=True, check=False).stdout
    m = re.search(r"([\d.]+) ms/step, ([\d,]+) pos pairs/s", out)
    return {"ms_per_step": float(m.group(1)), "pairs_per_s": float(m.group(2).replace(",", ""))} if m else None


def table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="26k and 160k items, batch 256 only, no 48M-row load")
    p.add_argument("--parts", default="train,floor,eval,load", help="comma list of: train, floor, eval, load")
    p.add_argument("--catalogs", default="26000,160000,1000000", help="item counts for the training grid")
    p.add_argument("--samplers", default="uniform,popular,2stage")
    p.add_argument("--negatives", default="1,5")
    p.add_argument("--batches", default="256,4096")
    p.add_argument("--users", type=int, default=31500)
    p.add_argument("--nnz", type=int, default=1_000_000)
    p.add_argument("--steps", type=int, default=200, help="timed steps per repeat (batch 4096 uses a quarter)")
    p.add_argument("--repeats", type=int, default=3, help="fresh model instances per cell (median)")
    p.add_argument("--floor_rounds", type=int, default=5, help="alternating floor / cml_tf rounds (medians)")
    p.add_argument("--dense", action="store_true", help="also time Keras' dense Adam at 2stage/256/N=1")
    p.add_argument("--load_rows", type=int, default=48_373_586)
    p.add_argument("--eval_users", type=int, default=30000)
    p.add_argument("--eval_items", type=int, default=160000)
    args = p.parse_args(argv)
    parts = set(args.parts.split(","))
    catalogs = [int(c) for c in args.catalogs.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    if args.quick:
        catalogs, batches = [c for c in catalogs if c <= 160000], [256]
        parts.discard("load")

    import tensorflow as tf

    print(
        f"# cml_tf benchmark — {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"TF {tf.__version__}, {time.strftime('%Y-%m-%d')}\n"
    )
    print(f"command: python experiments/benchmark.py {' '.join(argv if argv is not None else sys.argv[1:])}\n")

    if "train" in parts:
        rows = []
        for n_items in catalogs:
            train = synthetic_train(args.users, n_items, args.nnz)
            for sampler in args.samplers.split(","):
                for n in (int(x) for x in args.negatives.split(",")):
                    for b in batches:
                        steps = max(20, args.steps if b <= 256 else args.steps // 4 // 20 * 20)
                        r = time_training(train, sampler, b, n, steps, args.repeats)
                        rows.append({"items": n_items, "sampler": sampler, "|N|": n, "batch": b, **r})
                        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
            if args.dense:
                r = time_training(train, "2stage", 256, 1, args.steps // 4 // 20 * 20 or 20, args.repeats, dense=True)
                rows.append({"items": n_items, "sampler": "2stage (dense Adam)", "|N|": 1, "batch": 256, **r})
            del train
            gc.collect()
        print(
            f"## Training throughput (positive pairs/s; median of {args.repeats} model instances, "
            "spread = ms/step min..max)\n"
        )
        print(table(rows, ["items", "sampler", "|N|", "batch", "ms_per_step", "pairs_per_s", "spread"]))
        if len(catalogs) > 1:
            lo, hi = min(catalogs), max(catalogs)
            print(f"\n## Step time at {hi:,} items / step time at {lo:,} items (target <= 1.5)\n")
            ratios = []
            for r in rows:
                if r["items"] == hi and "dense" not in r["sampler"]:
                    base = next(
                        x for x in rows if x["items"] == lo and all(x[k] == r[k] for k in ("sampler", "|N|", "batch"))
                    )
                    ratios.append(
                        {
                            **{k: r[k] for k in ("sampler", "|N|", "batch")},
                            "ratio": r["ms_per_step"] / base["ms_per_step"],
                        }
                    )
            print(table(ratios, ["sampler", "|N|", "batch", "ratio"]))
        print()

    if "floor" in parts:
        rows = []
        for n_items in [c for c in catalogs if c <= 160000] or catalogs[:1]:
            train = synthetic_train(args.users, n_items, args.nnz)
            if run_floor(args.users, 1000) is None:
                print(f"(speed floor skipped: {FLOOR} not found)\n")
                break
            # Alternate the two, each round with a fresh process / model, so that both see the same machine state;
            # medians over rounds.
            floors, ours = [], []
            for _ in range(args.floor_rounds):
                floors.append(run_floor(args.users, n_items)["pairs_per_s"])
                ours.append(time_training(train, "2stage", 256, 1, 3 * args.steps, 1)["pairs_per_s"])
            f, o = float(np.median(floors)), float(np.median(ours))
            print(f"  floor rounds {floors}, cml_tf rounds {[round(x) for x in ours]}", file=sys.stderr, flush=True)
            rows.append(
                {
                    "items": n_items,
                    "floor_pairs_per_s": f,
                    "cml_tf_pairs_per_s": o,
                    "cml_tf / floor": o / f,
                    "cml_tf min..max": f"{min(ours):,.0f}..{max(ours):,.0f}",
                }
            )
        if rows:
            print("## 2-stage training (d=128, B=256, C=2000, |N|=1) against the bare-TF floor (target >= 0.60)\n")
            print(
                table(rows, ["items", "floor_pairs_per_s", "cml_tf_pairs_per_s", "cml_tf / floor", "cml_tf min..max"])
            )
            print()

    if "eval" in parts:
        from experiments.bench_eval import run_eval_benchmark

        r = run_eval_benchmark(n_users=args.eval_users, n_items=args.eval_items)
        size = f"{args.eval_users:,} users x {args.eval_items:,} items"
        print(f"## Evaluation: full ranking, k=50, {size} (target < 60 s)\n")
        print(table([r], ["users", "items", "batch_size", "seconds", "users_per_s"]))
        print()

    if "load" in parts:
        from experiments.bench_load import run_load_benchmark

        r = run_load_benchmark(rows=args.load_rows, keep=False)
        print(f"## Raw Echonest-format load, {args.load_rows:,} rows (target < 120 s, < 8 GB)\n")
        print(table([r], ["rows", "file_gb", "load_s", "peak_rss_gb", "users", "items", "interactions"]))
        print()


if __name__ == "__main__":
    main()
