"""Approximate retrieval against exact ranking: recall@50 and queries/s of faiss HNSW / IVF vs brute force.

    python -m experiments.bench retrieval                                  # 160k and 1M items, d = 128
    python -m experiments.bench retrieval --catalogs=160000 --queries=500 --data=uniform

Tables are synthetic unit vectors (the sphere geometry of a trained model): ``clustered`` (default) draws items
and queries around 1,024 random centres (``normalize(centre + sigma * N(0, I/d))``, sigma = 1: cosine to its centre
about 0.7), which resembles trained embeddings; ``uniform`` draws them uniformly on the sphere, the hardest case for
an approximate index (no structure to exploit). The exact baseline is `cml_tf.serving.retrieval.ExactIndex`, the batched
brute force `python -m cml_tf.recommend --index=exact` uses; the approximate ones are `FaissIndex`, which also
re-scores their candidates exactly, as `recommend` does. Queries/s are medians over ``--rounds`` timings of the
whole query set (searched as one batch); speed-ups are ratios of medians within the same run. Recall@50 = mean over
queries of |approximate top 50 ∩ exact top 50| / 50.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from experiments.bench.flags import common, ints
from experiments.bench.report import Table, median, spread
from experiments.bench.timing import repeat

K = 50
COLUMNS = ["index", "items", "build s", "recall@50", "queries/s", "queries/s min..max", "speed-up vs exact"]


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


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |approximate top k ∩ exact top k| / k (-1 pads of ``approx`` ignored)."""
    hits = [np.intersect1d(a[a >= 0], e).size for a, e in zip(approx, exact)]
    return float(np.mean(hits)) / exact.shape[1]


def add_arguments(p) -> None:
    """The retrieval benchmark's flags."""
    common(p, catalogs=[160_000, 1_000_000], rounds=3)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--data", choices=["clustered", "uniform"], default="clustered")
    p.add_argument("--sigma", type=float, default=1.5, help="clustered: noise scale around the centres")
    p.add_argument("--centres", type=int, default=1024, help="clustered: number of centres")
    p.add_argument("--items_per_centre", type=int, default=None, help="clustered: centres = items / this instead")
    p.add_argument("--hnsw_m", type=ints, default=[32], help="comma list (empty: no HNSW)")
    p.add_argument("--ef_construction", type=int, default=64)
    p.add_argument("--ef_search", type=ints, default=[128, 256, 512], help="comma list")
    p.add_argument("--nlist", type=int, default=None, help="default 4 sqrt(n)")
    p.add_argument("--nprobe", type=ints, default=[32, 64, 128, 256], help="comma list (empty: no IVF)")
    p.add_argument("--seed", type=int, default=0)


def run(args) -> list[Table]:
    """One table: exact, then every IVF and HNSW setting, at each catalog size."""
    import faiss

    from cml_tf.serving.retrieval import ExactIndex, FaissIndex, default_nlist

    rows = []

    def row(name: str, n: int, build: float, found, seconds: list[float], exact_qps: float | None = None) -> float:
        qps = args.queries / median(seconds)
        rows.append(
            {
                "index": name,
                "items": n,
                "build s": build,
                "recall@50": 1.0 if exact_qps is None else recall(found, truth),
                "queries/s": qps,
                "queries/s min..max": spread([args.queries / s for s in seconds]),
                "speed-up vs exact": 1.0 if exact_qps is None else qps / exact_qps,
            }
        )
        print(rows[-1], file=sys.stderr, flush=True)
        return qps

    for n in args.catalogs:
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
        seconds, (_, truth) = repeat(lambda exact=exact, queries=queries: exact.search(queries, K), args.rounds)
        exact_qps = row("exact (batched brute force)", n, build, truth, seconds)
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
                seconds, (_, found) = repeat(lambda index=index, q=queries: index.search(q, K), args.rounds)
                name = kind + " " + " ".join(f"{key}={v}" for key, v in {**build_params, knob: value}.items())
                row(name, n, build, found, seconds, exact_qps)
            del index
    shape = ""
    if args.data == "clustered":
        per = f"items / {args.items_per_centre}" if args.items_per_centre else f"{args.centres}"
        shape = f" ({per} centres, sigma = {args.sigma})"
    threads = f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads"
    heading = (
        f"{args.data} unit vectors{shape}, d = {args.dim}, {args.queries} queries, k = {K}, median of {args.rounds} "
        f"timings; {threads}"
    )
    return [Table(heading, COLUMNS, rows, digits={"recall@50": 3, "speed-up vs exact": 1})]
