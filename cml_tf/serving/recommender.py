"""Use a trained run from Python: recommendations for users, similar items, every user's top k.

Example::

    from cml_tf import Recommender

    rec = Recommender.from_run("runs/ml100k")               # a run finished by python -m cml_tf.train
    for r in rec.recommend(["42", "7"], k=5):               # the data set's own ids, as strings
        print(r.query, list(zip(r.items, r.scores, r.names)))
    rec.similar_items("50", k=5)                            # items nearest to item "50"

Ids are the data set's own user and item ids as strings, as they appear in the raw file (``"42"``); for data sets
with integer ids an id with leading zeros (``"042"``) or a Python int also matches. Scores are ``-||u - v||^2`` in
the model's geometry (higher is closer; 0 is the best possible, -4 the worst on the unit sphere).

**Seen items** are a user's training and validation interactions in the run's split (what the model was fitted and
selected on; the test fold's masking in ``results.json`` excludes the same items). They are excluded by default
(``include_seen=True`` keeps them); ``seen="all"`` also excludes the test fold, i.e. every interaction in the data
set, for a deployed model. The run directory does not store the split; it is rebuilt from ``config.json`` (the
loader and the split are deterministic) the first time it is needed and checked twice: the ids must equal the
run's saved id arrays, and the rebuilt split must reproduce ``results.json``'s test NDCG@k from the saved
embeddings (which catches data, or cml_tf split code, that changed since training). It is then kept in
``embeddings/seen.npz`` (removed with the embeddings by ``--overwrite``; tagged with a fingerprint of the config and
the ids, and rebuilt when that does not match), so the raw data is needed again only for item names. A relative
``data_path`` in the config is tried from the current directory, then from every directory above the run directory
(a run trained from the project root with ``../shared/data/...`` is found from anywhere); ``data_path=`` overrides
it. Config keys this version of cml_tf does not know are ignored (the check above guards the split).

**Item names**: MovieLens titles from ``u.item`` (ml-100k, latin-1), ``movies.dat`` (ml-1m / 10m) or
``movies.csv`` (ml-20m and later) beside the ratings file, or any ``item_names=`` file of ``id<TAB>name`` lines
(UTF-8). Data sets without names (citeulike-t) show ids only.

Memory: `recommend_all` scores users in blocks (see `cml_tf.serving.retrieval`): at most ``memory_bytes`` of scores at a
time, never a users x items matrix.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import scipy.sparse as sp

from cml_tf.serving import retrieval
from cml_tf.serving.runs import (
    EMBEDDING_FILES,
    SEEN_CHOICES,
    RecommendError,
    check_run,
    faiss_index_for_run,
    item_names_for_run,
    load_run_config,
    load_seen,
    read_item_names,
)


@dataclasses.dataclass(frozen=True, eq=False)
class Ranked:
    """The top items for one query (a user, or an item for similar items), best first.

    Attributes:
        query: the user id (or item id) as a string.
        items: item ids as strings; shorter than k when fewer than k items were left after exclusion.
        scores: [len(items)] float32, ``-||q - v||^2``, descending.
        names: item names (None where an item has no name), or None when the data set has no names.
    """

    query: str
    items: tuple[str, ...]
    scores: np.ndarray
    names: tuple[str | None, ...] | None = None

    def rows(self) -> list[dict]:
        """One dict per item: ``rank`` (1-based), ``item``, ``score`` and ``name`` when names exist."""
        out = []
        for rank, (item, score) in enumerate(zip(self.items, self.scores), start=1):
            row = {"rank": rank, "item": item, "score": float(score)}
            if self.names is not None:
                row["name"] = self.names[rank - 1]
            out.append(row)
        return out


def _fmt_ids(ids: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(str(i)) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


class IdMap:
    """Original ids (the data set's, as strings) <-> rows of a table."""

    def __init__(self, ids: np.ndarray, what: str):
        self.ids = np.asarray(ids)
        self.what = what
        self.strings = self.ids.astype(str)
        self.integer = np.issubdtype(self.ids.dtype, np.integer)
        self._rows = {s: i for i, s in enumerate(self.strings.tolist())}

    def __len__(self) -> int:
        return len(self._rows)

    def row(self, key) -> int | None:
        """The row of one id, or None."""
        s = str(key).strip()
        row = self._rows.get(s)
        if row is None and self.integer:
            try:
                row = self._rows.get(str(int(s)))
            except ValueError:
                return None
        return row

    def rows(self, keys: Iterable, source: str = "") -> np.ndarray:
        """[n] int64 rows of the ids; RecommendError naming the unknown ones."""
        keys = [str(k).strip() for k in keys]
        rows = [self.row(k) for k in keys]
        unknown = [k for k, r in zip(keys, rows) if r is None]
        if unknown:
            plural = "s" if len(unknown) > 1 else ""
            where = f" ({source})" if source else ""
            raise RecommendError(
                f"unknown {self.what} id{plural} {_fmt_ids(unknown)}{where}: not among the run's "
                f"{len(self):,} {self.what}s (ids are the data set's own, e.g. {str(self.strings[0])!r})"
            )
        return np.asarray(rows, dtype=np.int64)


# ------------------------------------------------------------------------------------------------- run directory


class Recommender:
    """Top-k items for users, nearest items of an item, from user and item tables in the model's geometry.

    Args:
        user_vectors: [n_users, d] float32, in the model's geometry (unit rows on the sphere, raw in the ball).
        item_vectors: [n_items, d] float32.
        user_ids: [n_users] original user ids; item_ids: [n_items] original item ids.
        seen: [n_users, n_items] scipy sparse of the items to exclude per user, or a callable returning it (called
            on first use), or None (nothing to exclude).
        item_names: {item id: name} or None.
        index: "exact", "hnsw" or "ivf", or a built `cml_tf.serving.retrieval` index over ``item_vectors``.
        index_params: `cml_tf.serving.retrieval.FaissIndex` parameters for "hnsw" / "ivf".
        memory_bytes: bound on the score block of the exact index and of `recommend_all`.
    """

    def __init__(
        self,
        user_vectors,
        item_vectors,
        user_ids,
        item_ids,
        *,
        seen=None,
        item_names: dict[str, str] | None = None,
        index="exact",
        index_params: dict | None = None,
        memory_bytes: int = retrieval.DEFAULT_MEMORY_BYTES,
    ):
        self.user_vectors = np.ascontiguousarray(np.asarray(user_vectors, np.float32))
        self.item_vectors = np.ascontiguousarray(np.asarray(item_vectors, np.float32))
        self.users = IdMap(user_ids, "user")
        self.items = IdMap(item_ids, "item")
        if self.user_vectors.shape[0] != len(self.users.ids) or self.item_vectors.shape[0] != len(self.items.ids):
            raise RecommendError(
                f"{self.user_vectors.shape[0]} user vectors for {len(self.users.ids)} user ids, "
                f"{self.item_vectors.shape[0]} item vectors for {len(self.items.ids)} item ids"
            )
        if self.user_vectors.shape[1] != self.item_vectors.shape[1]:
            raise RecommendError(f"users have d={self.user_vectors.shape[1]}, items d={self.item_vectors.shape[1]}")
        self._seen = seen
        self.memory_bytes = int(memory_bytes)
        if item_names is not None:
            self.names = tuple(item_names.get(s) for s in self.items.strings.tolist())
        else:
            self.names = None
        if isinstance(index, str):
            index = retrieval.make_index(self.item_vectors, index, memory_bytes=memory_bytes, **(index_params or {}))
        self.index = index

    # ---------------------------------------------------------------------------------------------- construction
    @classmethod
    def from_run(
        cls,
        model_dir: str,
        *,
        index: str = "exact",
        index_params: dict | None = None,
        seen: str = "train",
        data_path: str | None = None,
        item_names: str | None = None,
        cache: bool = True,
        memory_bytes: int = retrieval.DEFAULT_MEMORY_BYTES,
    ) -> Recommender:
        """The best model of a finished run directory (``python -m cml_tf.train``).

        Args:
            model_dir: the run directory.
            index: "exact" (batched brute force), "hnsw" or "ivf" (faiss; built once and kept in
                ``embeddings/index-*.faiss`` when ``cache``).
            index_params: `cml_tf.serving.retrieval.FaissIndex` parameters.
            seen: "train" (training + validation interactions, the default) or "all" (every interaction).
            data_path: where the run's data set is, if not where ``config.json`` says.
            item_names: an ``id<TAB>name`` file; default the data set's own names (MovieLens titles).
            cache: keep the rebuilt seen items and faiss indexes in the run directory.
            memory_bytes: bound on score blocks.

        Raises:
            RecommendError: not a finished run, unknown ``seen`` / ``index``.
        """
        check_run(model_dir)
        if seen not in SEEN_CHOICES:
            raise RecommendError(f"--seen: unknown {seen!r}; expected one of {', '.join(SEEN_CHOICES)}")
        if index not in retrieval.INDEX_TYPES:
            raise RecommendError(f"--index: unknown {index!r}; expected one of {', '.join(retrieval.INDEX_TYPES)}")
        emb = os.path.join(model_dir, "embeddings")
        user_vectors, item_vectors, user_ids, item_ids = (
            np.load(os.path.join(emb, f), allow_pickle=False) for f in EMBEDDING_FILES
        )
        config = load_run_config(model_dir)
        names = read_item_names(item_names) if item_names else item_names_for_run(config, model_dir, data_path)

        def seen_loader():
            return load_seen(model_dir, user_ids, item_ids, data_path, cache=cache)[seen]

        built = index
        if index != "exact":
            built = faiss_index_for_run(emb, item_vectors, index, dict(index_params or {}), cache)
        rec = cls(
            user_vectors,
            item_vectors,
            user_ids,
            item_ids,
            seen=seen_loader,
            item_names=names,
            index=built,
            memory_bytes=memory_bytes,
        )
        rec.model_dir = model_dir
        rec.config = config
        return rec

    # ---------------------------------------------------------------------------------------------- properties
    @property
    def n_users(self) -> int:
        return self.user_vectors.shape[0]

    @property
    def n_items(self) -> int:
        return self.item_vectors.shape[0]

    @property
    def seen(self) -> sp.csr_matrix | None:
        """[n_users, n_items] CSR of the items excluded per user (loaded on first use), or None."""
        if callable(self._seen):
            self._seen = self._seen()
        if self._seen is not None and not isinstance(self._seen, sp.csr_matrix):
            self._seen = sp.csr_matrix(self._seen)
        if self._seen is not None and self._seen.shape != (self.n_users, self.n_items):
            raise RecommendError(f"seen is {self._seen.shape}, expected ({self.n_users}, {self.n_items})")
        return self._seen

    def popularity(self) -> np.ndarray:
        """[n_items] int64: users who have seen each item (zeros without seen items)."""
        seen = self.seen
        if seen is None:
            return np.zeros(self.n_items, np.int64)
        return np.bincount(seen.indices, minlength=self.n_items).astype(np.int64)

    def _check_k(self, k, limit: int, what: str) -> int:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise RecommendError(f"--k must be a positive integer, got {k!r}")
        if k > limit:
            raise RecommendError(f"--k={k} exceeds the {what} ({limit:,} items)")
        return int(k)

    def _ranked(self, query: str, scores: np.ndarray, items: np.ndarray) -> Ranked:
        keep = items >= 0
        items, scores = items[keep], scores[keep]
        names = tuple(self.names[i] for i in items) if self.names is not None else None
        return Ranked(query, tuple(self.items.strings[items].tolist()), scores.astype(np.float32), names)

    # ---------------------------------------------------------------------------------------------- queries
    def recommend(self, users, k: int = 10, include_seen: bool = False) -> list[Ranked]:
        """Top-k items of each user, seen items excluded unless ``include_seen``.

        Args:
            users: a user id or a sequence of them (the data set's ids, strings or ints).
            k: 1 <= k <= number of items. A user with fewer than k unseen items gets them all.
            include_seen: keep the users' seen items.

        Returns:
            One `Ranked` per user, in the order given.

        Raises:
            RecommendError: unknown user id (named), bad k.
        """
        if isinstance(users, str | int | np.integer):
            users = [users]
        rows = self.users.rows(users)
        k = self._check_k(k, self.n_items, "catalogue")
        if rows.size == 0:
            return []
        exclude = None if include_seen or self.seen is None else self.seen[rows]
        scores, items = self.index.search(self.user_vectors[rows], k, exclude)
        return [self._ranked(self.users.strings[r], s, i) for r, s, i in zip(rows, scores, items)]

    def similar_items(self, item, k: int = 10) -> Ranked:
        """The k items nearest to ``item`` (itself excluded), by ``-||v_item - v||^2``.

        Raises:
            RecommendError: unknown item id (named), bad k (at most the catalogue minus the item).
        """
        row = int(self.items.rows([item])[0])
        k = self._check_k(k, self.n_items - 1, "catalogue less the item itself")
        exclude = sp.csr_matrix((np.ones(1, np.float32), [row], [0, 1]), shape=(1, self.n_items))
        scores, items = self.index.search(self.item_vectors[row : row + 1], k, exclude)
        return self._ranked(self.items.strings[row], scores[0], items[0])

    def recommend_all(
        self, k: int = 10, include_seen: bool = False, users_per_block: int | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Streams the top k of every user, block by block, with bounded memory.

        Yields:
            (user ids [b] str, item ids [b, k] str, scores [b, k] float32); rows with fewer than k unseen items
            end with item ``""`` and score ``-inf``.
        """
        item_strings = np.append(self.items.strings, "")
        for users, rows, scores in self.recommend_all_rows(k, include_seen, users_per_block):
            yield users, item_strings[rows], scores

    def recommend_all_rows(
        self, k: int = 10, include_seen: bool = False, users_per_block: int | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """`recommend_all` with item rows (int64 [b, k], -1 for padding) instead of item ids."""
        k = self._check_k(k, self.n_items, "catalogue")
        if users_per_block is None:
            users_per_block = self.index.batch_size() if isinstance(self.index, retrieval.ExactIndex) else 1024
        seen = None if include_seen else self.seen
        for start in range(0, self.n_users, users_per_block):
            stop = min(start + users_per_block, self.n_users)
            exclude = seen[start:stop] if seen is not None else None
            scores, rows = self.index.search(self.user_vectors[start:stop], k, exclude)
            yield self.users.strings[start:stop], rows, scores
