"""Approximate retrieval against exact ranking: recall@50 and queries/s of faiss HNSW / IVF vs brute force.

Usage::

    python experiments/bench_retrieval.py                                  # 160k and 1M items, d = 128
    python experiments/bench_retrieval.py --items=160000 --queries=500 --data=uniform

Tables are synthetic unit vectors (the sphere geometry of a trained model): ``clustered`` (default) draws items
and queries around 1,024 random centres (``normalize(centre + sigma * N(0, I/d))``, sigma = 1: cosine to its centre
about 0.7), which resembles trained embeddings; ``uniform`` draws them uniformly on the sphere, the hardest case for
an approximate index (no structure to exploit). The exact baseline is `cml_tf.serving.retrieval.ExactIndex`, the batched
brute force `python -m cml_tf.recommend --index=exact` uses; the approximate ones are `FaissIndex`, which also
re-scores their candidates exactly, as `recommend` does. Queries/s are medians over ``--repeats`` timings of the
whole query set (searched as one batch); speed-ups are ratios of medians within the same run. Recall@50 = mean over
queries of |approximate top 50 ∩ exact top 50| / 50.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from cml_tf.serving.retrieval import ExactIndex, FaissIndex, default_nlist  # noqa: E402

K = 50


def synthetic(
    n: int, dim: int, data: str, seed: int, centres: np.ndarray | None = None, sigma: float = 1.0
) -> np.ndarray:
    """[n, dim] float32 unit rows: clustered around ``centres`` or uniform on the sphere."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    step = 1 << 17
    for start in range(0, n, step):
        stop = min(n, start + step)
        x = rng.standard_normal((stop - start, dim), dtype=np.float32)
        if data == "clustered":
            x = centres[rng.integers(0, centres.shape[0], stop - start)] + sigma * x / np.sqrt(dim)
        out[start:stop] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """(median seconds, spread max/min, last result) of ``repeats`` calls."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), max(times) / min(times), result


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    hits = [np.intersect1d(a[a >= 0], e).size for a, e in zip(approx, exact)]
    return float(np.mean(hits)) / exact.shape[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, nargs="+", default=[160_000, 1_000_000])
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--data", choices=["clustered", "uniform"], default="clustered")
    p.add_argument("--sigma", type=float, default=1.5, help="clustered: noise scale around the centres")
    p.add_argument("--centres", type=int, default=1024, help="clustered: number of centres")
    p.add_argument("--items_per_centre", type=int, default=None, help="clustered: centres = items / this instead")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--hnsw_m", type=int, nargs="*", default=[32])
    p.add_argument("--ef_construction", type=int, default=64)
    p.add_argument("--ef_search", type=int, nargs="*", default=[128, 256, 512])
    p.add_argument("--nlist", type=int, default=None, help="default 4 sqrt(n)")
    p.add_argument("--nprobe", type=int, nargs="*", default=[32, 64, 128, 256])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    import faiss

    shape = ""
    if args.data == "clustered":
        per = f"items / {args.items_per_centre}" if args.items_per_centre else f"{args.centres}"
        shape = f" ({per} centres, sigma = {args.sigma})"
    threads = f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, {os.cpu_count()} CPUs"
    print(f"# {args.data} unit vectors{shape}, d = {args.dim}, {args.queries} queries, k = {K}, "
          f"median of {args.repeats}; {threads}")  # fmt: skip
    print("| index | items | build s | recall@50 | queries/s | speed-up vs exact | max/min time |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for n in args.items:
        rng = np.random.default_rng(args.seed)
        n_centres = max(1, round(n / args.items_per_centre)) if args.items_per_centre else args.centres
        centres = rng.standard_normal((n_centres, args.dim), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        items = synthetic(n, args.dim, args.data, args.seed + 1, centres, args.sigma)
        queries = synthetic(args.queries, args.dim, args.data, args.seed + 2, centres, args.sigma)
        t0 = time.perf_counter()
        exact = ExactIndex(items)
        build = time.perf_counter() - t0
        exact.search(queries[:8], K)  # trace once
        sec, spread, (_, truth) = timed(lambda exact=exact, queries=queries: exact.search(queries, K), args.repeats)
        exact_qps = args.queries / sec
        print(f"| exact (batched brute force) | {n:,} | {build:.0f} | 1.000 | {exact_qps:,.0f} | 1.0 | {spread:.2f} |",
              flush=True)  # fmt: skip
        builds = [("ivf", {"nlist": args.nlist or default_nlist(n)}, "nprobe", args.nprobe)]
        builds += [("hnsw", {"hnsw_m": m, "ef_construction": args.ef_construction}, "ef_search", args.ef_search)
                   for m in args.hnsw_m]  # fmt: skip
        for kind, build_params, knob, values in builds:
            if not values:
                continue
            t0 = time.perf_counter()
            index = FaissIndex(items, kind, seed=args.seed, **build_params)
            build = time.perf_counter() - t0
            for value in values:  # query-time parameter: the same index
                index.params[knob] = value
                if kind == "ivf":
                    index.index.nprobe = value
                sec, spread, (_, found) = timed(lambda index=index, q=queries: index.search(q, K), args.repeats)
                qps = args.queries / sec
                name = kind + " " + " ".join(f"{key}={v}" for key, v in {**build_params, knob: value}.items())
                print(
                    f"| {name} | {n:,} | {build:.0f} | {recall(found, truth):.3f} | {qps:,.0f} | "
                    f"{qps / exact_qps:.1f} | {spread:.2f} |",
                    flush=True,
                )
            del index


if __name__ == "__main__":
    main()
