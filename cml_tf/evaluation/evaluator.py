"""Full-ranking evaluation: every item is scored for every evaluated user, training items are masked.

For each batch of users the whole catalogue is scored with one matmul, the user's training items are set to
``-inf`` (masking, not filtering: the score matrix keeps its ``[batch, n_items]`` shape), ``tf.math.top_k`` picks
the top k, and membership of each top-k item in the user's test set is looked up with ``tf.searchsorted`` in the
sorted int64 keys ``user * n_items + item`` of the test matrix. All of this runs in one ``tf.function`` traced once
(fixed batch shape, the last batch padded, ``input_signature`` given); there is no per-user Python.

Edge cases, by design:

* Users with no test item are not evaluated (they would be excluded from every mean anyway); their number is in
  `Evaluator.num_excluded`. ``"users"`` in the result is the number of users that were evaluated.
* ``k > n_items``: ``top_k`` is called with ``min(k, n_items)``; ranks past the end of the catalogue are misses,
  so Precision@k still divides by the requested k (the other metrics do not depend on this choice).
* Fewer than k unmasked items left for a user: the top-k list then ends with masked (``-inf``) training items.
  Those never count as hits (even if the item is also in the test set) and are left out of the MMR median.
  An item whose own score is ``-inf`` (e.g. from a ``score_fn``) is treated the same way.
* Test items that are also training items are masked, so they can never be hit, but they still count in
  ``|T_u|`` (the splitter is expected to keep train and test disjoint).
* Ties: ``top_k`` breaks them by the lower item index; metrics only change with ties between a hit and a miss.

Protocols (`Evaluator.for_split`): which items a test ranking masks. ``"cml"`` (cml_tf's own splits): the user's
training and validation items. ``"reference"`` (given splits, the default there): only the items of the training
file, as LightGCN's and LightGCN++'s code do: validation items from a validation file stay rankable (and occupy
slots as misses). Validation always masks the training items only. Both protocols use the same metric definitions
(`cml_tf.evaluation.metrics`), which are the reference code's: Recall@k = hits / |T_u| (not min(k, |T_u|)), NDCG@k
with the ideal DCG of min(|T_u|, k) hits, means over the users with a held-out item.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from cml_tf.evaluation import metrics
from cml_tf.evaluation.scores import block_scores, item_chunk

SCORINGS = ("distance", "dot")


def _as_binary_csr(m, name: str) -> sp.csr_matrix:
    """A copy of ``m`` as CSR with sorted, unique indices and only non-zero entries kept."""
    if not sp.issparse(m):
        raise TypeError(f"{name} must be a scipy sparse matrix [n_users, n_items], got {type(m).__name__}")
    m = sp.csr_matrix(m, dtype=np.float32, copy=True)
    m.sum_duplicates()
    m.eliminate_zeros()
    m.sort_indices()
    return m


def _as_matrix(x, name: str) -> tf.Tensor:
    """numpy array / tf.Variable / tensor / Keras variable -> [rows, d] float32 tensor."""
    if isinstance(x, np.ndarray):
        t = tf.convert_to_tensor(x.astype(np.float32, copy=False))
    else:
        t = tf.convert_to_tensor(x)
        if t.dtype != tf.float32:
            t = tf.cast(t, tf.float32)
    if t.shape.rank != 2:
        raise ValueError(f"{name} must be a [rows, d] matrix, got shape {t.shape}")
    return t


class Evaluator:
    """Top-k metrics over the full catalogue with training items masked.

    Example:
        >>> ev = Evaluator(train_csr, test_csr, k=50)
        >>> ev.evaluate(user_emb, item_emb)  # {"map@50": ..., "ndcg@50": ..., ..., "mmr": ..., "users": ...}
        >>> ev.evaluate_scores(lambda users: popularity[None, :])  # a baseline that scores items directly
    """

    @classmethod
    def for_split(cls, split, part: str = "test", protocol: str = "cml", **kwargs) -> Evaluator:
        """The evaluator of one held-out part of a `cml_tf.data.splits.Split` under a protocol.

        Args:
            split: the `Split`.
            part: "test" (masks ``split.excluded_at_test(protocol)``) or "valid" (masks the training items).
            protocol: "cml" (test masks train + valid) or "reference" (test masks the training file's items only).
            **kwargs: the other `Evaluator` arguments (``k``, ``users``, ...); ``item_popularity`` defaults to the
                training popularity.

        Returns:
            `Evaluator` ranking every item with those items masked, ``split.<part>`` relevant.
        """
        if part not in ("test", "valid"):
            raise ValueError(f"part must be 'test' or 'valid', got {part!r}")
        excluded = split.excluded_at_test(protocol) if part == "test" else split.train
        kwargs.setdefault("item_popularity", np.asarray(split.train.sum(0)).ravel())
        return cls(excluded, getattr(split, part), **kwargs)

    def __init__(
        self,
        train: sp.spmatrix,
        test: sp.spmatrix,
        k: int = 50,
        users: np.ndarray | None = None,
        item_popularity: np.ndarray | None = None,
        batch_size: int = 1024,
        scoring: str = "distance",
    ):
        """Builds the index tensors; nothing is traced until the first evaluation.

        Args:
            train: [n_users, n_items] scipy sparse; its non-zeros are the items masked from each user's ranking.
            test: [n_users, n_items] scipy sparse, the held-out items (the relevant ones).
            k: cut-off of the metrics (keys ``map@k`` etc.); ``top_k`` uses ``min(k, n_items)``.
            users: [n_eval] int user indices to evaluate; default every user with at least one test item.
                Given users without a test item are dropped (counted in ``num_excluded``).
            item_popularity: [n_items] training popularity used by MMR; default the column counts of ``train``.
            batch_size: users scored per step; the score matrix is ``batch_size x n_items`` float32 (about
                ``4 * batch_size * n_items`` bytes, times ~2 during masking).
            scoring: "distance" ranks by smallest squared Euclidean distance (score ``-||u - v||^2``, computed as
                ``2 u.v - ||v||^2``, the user's own norm being constant); "dot" ranks by ``u.v``.
        """
        train = _as_binary_csr(train, "train")
        test = _as_binary_csr(test, "test")
        if train.shape != test.shape:
            raise ValueError(
                f"train is {train.shape[0]} users x {train.shape[1]} items but test is "
                f"{test.shape[0]} users x {test.shape[1]} items"
            )
        if scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.n_users, self.n_items = (int(s) for s in train.shape)
        if self.n_items < 1:
            raise ValueError("the catalogue has no items")
        self.k = k
        self.top_k = min(k, self.n_items)
        self.scoring = scoring

        test_counts = np.diff(test.indptr).astype(np.int64)
        if users is None:
            users = np.flatnonzero(test_counts > 0)
            self.num_excluded = 0
        else:
            users = np.asarray(users)
            if users.ndim != 1 or not (users.size == 0 or np.issubdtype(users.dtype, np.integer)):
                raise ValueError(f"users must be a 1-D int array, got dtype {users.dtype} shape {users.shape}")
            if users.size and (users.min() < 0 or users.max() >= self.n_users):
                raise ValueError(f"user index out of range [0, {self.n_users}): min {users.min()}, max {users.max()}")
            has_test = test_counts[users] > 0
            self.num_excluded = int((~has_test).sum())
            users = users[has_test]
        self.users = users.astype(np.int32)

        if item_popularity is None:
            item_popularity = np.bincount(train.indices, minlength=self.n_items)
        item_popularity = np.asarray(item_popularity, dtype=np.float64)
        if item_popularity.shape != (self.n_items,):
            raise ValueError(f"item_popularity has shape {item_popularity.shape}, expected ({self.n_items},)")
        self.item_popularity = item_popularity

        # Never pad a small evaluation up to a large batch.
        self.batch_size = max(1, min(batch_size, len(self.users)))

        # Index tensors (CPU-resident constants).
        self._train_indptr = tf.constant(train.indptr.astype(np.int64))
        self._train_indices = tf.constant(train.indices.astype(np.int32))
        test_rows = np.repeat(np.arange(self.n_users, dtype=np.int64), test_counts)
        keys = test_rows * self.n_items + test.indices.astype(np.int64)  # row-major CSR: already sorted
        keys = np.append(keys, np.iinfo(np.int64).max)  # sentinel: searchsorted never points past the end
        self._test_keys = tf.constant(keys)
        self._num_relevant = tf.constant(test_counts.astype(np.int32))
        self._popularity = tf.constant(item_popularity.astype(np.float32))

        b = self.batch_size
        self._embedding_step = tf.function(
            self._embedding_batch,
            input_signature=[
                tf.TensorSpec([b], tf.int32),
                tf.TensorSpec([None, None], tf.float32),
                tf.TensorSpec([self.n_items, None], tf.float32),
            ],
        )
        self._score_step = tf.function(
            self._rank_batch,
            input_signature=[tf.TensorSpec([b], tf.int32), tf.TensorSpec([b, self.n_items], tf.float32)],
        )
        self.last_seconds = float("nan")

    # ------------------------------------------------------------------ graph code

    def _rank_batch(self, users: tf.Tensor, scores: tf.Tensor) -> tf.Tensor:
        """Masks, ranks and scores one batch.

        Args:
            users: [B] int32 user indices.
            scores: [B, n_items] float32, higher is better.

        Returns:
            [6, B] float32: AP, NDCG, recall, precision, reciprocal-rank sum, median popularity of the top k.
        """
        # Ragged gather of the batch's training items: CSR rows users[j] -> (j, item) pairs.
        starts = tf.gather(self._train_indptr, users)
        ends = tf.gather(self._train_indptr, users + 1)
        positions = tf.ragged.range(starts, ends)  # [B, (train items)] int64
        rows = tf.cast(positions.value_rowids(), tf.int32)
        cols = tf.gather(self._train_indices, positions.flat_values)
        mask_idx = tf.stack([rows, cols], axis=1)  # [nnz_batch, 2]
        minus_inf = tf.fill(tf.shape(rows), tf.constant(-np.inf, tf.float32))
        scores = tf.tensor_scatter_nd_update(scores, mask_idx, minus_inf)

        values, top = tf.math.top_k(scores, k=self.top_k, sorted=True)  # [B, top_k]
        valid = values > -np.inf
        keys = tf.cast(users, tf.int64)[:, None] * self.n_items + tf.cast(top, tf.int64)  # [B, top_k]
        flat_keys = tf.reshape(keys, [-1])
        pos = tf.searchsorted(self._test_keys, flat_keys, side="left", out_type=tf.int64)
        found = tf.reshape(tf.equal(tf.gather(self._test_keys, pos), flat_keys), tf.shape(keys))
        hits = tf.logical_and(found, valid)

        num_relevant = tf.gather(self._num_relevant, users)
        per_user = metrics.per_user_metrics(hits, num_relevant, k=self.k)
        mmr = metrics.median_popularity(top, self._popularity, valid)
        return tf.stack([per_user[name] for name in metrics.METRIC_NAMES] + [mmr], axis=0)

    def _embedding_batch(self, users: tf.Tensor, user_matrix: tf.Tensor, item_matrix: tf.Tensor) -> tf.Tensor:
        """Scores one batch from prepared embeddings (see `_prepare`) and ranks it.

        Args:
            users: [B] int32 user indices.
            user_matrix: [n_users, d'] float32 prepared user rows.
            item_matrix: [n_items, d'] float32 prepared item rows.

        Returns:
            [6, B] float32, as `_rank_batch`.
        """
        u = tf.gather(user_matrix, users)  # [B, d']
        scores = tf.matmul(u, item_matrix, transpose_b=True)  # [B, n_items]
        return self._rank_batch(users, scores)

    # ------------------------------------------------------------------ host code

    def _prepare(self, user_embeddings, item_embeddings) -> tuple[tf.Tensor, tf.Tensor]:
        """Checks the embeddings and folds the scoring rule into them, so one matmul gives the scores.

        distance: [u, 1] . [2v, -||v||^2] = 2 u.v - ||v||^2 = ||u||^2 - ||u - v||^2 (same order per user).
        """
        u = _as_matrix(user_embeddings, "user_embeddings")
        v = _as_matrix(item_embeddings, "item_embeddings")
        if u.shape[0] != self.n_users:
            raise ValueError(f"user_embeddings has {u.shape[0]} rows but the evaluator has {self.n_users} users")
        if v.shape[0] != self.n_items:
            raise ValueError(f"item_embeddings has {v.shape[0]} rows but the evaluator has {self.n_items} items")
        if u.shape[1] != v.shape[1]:
            raise ValueError(f"user embeddings have dimension {u.shape[1]} but item embeddings {v.shape[1]}")
        if not (bool(tf.reduce_all(tf.math.is_finite(u))) and bool(tf.reduce_all(tf.math.is_finite(v)))):
            raise ValueError("embeddings contain NaN or inf values")
        if self.scoring == "distance":
            sq = tf.reduce_sum(tf.square(v), axis=1, keepdims=True)
            v = tf.concat([2.0 * v, -sq], axis=1)
            u = tf.concat([u, tf.ones([self.n_users, 1], tf.float32)], axis=1)
        return u, v

    def _pad(self, real: np.ndarray) -> np.ndarray:
        """[n] user ids -> [batch_size] int32, padded with the first id (padding rows are dropped afterwards)."""
        b = self.batch_size
        if len(real) == b:
            return real
        return np.concatenate([real, np.full(b - len(real), real[0], np.int32)])

    def _collect(self, step: Callable[[np.ndarray], np.ndarray]) -> dict[str, np.ndarray]:
        """Runs ``step(real users [n <= B]) -> [6, n]`` over every batch and gathers per-user arrays."""
        t0 = time.perf_counter()
        parts = []
        for start in range(0, len(self.users), self.batch_size):
            real = self.users[start : start + self.batch_size]
            parts.append(step(real))
        names = (*metrics.METRIC_NAMES, "mmr")
        out = np.concatenate(parts, axis=1) if parts else np.zeros((len(names), 0), np.float32)
        self.last_seconds = time.perf_counter() - t0
        result = {name: out[i].astype(np.float64) for i, name in enumerate(names)}
        result["users"] = self.users.copy()
        return result

    def _summarise(self, per_user: dict[str, np.ndarray]) -> dict[str, float]:
        n = len(per_user["users"])
        nan = float("nan")
        mean = {name: (float(per_user[name].mean()) if n else nan) for name in (*metrics.METRIC_NAMES, "mmr")}
        return result_dict(mean, n, self.k)

    def evaluate_per_user(self, user_embeddings, item_embeddings) -> dict[str, np.ndarray]:
        """Per-user values for embedding models.

        Args:
            user_embeddings: [n_users, d] numpy array, tf.Variable, Keras variable or tensor.
            item_embeddings: [n_items, d], same kinds.

        Returns:
            {"ap", "ndcg", "recall", "precision", "rr", "rr_sum", "mmr"} -> [n_eval] float64 and "users" ->
            [n_eval] int32 ids.
        """
        u, v = self._prepare(user_embeddings, item_embeddings)
        return self._collect(
            lambda real: self._embedding_step(tf.constant(self._pad(real)), u, v).numpy()[:, : len(real)]
        )

    def evaluate(self, user_embeddings, item_embeddings) -> dict[str, float]:
        """Mean metrics for embedding models (scored by ``self.scoring``).

        Args:
            user_embeddings: [n_users, d] numpy array, tf.Variable, Keras variable or tensor.
            item_embeddings: [n_items, d], same kinds.

        Returns:
            {f"map@{k}", f"ndcg@{k}", f"recall@{k}", f"precision@{k}", f"mrr@{k}", f"mrr_sum@{k}", "mmr": float,
            "users": int}.
        """
        return self._summarise(self.evaluate_per_user(user_embeddings, item_embeddings))

    def evaluate_blocks_per_user(
        self,
        score_block: Callable,
        pair_cost: int = 1,
        chunk: int | None = None,
        prepare: Callable | None = None,
        batch_size: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Per-user values for a model whose score is not a plain distance (see `evaluate_blocks`)."""
        users = max(1, min(int(batch_size or self.batch_size), self.batch_size))
        chunk = int(chunk) if chunk is not None else item_chunk(users, self.n_items, pair_cost)
        chunk = min(chunk, self.n_items)
        key = (score_block, prepare, chunk, users)
        if getattr(self, "_block_key", None) != key:  # one trace per model, chunk and batch size
            ranker = copy.copy(self)  # shares the index tensors; its own batch size
            ranker.batch_size = users
            ranker._step = tf.function(
                lambda u: ranker._rank_batch(u, block_scores(score_block, u, self.n_items, chunk, prepare)),
                input_signature=[tf.TensorSpec([users], tf.int32)],
            )
            self._block_key, self._block_ranker = key, ranker
        ranker = self._block_ranker
        self.last_chunk = chunk
        out = ranker._collect(lambda real: ranker._step(tf.constant(ranker._pad(real))).numpy()[:, : len(real)])
        self.last_seconds = ranker.last_seconds
        return out

    def evaluate_blocks(
        self,
        score_block: Callable,
        pair_cost: int = 1,
        chunk: int | None = None,
        prepare: Callable | None = None,
        batch_size: int | None = None,
    ) -> dict:
        """Mean metrics for a model that scores (user, item) blocks, e.g. through a relation r(u, v).

        Users are ranked ``batch_size`` at a time, each batch against the catalog in chunks of items (see
        `block_scores`) sized so that a block holds at most `MAX_BLOCK_FLOATS` floats; all in one ``tf.function``
        traced once, no per-user Python. The ranking is the same for any chunk size.

        Args:
            score_block: ``(users [b] int32, items [c] int32) -> [b, c]`` scores, higher is better, traceable (with
                ``prepare``: ``(prepare(users), items)``).
            pair_cost: floats the model holds per (user, item) pair (sizes the chunks).
            chunk: items per block (default: from ``pair_cost``).
            prepare: optional ``users -> state``, computed once per batch of users.
            batch_size: users per batch (default and at most the evaluator's).

        Returns:
            Same keys as `evaluate`.
        """
        return self._summarise(self.evaluate_blocks_per_user(score_block, pair_cost, chunk, prepare, batch_size))

    def evaluate_model(self, model, chunk: int | None = None) -> dict:
        """Mean metrics of a `cml_tf.models` model: one matmul per batch for CML, chunked blocks otherwise."""
        if not getattr(model, "relational", False):
            return self.evaluate(*model.embeddings())
        return self.evaluate_blocks(
            model.state_scores, model.pair_cost(), chunk, prepare=model.user_state, batch_size=model.block_users()
        )

    def evaluate_scores_per_user(self, score_fn: Callable[[np.ndarray], object]) -> dict[str, np.ndarray]:
        """Per-user values for a model that scores items directly (see `evaluate_scores`)."""
        b, n_items = self.batch_size, self.n_items

        def step(real: np.ndarray) -> np.ndarray:
            n = len(real)
            s = tf.convert_to_tensor(score_fn(real))  # score_fn never sees the padding
            if s.dtype != tf.float32:
                s = tf.cast(s, tf.float32)
            if s.shape.rank == 1:
                s = s[None, :]
            if s.shape.rank != 2 or s.shape[1] != n_items or s.shape[0] not in (1, n):
                raise ValueError(
                    f"score_fn must return [{n}, {n_items}] (or [{n_items}] / [1, {n_items}]) scores "
                    f"for {n} users, got shape {s.shape}"
                )
            s = tf.broadcast_to(s, [n, n_items])
            if n < b:
                s = tf.pad(s, [[0, b - n], [0, 0]])
            return self._score_step(tf.constant(self._pad(real)), s).numpy()[:, :n]

        return self._collect(step)

    def evaluate_scores(self, score_fn: Callable[[np.ndarray], object]) -> dict[str, float]:
        """Mean metrics for a model given as a scoring callable (e.g. a popularity or random baseline).

        Args:
            score_fn: ``users: [b] int32 ids -> scores [b, n_items]`` (numpy or tensor, higher is better).
                A [n_items] or [1, n_items] result is broadcast to every user of the batch. It is called once
                per batch (b <= batch_size), from Python, so it may be any callable.

        Returns:
            Same keys as `evaluate`.
        """
        return self._summarise(self.evaluate_scores_per_user(score_fn))

    def __repr__(self) -> str:
        return (
            f"Evaluator(users={len(self.users)}, n_items={self.n_items}, k={self.k}, "
            f"batch_size={self.batch_size}, scoring={self.scoring!r}, excluded={self.num_excluded})"
        )


def result_dict(mean: dict[str, float], users: int, k: int) -> dict[str, float]:
    """The public result keys from per-metric means (``ap``, ``ndcg``, ``recall``, ``precision``, ``rr``,
    ``rr_sum``, ``mmr``)."""
    return {
        f"map@{k}": mean["ap"],
        f"ndcg@{k}": mean["ndcg"],
        f"recall@{k}": mean["recall"],
        f"precision@{k}": mean["precision"],
        f"mrr@{k}": mean["rr"],
        f"mrr_sum@{k}": mean["rr_sum"],
        "mmr": mean["mmr"],
        "users": users,
    }
