"""Top-k retrieval over an item table in the model's geometry: exact batched brute force, or a faiss index.

CML scores a (query, item) pair by ``-||q - v||^2`` (higher is closer). For one query the order of the items is
that of ``2 q.v - ||v||^2``, so a single matrix product ranks a whole catalogue; on the sphere (unit rows) it is the
order of the inner product, in the ball it is not, and both are exactly the order of the L2 distance. The faiss
indexes therefore use ``METRIC_L2`` on the rows as they are: they rank in the model's geometry, sphere or ball,
with no augmentation.

Every index answers `search(queries, k, exclude)` the same way:

* ``exclude`` is a CSR matrix ``[n_queries, n_items]`` (e.g. the users' seen items): its items never appear.
* Returned scores are always the exact ``-||q - v||^2`` of the returned items, sorted descending, ties broken by
  the lower item index (what ``tf.math.top_k`` does). An approximate index only chooses the candidates.
* When fewer than k items are left (k + excluded > catalogue, or an approximate index found fewer), the row is
  padded with item ``-1`` and score ``-inf``.

Memory is bounded: the exact index scores ``batch x n_items`` at a time, the batch chosen so that the score block
stays within ``memory_bytes``; the approximate ones over-fetch ``k + max excluded in the batch`` candidates per query
and re-score them in batches bounded the same way.

faiss is optional (``pip install 'cml_tf[ann]'``, i.e. faiss-cpu); only `FaissIndex` needs it.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import scipy.sparse as sp

from cml_tf.messages import OptionError

INDEX_TYPES = ("exact", "hnsw", "ivf")
DEFAULT_MEMORY_BYTES = 256 << 20
FAISS_INSTALL_HINT = "faiss is not installed; install the extra: pip install 'cml_tf[ann]' (or pip install faiss-cpu)"

# Tuned on synthetic clustered tables (python -m experiments.bench retrieval, experiments/BENCHMARKS.md).
HNSW_DEFAULTS = {"hnsw_m": 32, "ef_construction": 64, "ef_search": 128}
IVF_DEFAULTS = {"nlist": None, "nprobe": None}  # None: nlist = 4 sqrt(n) (at most n / 39), nprobe = nlist / 32
IVF_TRAIN_PER_LIST = 64  # k-means training points per list (faiss warns below 39); 10 iterations


class RetrievalError(OptionError):
    """A retrieval request that cannot be served (bad k, missing faiss, mismatched shapes)."""


def import_faiss():
    """The faiss module, or RetrievalError with the one line saying how to install it."""
    try:
        import faiss
    except ImportError as e:
        raise RetrievalError(FAISS_INSTALL_HINT) from e
    return faiss


def _as_table(x, name: str) -> np.ndarray:
    a = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if a.ndim != 2:
        raise RetrievalError(f"{name} must be a [rows, d] matrix, got shape {a.shape}")
    return a


def _check_exclude(exclude, n_queries: int, n_items: int) -> sp.csr_matrix | None:
    if exclude is None:
        return None
    if not sp.issparse(exclude):
        raise RetrievalError(f"exclude must be a scipy sparse [queries, items] matrix, got {type(exclude).__name__}")
    exclude = sp.csr_matrix(exclude)
    if exclude.shape != (n_queries, n_items):
        raise RetrievalError(f"exclude is {exclude.shape}, expected ({n_queries}, {n_items})")
    exclude.sort_indices()
    return exclude


def _check_k(k, n_items: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise RetrievalError(f"k must be a positive integer, got {k!r}")
    if k > n_items:
        raise RetrievalError(f"k={k} exceeds the catalogue ({n_items:,} items)")
    return int(k)


_EXACT_TOP_K = None


def _exact_top_k():
    """The traced exact top-k function (TensorFlow is imported on first use, not with this module)."""
    global _EXACT_TOP_K
    if _EXACT_TOP_K is None:
        import tensorflow as tf

        @tf.function(reduce_retracing=True)
        def top_k(queries, items, items_sq, mask_rows, mask_cols, k):
            """([b, k] scores -||q - v||^2, [b, k] int32 items) over all items, (mask_rows, mask_cols) at -inf."""
            # -||q - v||^2 = 2 q.v - ||v||^2 - ||q||^2; the last term is constant per query
            scores = 2.0 * tf.matmul(queries, items, transpose_b=True) - items_sq[None, :]
            scores = tf.tensor_scatter_nd_update(
                scores, tf.stack([mask_rows, mask_cols], axis=1), tf.fill(tf.shape(mask_rows), -np.inf)
            )
            values, indices = tf.math.top_k(scores, k=k)
            return values - tf.reduce_sum(tf.square(queries), axis=1, keepdims=True), indices

        _EXACT_TOP_K = top_k
    return _EXACT_TOP_K


class ExactIndex:
    """Exact top-k by brute force: one matmul per batch of queries, excluded items masked, ``tf.math.top_k``.

    Args:
        items: [n_items, d] item vectors in the model's geometry.
        memory_bytes: bound on the ``batch x n_items`` float32 score block (twice that while masking).
    """

    kind = "exact"

    def __init__(self, items, memory_bytes: int = DEFAULT_MEMORY_BYTES):
        self.items = _as_table(items, "items")
        self.n_items, self.dim = self.items.shape
        if self.n_items < 1:
            raise RetrievalError("the item table is empty")
        self.memory_bytes = int(memory_bytes)
        self._tensors = None  # (items, ||items||^2) as TensorFlow constants, made on the first search

    def batch_size(self) -> int:
        """Queries per matmul: the ``[batch, n_items]`` score block stays within ``memory_bytes / 2``."""
        return int(max(1, min(4096, self.memory_bytes // (8 * self.n_items))))

    def search(self, queries, k: int, exclude=None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items of every query.

        Args:
            queries: [n, d] query vectors (users, or items for similar items) in the model's geometry.
            k: items per query, 1 <= k <= n_items.
            exclude: optional [n, n_items] scipy sparse matrix; its non-zeros are never returned.

        Returns:
            (scores [n, k] float32 = -||q - v||^2 sorted descending, items [n, k] int64); ``-inf`` / ``-1`` pad
            rows with fewer than k items left.
        """
        queries = _as_table(queries, "queries")
        if queries.shape[1] != self.dim:
            raise RetrievalError(f"queries have {queries.shape[1]} dimensions, the items {self.dim}")
        k = _check_k(k, self.n_items)
        exclude = _check_exclude(exclude, queries.shape[0], self.n_items)
        import tensorflow as tf

        if self._tensors is None:
            items = tf.constant(self.items)
            self._tensors = items, tf.reduce_sum(tf.square(items), axis=1)
        items, items_sq = self._tensors
        out_scores = np.empty((queries.shape[0], k), np.float32)
        out_items = np.empty((queries.shape[0], k), np.int64)
        step = self.batch_size()
        for start in range(0, queries.shape[0], step):
            stop = min(start + step, queries.shape[0])
            if exclude is not None:
                block = exclude[start:stop]
                rows = np.repeat(np.arange(stop - start, dtype=np.int32), np.diff(block.indptr))
                cols = block.indices.astype(np.int32)
            else:
                rows = cols = np.zeros(0, np.int32)
            values, indices = _exact_top_k()(
                tf.constant(queries[start:stop]), items, items_sq, tf.constant(rows), tf.constant(cols), k
            )
            out_scores[start:stop] = values.numpy()
            out_items[start:stop] = indices.numpy()
        out_items[np.isneginf(out_scores)] = -1
        return out_scores, out_items


