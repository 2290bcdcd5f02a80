"""Negative samplers as vectorised TensorFlow ops with explicit stateless seeds.

* ``uniform``: items uniformly at random among the user's non-positives, with replacement. Drawn exactly from the
  complement (`NegativeSampler`): a draw is never a training positive of the user.
* ``popular``: items with probability ∝ (f(j) + smoothing)^β among the user's non-positives, with replacement,
  drawn exactly from the complement. f(j) is the item's training count. ``smoothing`` (default 1) keeps items absent
  from training drawable: the original popular sampler never drew them, so nothing ever pushed them away and they
  drifted close to every user.
* ``2stage`` (Tran et al. 2019): stage 1 draws C candidates by popularity^β without replacement, one set per
  batch (`ItemSampler.sample_without_replacement`, in the input pipeline); stage 2, inside the training step, draws
  the negatives among them by the capped inverse density of the current embeddings (`cml_tf.sampling.two_stage`).

* ``side_info`` (after Royo-Letelier et al., ISMIR 2018, who draw metric-learning negatives among tracks sharing
  the anchor's genre): for the positive v_j, a group g of j (a genre, a tag) uniformly among j's groups, then an
  item uniformly among g's members that are not positives of the user; where none is found (j has no group, or T
  draws from g all hit positives of the user) the exact uniform draw over the user's non-positives. Never a
  positive. It lives in `cml_tf.sampling.side_info_sampler` (`SideInfoSampler`), built on this module's
  `NegativeSampler`.

* ``dns`` (dynamic negative sampling, Zhang et al. 2013): k exact uniform draws per negative here; the training
  step keeps the one its current model scores highest (`cml_tf.models.step`).
* ``in_batch``: the batch's other positives: for the hinge N of them per row, uniformly among those that are not
  positives of the row's user (a row without any takes uniform draws); for the softmax all of them, masked.

Randomness is stateless: each op takes a ``seed`` of shape [2] (int32/int64), so the same seed gives the same
draws whatever the parallelism, and a resumed run draws what the uninterrupted run would have drawn.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import tensorflow as tf

SAMPLERS = ("uniform", "popular", "2stage", "side_info", "dns", "in_batch")


def popularity_log_weights(
    item_counts: np.ndarray, beta: float, smoothing: float = 1.0, uniform_mix: float = 0.0
) -> np.ndarray:
    """log of the popularity weights (f(j) + smoothing)^β, mixed with uniform when ``uniform_mix`` ε > 0.

    With ε > 0 the weights are the distribution (1 − ε)·q(j) + ε/n, q(j) = (f(j) + smoothing)^β / Σ_k (…)^β: a share
    ε of the draws goes to the whole catalog whatever its popularity, so items absent from training stay drawable
    even with ``smoothing`` 0.

    Args:
        item_counts: [n_items] training interaction counts f(j).
        beta: popularity exponent β (0 gives uniform).
        smoothing: added to every count; 0 reproduces the original (absent items are never drawn).
        uniform_mix: ε in [0, 1], the uniform share of the mixture (0 = the popularity weights alone).

    Returns:
        [n_items] float64 log weights (−inf for zero weight); normalised (log-probabilities) when ε > 0.
    """
    counts = np.asarray(item_counts, dtype=np.float64) + smoothing
    with np.errstate(divide="ignore"):
        log_w = beta * np.log(counts)
    if uniform_mix <= 0:
        return log_w
    n = log_w.shape[0]
    finite = np.isfinite(log_w)
    top = log_w[finite].max() if finite.any() else 0.0
    q = np.where(finite, np.exp(log_w - top), 0.0)
    q = q / q.sum() if q.sum() > 0 else np.full(n, 1.0 / n)
    return np.log((1.0 - uniform_mix) * q + uniform_mix / n)


def inclusion_log_probs(log_weights: np.ndarray | None, n_items: int, num: int) -> np.ndarray:
    """log P(item j is among ``num`` distinct items drawn successively ∝ w) (stage 1's C candidates).

    Successive sampling has no closed form for the inclusion probability; it is approximated by
    π_j = 1 − exp(−t·q_j), q_j = w_j / Σw, with t solved so that Σ_j π_j = num (the expected sample size is exact).
    Uniform weights give π_j = num / n exactly.

    Args:
        log_weights: [n_items] log weights, or None for uniform.
        n_items: catalog size.
        num: items per sample (C).

    Returns:
        [n_items] float64 log π_j (−inf for items of zero weight).
    """
    if log_weights is None:
        return np.full(n_items, np.log(num / n_items))
    w = np.exp(np.asarray(log_weights, np.float64) - np.max(log_weights))
    q = w / w.sum()
    drawable = int(np.count_nonzero(q))
    if num >= drawable:
        with np.errstate(divide="ignore"):
            return np.where(q > 0, 0.0, -np.inf)
    lo, hi = 0.0, 1.0
    while (-np.expm1(-hi * q)).sum() < num:
        hi *= 2.0
    for _ in range(100):  # bisection on the increasing Σ_j (1 − exp(−t q_j))
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if (-np.expm1(-mid * q)).sum() < num else (lo, mid)
    with np.errstate(divide="ignore"):
        return np.log(-np.expm1(-hi * q))


class PositiveIndex:
    """Vectorised membership test "is item i a training positive of user u?" over a CSR matrix.

    Keys ``u * n_items + i`` of a CSR matrix with sorted indices are already sorted, so membership is a
    ``searchsorted``; the per-user rows (indptr/indices) serve the candidate mask of the 2-stage sampler.
    """

    def __init__(self, train: sp.csr_matrix):
        train = sp.csr_matrix(train)
        train.sum_duplicates()  # one key per (user, item): candidate_mask counts each pair once
        train.sort_indices()
        self.n_users, self.n_items = train.shape
        users = np.repeat(np.arange(self.n_users, dtype=np.int64), np.diff(train.indptr))
        self.keys = tf.constant(users * self.n_items + train.indices.astype(np.int64))  # [nnz] sorted
        self.indptr = tf.constant(train.indptr.astype(np.int64))  # [n_users + 1]
        self.indices = tf.constant(train.indices.astype(np.int64))  # [nnz]

    def contains(self, users: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
        """Membership of (user, item) pairs.

        Args:
            users: [...] int ids, broadcastable against items.
            items: [...] int ids.

        Returns:
            [...] bool, True where the item is a training positive of the user.
        """
        users = tf.cast(users, tf.int64)
        items = tf.cast(items, tf.int64)
        query = users * self.n_items + items
        flat = tf.reshape(query, [-1])
        if self.keys.shape[0] == 0:
            return tf.zeros_like(query, dtype=tf.bool)
        pos = tf.searchsorted(self.keys, flat, out_type=tf.int64)
        found = tf.gather(self.keys, tf.minimum(pos, tf.size(self.keys, out_type=tf.int64) - 1)) == flat
        return tf.reshape(found, tf.shape(query))

    def candidate_mask(self, users: tf.Tensor, candidates: tf.Tensor) -> tf.Tensor:
        """Which candidates are positives of which batch user, looking each user's positives up among the candidates.

        Cost O(Σ|positives of batch users|) lookups, independent of B·C: in a [n_items] table of the candidates'
        columns where the catalog is at most `DENSE_LOOKUP_ITEMS_PER_CANDIDATE` x C (writing it costs less than the
        searches it saves, and stage 1 already does O(n_items) work there), else by a binary search in the sorted
        candidates (O(log C) each).

        Args:
            users: [batch] int user ids.
            candidates: [C] int item ids, sorted ascending, unique (stage 1 output).

        Returns:
            [batch, C] bool.
        """
        users = tf.cast(users, tf.int64)
        candidates = tf.cast(candidates, tf.int64)
        starts = tf.gather(self.indptr, users)
        limits = tf.gather(self.indptr, users + 1)
        positions = tf.ragged.range(starts, limits)  # [batch, (row length)] positions into indices
        items = tf.gather(self.indices, positions.flat_values)
        rows = positions.value_rowids()
        num_candidates = tf.size(candidates, out_type=tf.int64)
        if candidates.shape[0] is not None and self.n_items <= DENSE_LOOKUP_ITEMS_PER_CANDIDATE * candidates.shape[0]:
            # column + 1 of each candidate, 0 elsewhere
            column = tf.scatter_nd(candidates[:, None], tf.range(1, num_candidates + 1), [self.n_items])
            where = tf.gather(column, items) - 1
            hit = where >= 0
        else:
            where = tf.minimum(tf.searchsorted(candidates, items, out_type=tf.int64), num_candidates - 1)
            hit = tf.gather(candidates, where) == items
        # the hits' flat positions in [batch · C]: (user, item) pairs are distinct, so an int8 scatter adds no two
        flat = tf.boolean_mask(rows * num_candidates + where, hit)
        size = tf.size(users, out_type=tf.int64) * num_candidates
        dense = tf.scatter_nd(flat[:, None], tf.ones_like(flat, dtype=tf.int8), tf.reshape(size, [1]))
        return tf.reshape(dense > 0, tf.stack([tf.size(users, out_type=tf.int64), num_candidates]))


#: `PositiveIndex.candidate_mask` looks positives up in a dense [n_items] table where n_items <= this x C
DENSE_LOOKUP_ITEMS_PER_CANDIDATE = 32


class ItemSampler:
    """Draws items i.i.d. from a fixed distribution over the catalog (uniform or popularity^β).

    Sampling with replacement is ``searchsorted`` of uniforms into the cumulative weights: O(log n) per draw, no
    O(n) work per batch, so cost does not grow with the catalog.
    """

    def __init__(self, log_weights: np.ndarray | None, n_items: int):
        self.n_items = int(n_items)
        if log_weights is None:
            self.cdf = None
        else:
            log_weights = np.asarray(log_weights, np.float64)
            if log_weights.shape != (self.n_items,):
                raise ValueError(f"log_weights has shape {log_weights.shape}, expected ({self.n_items},)")
            w = np.exp(log_weights - np.max(log_weights))
            if not np.isfinite(w).all() or w.sum() <= 0:
                raise ValueError("popularity weights must be finite with a positive sum")
            cdf = np.cumsum(w)
            self.cdf = tf.constant(cdf / cdf[-1])  # [n_items] float64
            self.num_drawable = int(np.count_nonzero(w))
            self.log_weights = tf.constant(log_weights.astype(np.float32))

    def sample(self, shape, seed: tf.Tensor) -> tf.Tensor:
        """Items with replacement.

        Args:
            shape: output shape (list or 1-D tensor).
            seed: [2] int stateless seed.

        Returns:
            ``shape`` int64 item ids.
        """
        if self.cdf is None:
            return tf.random.stateless_uniform(shape, seed, minval=0, maxval=self.n_items, dtype=tf.int64)
        u = tf.random.stateless_uniform(shape, seed, dtype=tf.float64)
        flat = tf.searchsorted(self.cdf, tf.reshape(u, [-1]), side="right")
        return tf.reshape(tf.minimum(tf.cast(flat, tf.int64), self.n_items - 1), tf.shape(u))

    def sample_without_replacement(self, num: int, seed: tf.Tensor, ordered: bool = True) -> tf.Tensor:
        """``num`` distinct items drawn successively (probability renormalised over the items not yet drawn).

        Exact successive sampling in either of two ways, chosen by speed: for small catalogs, Gumbel top-k over all
        items (O(n)); otherwise i.i.d. draws with first occurrences kept in order (``tf.unique`` preserves first
        appearance), which is the same distribution and costs O(num · log n) for skewed or large catalogs.

        Args:
            num: number of distinct items C (<= number of drawable items).
            seed: [2] int stateless seed.
            ordered: whether the ids must come in draw order. A caller that needs only the set passes False and
                gets it ascending by id (the same set as with True): for small catalogs the Gumbel keys' top
                ``num`` are then selected without sorting the keys.

        Returns:
            [num] int64 distinct item ids: in draw order, or if not ``ordered`` the same set ascending.
        """
        if self.cdf is None:
            log_w = tf.zeros([self.n_items], tf.float32)
            drawable = self.n_items
        else:
            log_w = self.log_weights
            drawable = self.num_drawable
        if num > drawable:
            raise ValueError(f"cannot draw {num} distinct items from {drawable} drawable items")
        if self.n_items <= 32 * num:
            u = tf.random.stateless_uniform([self.n_items], seed, 1e-20, 1.0)
            if not ordered:
                # the same num largest keys found by bisection on their order-preserving int32 images, compiled
                # (top_k with k = 2000 of 26,000 costs about 0.2-0.4 ms more a batch); comes out sorted by id
                return tf.ensure_shape(tf.where(_gumbel_top_set(u, log_w, num=num))[:num, 0], [num])
            gumbel = -tf.math.log(-tf.math.log(u))
            return tf.cast(tf.math.top_k(log_w + gumbel, k=num).indices, tf.int64)

        seeds = tf.random.experimental.stateless_split(seed, num=2)

        def cond(round_, unique):
            return tf.size(unique) < num

        def body(round_, unique):
            draws = self.sample([2 * num], tf.random.experimental.stateless_fold_in(seeds[1], round_))
            merged, _ = tf.unique(tf.concat([unique, draws], axis=0))
            return round_ + 1, merged

        first, _ = tf.unique(self.sample([2 * num], seeds[0]))
        _, unique = tf.while_loop(
            cond, body, (tf.constant(0, tf.int64), first), shape_invariants=(tf.TensorShape([]), tf.TensorShape([None]))
        )
        return tf.ensure_shape(unique[:num] if ordered else tf.sort(unique[:num]), [num])


@tf.function(jit_compile=True)
def _gumbel_top_set(u: tf.Tensor, log_w: tf.Tensor, *, num: int) -> tf.Tensor:
    """Which items hold the ``num`` largest Gumbel keys log w + G, G = −log(−log u), as a mask (one XLA loop).

    The keys' float32 bits map to int32 in the same order (negative floats: all bits but the sign flipped), and a
    bisection over that int range finds the largest threshold T with at least ``num`` keys >= T: the ``num``-th
    largest key. Exactly ``num`` items pass unless keys tie at T (continuous noise: probability ~0; the caller keeps
    the first ``num`` by id). Items of weight 0 (key −inf) pass only if fewer than ``num`` others can.

    Args:
        u: [n] float32 uniforms in (0, 1).
        log_w: [n] float32 log weights (−inf: never drawn).
        num: the set size (a constant of the compiled function).

    Returns:
        [n] bool.
    """
    bits = tf.bitcast(log_w - tf.math.log(-tf.math.log(u)), tf.int32)
    keys = tf.where(bits < 0, bits ^ tf.constant(0x7FFFFFFF, tf.int32), bits)  # int order = float order
    lo = tf.cast(tf.reduce_min(keys), tf.int64)  # count(keys >= lo) = n >= num
    hi = tf.cast(tf.reduce_max(keys), tf.int64)

    def body(lo, hi):
        mid = (lo + hi + 1) // 2
        enough = tf.reduce_sum(tf.cast(keys >= tf.cast(mid, tf.int32), tf.int32)) >= num
        return tf.where(enough, mid, lo), tf.where(enough, hi, mid - 1)

    lo, _ = tf.while_loop(lambda lo, hi: lo < hi, body, (lo, hi))
    return keys >= tf.cast(lo, tf.int32)


def _segment_count_le(values: tf.Tensor, starts: tf.Tensor, lengths: tf.Tensor, queries: tf.Tensor, depth: int):
    """For each query, how many entries of its segment of ``values`` are <= the query (binary search).

    Args:
        values: [nnz] values, nondecreasing within each segment.
        starts: [...] int64 first position of each query's segment.
        lengths: [...] int64 segment lengths.
        queries: [...] values to search, same dtype as ``values``.
        depth: number of halvings, >= log2(longest segment + 1) (a Python int: the loop is unrolled).

    Returns:
        [...] int64 counts in [0, lengths].
    """
    starts, lengths = tf.cast(starts, tf.int64), tf.cast(lengths, tf.int64)
    lo, hi = starts, starts + lengths
    last = tf.maximum(tf.size(values, out_type=tf.int64) - 1, 0)
    for _ in range(depth):
        active = lo < hi
        mid = (lo + hi) // 2
        le = tf.gather(values, tf.minimum(mid, last)) <= queries
        lo = tf.where(active & le, mid + 1, lo)
        hi = tf.where(active & ~le, mid, hi)
    return lo - starts


class NegativeSampler:
    """Negatives drawn exactly from each user's complement: never a training positive of the user.

    ``uniform``: the r-th non-positive item of user u, r uniform in [0, n − |P_u|), is r + #{i : p_i − i ≤ r} for the
    user's sorted positives p_0 < p_1 < …; the count is a binary search in the user's row.
    ``popular``: target t uniform on the user's non-positive mass [0, 1 − W_u); the positives whose non-positive mass
    before them c_i = F(p_i⁻) − Σ_{j<i} w(p_j) is <= t lie before the draw, so the draw is the item where the full
    CDF passes t + Σ of their weights. Both cost O(log |P_u|) per draw, nothing per catalog item.
    Float rounding could in principle land a popular draw on a positive or an item of zero weight; such draws (and
    those of users whose every drawable item is a positive) are replaced by the exact uniform draw, so "never a
    positive" holds unconditionally. A user who holds every item has no negative; such a user gets item n − 1.

    Args:
        train: [n_users, n_items] CSR of training positives.
        log_weights: [n_items] log item weights (popularity^β), or None for uniform.
    """

    def __init__(self, train: sp.csr_matrix, log_weights: np.ndarray | None = None):
        train = sp.csr_matrix(train)
        train.sort_indices()
        self.n_users, self.n_items = train.shape
        degree = np.diff(train.indptr).astype(np.int64)
        self.depth = int(np.ceil(np.log2(degree.max(initial=0) + 2)))
        local = np.arange(train.nnz, dtype=np.int64) - np.repeat(train.indptr[:-1].astype(np.int64), degree)
        self.starts = tf.constant(train.indptr[:-1].astype(np.int64))
        self.degree = tf.constant(degree)
        self.shifted = tf.constant(train.indices.astype(np.int64) - local)  # p_i − i, nondecreasing per row
        self.index = PositiveIndex(train)
        self.cdf = None
        if log_weights is not None:
            log_weights = np.asarray(log_weights, np.float64)
            w = np.exp(log_weights - np.max(log_weights))
            if log_weights.shape != (self.n_items,) or not np.isfinite(w).all() or w.sum() <= 0:
                raise ValueError("popularity weights must be finite, one per item, with a positive sum")
            w = w / w.sum()
            cdf = np.cumsum(w)
            pos_w = w[train.indices]
            # Σ_{j<=i} w(p_j) within each row: a running sum over all rows less the row's base, accumulated in extended
            # precision so that the difference keeps the small weights of a large catalog exact
            incl = np.cumsum(pos_w.astype(np.longdouble))
            row_base = np.repeat(np.concatenate([[0.0], incl])[train.indptr[:-1]], degree)
            within_incl = (incl - row_base).astype(np.float64)
            self.cdf = tf.constant(cdf)
            self.weights = tf.constant(w)
            self.mass_before = tf.constant(cdf[train.indices] - pos_w - (within_incl - pos_w))  # c_i
            self.within_incl = tf.constant(within_incl)
            rows = np.repeat(np.arange(self.n_users), degree)
            self.positive_mass = tf.constant(np.bincount(rows, weights=pos_w, minlength=self.n_users))

    def _uniform(self, users, shape, seed):
        starts, degree = tf.gather(self.starts, users), tf.gather(self.degree, users)
        free = tf.maximum(self.n_items - degree, 1)
        u = tf.random.stateless_uniform(shape, seed, dtype=tf.float64)
        r = tf.minimum(tf.cast(tf.floor(u * tf.cast(free, tf.float64)), tf.int64), free - 1)
        k = _segment_count_le(self.shifted, starts, degree, r, self.depth)
        return tf.minimum(r + k, self.n_items - 1)

    def draw_probs(self, users: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
        """P(one draw for the row's user is the item), for an item that is not a positive of the user.

        Uniform: 1 / (n − |P_u|); popular: w_j / Σ_{k ∉ P_u} w_k. (Zero for a positive, which is never drawn; the
        caller knows which items are positives, so that indicator is left out here.)

        Args:
            users: [batch] int user ids.
            items: [batch, M] int item ids.

        Returns:
            [batch, M] float64 probabilities.
        """
        users = tf.cast(users, tf.int64)
        items = tf.cast(items, tf.int64)
        if self.cdf is None:
            free = tf.cast(tf.maximum(self.n_items - tf.gather(self.degree, users), 1), tf.float64)
            return tf.broadcast_to((1.0 / free)[:, None], tf.shape(items))
        free_mass = tf.maximum(1.0 - tf.gather(self.positive_mass, users), 1e-300)
        return tf.gather(self.weights, items) / free_mass[:, None]

    def sample(self, users: tf.Tensor, num: int, seed: tf.Tensor) -> tf.Tensor:
        """``num`` negatives per user, with replacement.

        Args:
            users: [batch] int user ids.
            num: negatives per user.
            seed: [2] int stateless seed.

        Returns:
            [batch, num] int64 item ids, none a training positive of its user.
        """
        users = tf.cast(users, tf.int64)[:, None] * tf.ones([1, num], tf.int64)  # [batch, num]
        shape = tf.shape(users)
        seeds = tf.random.experimental.stateless_split(seed, num=2)
        exact_uniform = self._uniform(users, shape, seeds[0])
        if self.cdf is None:
            return exact_uniform
        starts, degree = tf.gather(self.starts, users), tf.gather(self.degree, users)
        free_mass = 1.0 - tf.gather(self.positive_mass, users)
        t = tf.random.stateless_uniform(shape, seeds[1], dtype=tf.float64) * free_mass
        k = _segment_count_le(self.mass_before, starts, degree, t, self.depth)
        last_before = tf.maximum(starts + k - 1, 0)
        skipped = tf.where(
            k > 0, tf.gather(self.within_incl, tf.minimum(last_before, tf.size(self.within_incl, tf.int64) - 1)), 0.0
        )
        x = t + skipped
        drawn = tf.minimum(
            tf.searchsorted(self.cdf, tf.reshape(x, [-1]), side="right", out_type=tf.int64), self.n_items - 1
        )
        drawn = tf.reshape(drawn, shape)
        bad = (free_mass <= 0) | (tf.gather(self.weights, drawn) <= 0) | self.index.contains(users, drawn)
        return tf.where(bad, exact_uniform, drawn)