def default_nlist(n_items: int) -> int:
    """4 sqrt(n) inverted lists, at most n / 39 (faiss wants >= 39 training points per centroid), at least 1."""
    return int(max(1, min(round(4 * math.sqrt(n_items)), n_items // 39)))


class FaissIndex:
    """Approximate top-k with faiss (``METRIC_L2`` on the rows as they are: the model's geometry).

    ``kind="hnsw"``: ``IndexHNSWFlat(d, hnsw_m)`` with ``ef_construction`` and ``ef_search``.
    ``kind="ivf"``: ``IndexIVFFlat`` with ``nlist`` k-means lists (10 iterations on at most 64 points per list) and
    ``nprobe`` lists visited per query.

    Candidates come from faiss; excluded items are dropped, the rest re-scored exactly (see the module docstring).

    Args:
        items: [n_items, d] item vectors in the model's geometry.
        kind: "hnsw" or "ivf".
        hnsw_m, ef_construction, ef_search: HNSW parameters.
        nlist, nprobe: IVF parameters (None: `default_nlist`, nlist / 32).
        seed: k-means seed (IVF).
        memory_bytes: bound on the re-scoring block of candidates (``batch x candidates x d`` float32).
    """

    def __init__(
        self,
        items,
        kind: str = "hnsw",
        *,
        hnsw_m: int = HNSW_DEFAULTS["hnsw_m"],
        ef_construction: int = HNSW_DEFAULTS["ef_construction"],
        ef_search: int = HNSW_DEFAULTS["ef_search"],
        nlist: int | None = None,
        nprobe: int | None = None,
        seed: int = 0,
        memory_bytes: int = DEFAULT_MEMORY_BYTES,
        _index=None,
    ):
        faiss = import_faiss()
        self.items = _as_table(items, "items")
        self.n_items, self.dim = self.items.shape
        if self.n_items < 1:
            raise RetrievalError("the item table is empty")
        if kind not in ("hnsw", "ivf"):
            raise RetrievalError(f"unknown index kind {kind!r}; expected one of {', '.join(INDEX_TYPES)}")
        self.kind = kind
        self.memory_bytes = int(memory_bytes)
        self._items_sq = np.einsum("ij,ij->i", self.items, self.items)
        if kind == "hnsw":
            for name, value in (("hnsw_m", hnsw_m), ("ef_construction", ef_construction), ("ef_search", ef_search)):
                if value < 1:
                    raise RetrievalError(f"--{name} must be positive, got {value}")
            self.params = {"hnsw_m": int(hnsw_m), "ef_construction": int(ef_construction), "ef_search": int(ef_search)}
            if _index is None:
                _index = faiss.IndexHNSWFlat(self.dim, self.params["hnsw_m"], faiss.METRIC_L2)
                _index.hnsw.efConstruction = self.params["ef_construction"]
                _index.add(self.items)
        else:
            nlist = default_nlist(self.n_items) if nlist is None else int(nlist)
            if not 1 <= nlist <= self.n_items:
                raise RetrievalError(f"--nlist must be in [1, {self.n_items}] (the catalogue), got {nlist}")
            nprobe = max(1, nlist // 32) if nprobe is None else int(nprobe)
            if not 1 <= nprobe <= nlist:
                raise RetrievalError(f"--nprobe must be in [1, nlist={nlist}], got {nprobe}")
            self.params = {"nlist": nlist, "nprobe": nprobe}
            if _index is None:
                quantizer = faiss.IndexFlatL2(self.dim)
                _index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_L2)
                _index.cp.seed = int(seed)
                _index.cp.niter = 10
                sample = self.items
                if self.n_items > IVF_TRAIN_PER_LIST * nlist:
                    rng = np.random.default_rng(seed)
                    sample = self.items[np.sort(rng.choice(self.n_items, IVF_TRAIN_PER_LIST * nlist, replace=False))]
                _index.train(sample)
                _index.add(self.items)
        if _index.ntotal != self.n_items or _index.d != self.dim:
            raise RetrievalError(f"index holds {_index.ntotal} x {_index.d} vectors, the table {self.items.shape}")
        self.index = _index
        if kind == "ivf":
            self.index.nprobe = self.params["nprobe"]

    # ------------------------------------------------------------------------------------------------ persistence
    def save(self, path: str, source: str = "") -> None:
        """Writes the faiss index (faiss' own binary format, no pickle) and ``path + '.json'`` with its parameters
        and ``source`` (a tag of the item table it was built from), each via a temporary file and a rename."""
        faiss = import_faiss()
        from cml_tf.io import write_json_atomic

        tmp = path + ".tmp"
        faiss.write_index(self.index, tmp)
        os.replace(tmp, path)
        write_json_atomic(
            path + ".json",
            {"kind": self.kind, "n_items": self.n_items, "dim": self.dim, "source": source, **self.params},
        )

    @classmethod
    def load(cls, path: str, items, kind: str, source: str = "", **params) -> FaissIndex | None:
        """The index saved at ``path`` if it was built with these parameters from ``source`` (a tag of the item
        table) over a table of this shape, else None.

        Query-time parameters (``ef_search``, ``nprobe``) may differ: they are set on the loaded index.
        """
        faiss = import_faiss()
        meta_path = path + ".json"
        if not (os.path.exists(path) and os.path.exists(meta_path)):
            return None
        try:
            with open(meta_path, encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, ValueError):
            return None
        items = _as_table(items, "items")
        build_keys = ("hnsw_m", "ef_construction") if kind == "hnsw" else ("nlist",)
        if (
            meta.get("kind") != kind
            or meta.get("source") != source
            or (meta.get("n_items"), meta.get("dim")) != items.shape
        ):
            return None
        if any(params.get(key) is not None and meta.get(key) != params[key] for key in build_keys):
            return None
        index = faiss.read_index(path)
        merged = {key: meta[key] for key in build_keys}
        merged.update({key: value for key, value in params.items() if value is not None and key not in build_keys})
        return cls(items, kind, _index=index, **merged)

    # ------------------------------------------------------------------------------------------------ search
    def search(self, queries, k: int, exclude=None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items of every query; same contract as `ExactIndex.search` (candidates approximate)."""
        queries = _as_table(queries, "queries")
        if queries.shape[1] != self.dim:
            raise RetrievalError(f"queries have {queries.shape[1]} dimensions, the items {self.dim}")
        k = _check_k(k, self.n_items)
        n = queries.shape[0]
        exclude = _check_exclude(exclude, n, self.n_items)
        counts = np.diff(exclude.indptr) if exclude is not None else np.zeros(n, np.int64)
        # queries with similar exclusion counts go together, so one heavy user does not raise the whole block's
        # over-fetch; results are written back in the original order
        order = np.argsort(counts, kind="stable")
        queries, counts = queries[order], counts[order]
        if exclude is not None:
            exclude = exclude[order]
        out_scores = np.full((n, k), -np.inf, np.float32)
        out_items = np.full((n, k), -1, np.int64)
        start = 0
        while start < n:
            # over-fetch k + the batch's largest exclusion, in batches whose candidate block fits the memory bound
            fetch = min(self.n_items, k + int(counts[start]))
            stop = start + 1
            while stop < n and stop - start < 1024:
                wider = min(self.n_items, max(fetch, k + int(counts[stop])))
                if (stop + 1 - start) * wider * (self.dim + 4) * 4 > self.memory_bytes:
                    break
                fetch, stop = wider, stop + 1
            block = exclude[start:stop] if exclude is not None else None
            self._search_block(queries[start:stop], k, fetch, block, out_scores[start:stop], out_items[start:stop])
            start = stop
        inverse = np.empty_like(order)
        inverse[order] = np.arange(n)
        return out_scores[inverse], out_items[inverse]

    def _search_block(self, queries, k, fetch, exclude, out_scores, out_items):
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = max(self.params["ef_search"], fetch)
        _, candidates = self.index.search(queries, fetch)  # [b, fetch] int64, -1 where none
        candidates = np.sort(np.where(candidates < 0, self.n_items, candidates), axis=1)  # ties -> lower index
        valid = candidates < self.n_items
        if exclude is not None and exclude.nnz:
            rows = np.repeat(np.arange(queries.shape[0], dtype=np.int64), np.diff(exclude.indptr))
            keys = rows * (self.n_items + 1) + exclude.indices
            cand_keys = np.arange(queries.shape[0], dtype=np.int64)[:, None] * (self.n_items + 1) + candidates
            valid &= ~np.isin(cand_keys, keys)
        safe = np.where(valid, candidates, 0)
        vectors = self.items[safe]  # [b, fetch, d]
        scores = 2.0 * np.einsum("bd,bfd->bf", queries, vectors) - self._items_sq[safe]
        scores -= np.einsum("bd,bd->b", queries, queries)[:, None]
        scores = np.where(valid, scores, -np.inf).astype(np.float32)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        top_scores = np.take_along_axis(scores, order, axis=1)
        top_items = np.take_along_axis(candidates, order, axis=1)
        width = top_scores.shape[1]
        out_scores[:, :width] = top_scores
        out_items[:, :width] = np.where(np.isneginf(top_scores), -1, top_items)


def make_index(items, kind: str = "exact", **params):
    """`ExactIndex` or `FaissIndex` by name ("exact", "hnsw", "ivf"); params go to `FaissIndex`."""
    if kind == "exact":
        memory = params.get("memory_bytes")
        return ExactIndex(items) if memory is None else ExactIndex(items, memory_bytes=memory)
    if kind not in INDEX_TYPES:
        raise RetrievalError(f"--index: unknown index {kind!r}; expected one of {', '.join(INDEX_TYPES)}")
    return FaissIndex(items, kind, **{key: value for key, value in params.items() if value is not None})
