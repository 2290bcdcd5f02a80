"""Stage 2 of the 2-stage sampler (Tran et al. 2019): negatives among the stage-1 candidates by inverse density.

Inside the training step, stage 2 draws |N_ij| negatives per positive v_j among the C stage-1 candidates with
probability ∝ w(s), s = v_jᵀv_n, by distance-weighted sampling (Wu et al. 2017, the paper's reference [21]): the
inverse density q(s)⁻¹ of the dot product of two random unit vectors, q(s) ∝ (1 − s²)^((d−3)/2), taken relative to
its value at s = 0 and capped at λ,

    w(s) = min(λ, (1 − s²)^(−(d−3)/2))   for 0 ≤ s and D(v_j, v_n) = √(2 − 2s) ≥ D_min;   w(s) = 0 otherwise.

λ = ∞ is the paper taken literally (at d = 128 hardest-negative mining), λ = 1 is uniform over the candidates with
s ≥ 0. The cut-off D_min ignores candidates closer than D_min to the positive. ``mask_opposite=False`` weighs the
candidates with s < 0 by w(|s|) instead of 0 (the density is symmetric; the original code masks them). A mixture
``uniform_mix`` = ρ draws from (1 − ρ)·w / Σw + ρ·uniform over the non-positive candidates.

The |N_ij| draws of a row are successive (without replacement: each draw renormalised over the candidates not yet
drawn, as the original's ``np.random.choice(replace=False)``) or independent (``replacement=True``). A draw falls
back in three levels, always to real candidates (indices in [0, C)):

1. ∝ w (or the ``uniform_mix`` mixture) over the candidates not yet drawn (successive) or all candidates
   (independent), positives weighing 0;
2. where none of those has a weight: uniform over the non-positive ones;
3. where no non-positive one is left either: uniform over the candidates not yet drawn (independent: all C), which
   are then all positives of the user.

So successive draws take a positive only once every non-positive candidate has been drawn: a row with m < |N_ij|
non-positive candidates returns all m of them first, then |N_ij| − m distinct positives uniformly (|N_ij| <= C is
the config's rule); it happens when a user holds at least C − |N_ij| + 1 of the candidates (C lowered to a small
catalog). Independent draws take a positive only in a row whose C candidates are all positives.
Weights are computed as logits (the uncapped ones overflow float32 at d = 128) and every draw is one
inverse-CDF search, so the whole stage compiles with XLA into a few loops over the [batch, C] matrix. Seeds are
stateless ([2] ints), as in `cml_tf.sampling.negatives`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def inverse_density_logits(similarities: tf.Tensor, dim: int, clip: float = 1.0 - 1e-6) -> tf.Tensor:
    """log(q(0) / q(s)) for the density q(s) ∝ (1 − s²)^((d−3)/2) of random unit vectors' dot products; −inf for s < 0.

    Args:
        similarities: [...] dot products s of unit vectors.
        dim: embedding dimension d.
        clip: upper clip of s (s = 1 would be infinite).

    Returns:
        [...] float logits ``−((d−3)/2)·log(1 − s²)`` (0 at s = 0) for 0 <= s, −inf otherwise.
    """
    s = tf.minimum(similarities, clip)
    logits = -0.5 * (dim - 3.0) * tf.math.log1p(-tf.square(s))
    return tf.where(similarities >= 0.0, logits, tf.constant(-np.inf, logits.dtype))


def stage2_logits(
    similarities: tf.Tensor,
    dim: int,
    weight_cap: float | None = None,
    cutoff: float = 0.0,
    mask_opposite: bool = True,
) -> tf.Tensor:
    """log w(s) of distance-weighted sampling (Wu et al. 2017): w(s) = min(λ, q(0)/q(s)), 0 below the cut-off.

    Args:
        similarities: [...] dot products s of the positive's and the candidates' unit vectors.
        dim: embedding dimension d.
        weight_cap: λ >= 1, the cap on the inverse-density weight in units of its value at s = 0 (the density's
            mode: a candidate orthogonal to the positive has weight 1). None: uncapped, the paper taken literally.
            λ = 1 gives every candidate with s >= 0 the same weight.
        cutoff: D_min in [0, 2]: candidates closer to the positive than this distance on the unit sphere,
            D = √(2 − 2s) < D_min, get weight 0 (ignored). 0 disables.
        mask_opposite: s < 0 gets weight 0 (True, the paper and the original code) or w(|s|) (False).

    Returns:
        [...] float logits, −inf where the weight is 0 (s < 0 when masked, or closer than the cut-off).
    """
    logits = inverse_density_logits(similarities if mask_opposite else tf.abs(similarities), dim)
    if weight_cap is not None:
        logits = tf.minimum(logits, float(np.log(weight_cap)))
    if cutoff > 0:
        # D < D_min  <=>  s > 1 − D_min² / 2
        too_close = similarities > 1.0 - 0.5 * cutoff * cutoff
        logits = tf.where(too_close, tf.constant(-np.inf, logits.dtype), logits)
    return logits


def two_stage_select(
    positive_vectors: tf.Tensor,
    candidate_vectors: tf.Tensor,
    candidate_is_positive: tf.Tensor,
    num: int,
    seed: tf.Tensor,
    weight_cap: float | None = None,
    cutoff: float = 0.0,
    mask_opposite: bool = True,
    replacement: bool = False,
    uniform_mix: float = 0.0,
) -> tf.Tensor:
    """Stage 2: picks ``num`` candidates per positive ∝ the capped inverse density w(s) (XLA-compiled).

    Args:
        positive_vectors: [batch, d] unit vectors of the positive items (no gradient needed).
        candidate_vectors: [C, d] unit vectors of the stage-1 candidates.
        candidate_is_positive: [batch, C] bool, candidates that are positives of the row's user: weight 0, drawn
            only where no non-positive candidate is left (the module's fallback levels 1-3: uniformly, after all
            the non-positive ones).
        num: |N_ij| <= C.
        seed: [2] int stateless seed.
        weight_cap: λ of `stage2_logits` (None: the paper's uncapped weights, hardest-negative mining at d = 128).
        cutoff: D_min of `stage2_logits` (0: off).
        mask_opposite: `stage2_logits`' treatment of s < 0 (True: weight 0).
        replacement: independent draws (True) or successive draws without replacement (False).
        uniform_mix: ρ in [0, 1]: the weight of uniform over the non-positive candidates in the mixture.

    Returns:
        [batch, num] int32 indices into the candidates, in [0, C); distinct within a row unless ``replacement``.
    """
    options = dict(
        weight_cap=None if weight_cap is None else float(weight_cap),
        cutoff=float(cutoff),
        mask_opposite=bool(mask_opposite),
        uniform_mix=float(uniform_mix),
    )
    num, rows = int(num), tf.shape(positive_vectors)[0]
    args = (positive_vectors, candidate_vectors, candidate_is_positive)
    if replacement or num == 1:
        uniforms = None if num == 1 else _uniforms(seed, rows, num, positive_vectors.dtype)
        return _select_independent(*args, seed, uniforms, num=num, **options)
    return _select_successive(
        *args, _uniforms(seed, rows, _tries(num) + num, positive_vectors.dtype), num=num, **options
    )


def _uniforms(seed: tf.Tensor, rows: tf.Tensor, width: int, dtype) -> tf.Tensor:
    """[rows, width] stateless uniforms for the draws at |N_ij| > 1, made OUTSIDE the XLA-compiled selection: XLA's
    CPU generator took about 1.5 ms for 256 × 15 numbers (measured on 2 cores; TensorFlow's kernel about 0.1 ms)."""
    return tf.random.stateless_uniform(tf.stack([rows, width]), seed, dtype=dtype)


def _tries(num: int) -> int:
    """Independent draws a row takes before keeping its first ``num`` distinct ones (successive draws)."""
    return 2 * num


def _logits(positive_vectors, candidate_vectors, weight_cap, cutoff, mask_opposite):
    s = tf.matmul(positive_vectors, candidate_vectors, transpose_b=True)  # [batch, C]
    return stage2_logits(s, positive_vectors.shape[-1], weight_cap, cutoff, mask_opposite)


@tf.function(jit_compile=True)
def _select_independent(
    positive_vectors,
    candidate_vectors,
    candidate_is_positive,
    seed,
    uniforms,
    *,
    num,
    weight_cap,
    cutoff,
    mask_opposite,
    uniform_mix,
):
    """Independent draws by inverse CDF, compiled with XLA: the similarities, logits and draws fuse into a few loops
    over the [batch, C] matrix (measured on 2 CPU cores, B=256, C=2000, |N_ij| = 1: 3.0 ms against 5.9 ms unfused).
    Gumbel noise is not used: XLA's CPU random generator is slow for B·C numbers. At |N_ij| = 1 the row's uniform
    is made here from ``seed`` (``uniforms`` None); at |N_ij| > 1 ``uniforms`` [batch, num] come from `_uniforms`.
    The keyword arguments are Python values: constants of the compiled function (one trace per setting)."""
    logits = _logits(positive_vectors, candidate_vectors, weight_cap, cutoff, mask_opposite)
    weights, fallback = _draw_weights(logits, candidate_is_positive, uniform_mix)
    if uniforms is None:  # |N_ij| = 1: the row's one uniform, made here from the seed
        u = tf.random.stateless_uniform(tf.stack([tf.shape(logits)[0], num]), seed, dtype=logits.dtype)  # [batch, 1]
    else:
        u = uniforms  # [batch, num]
    return _inverse_cdf(weights, fallback, u) if num == 1 else _inverse_cdf_blocked(weights, fallback, u)


@tf.function(jit_compile=True)
def _select_successive(
    positive_vectors,
    candidate_vectors,
    candidate_is_positive,
    u,
    *,
    num,
    weight_cap,
    cutoff,
    mask_opposite,
    uniform_mix,
):
    """Successive draws (without replacement), compiled with XLA: the first ``num`` distinct items of a sequence of
    independent draws are exactly a successive sample. Each row takes 2·``num`` independent inverse-CDF draws from
    one cumulative sum and keeps its first distinct ones; a row left short (repeats, or fewer weighted candidates
    than ``num``) is completed draw by draw, each renormalised over the candidates not yet drawn, which continues the
    same sequence: ∝ w while a weight is left, then uniform over the remaining non-positive candidates, then uniform
    over the remaining candidates (all positives; the tries of a row without any non-positive candidate are uniform
    over all C, the first level-3 draws)."""
    logits = _logits(positive_vectors, candidate_vectors, weight_cap, cutoff, mask_opposite)
    weights, fallback = _draw_weights(logits, candidate_is_positive, uniform_mix, bounded=weight_cap is not None)
    tries = _tries(num)  # u: [batch, tries + num] uniforms, the tries' and then the completion's
    draws = _inverse_cdf_blocked(weights, fallback, u[:, :tries])  # [batch, tries]
    earlier = tf.linalg.band_part(tf.ones([tries, tries], tf.bool), -1, 0) & ~tf.eye(tries, dtype=tf.bool)
    repeat = tf.reduce_any((draws[:, :, None] == draws[:, None, :]) & earlier[None], axis=2)  # seen before in the row
    rank = tf.cumsum(tf.cast(~repeat, tf.int32), axis=1) - 1  # [batch, tries]: place among the distinct draws
    picks, found = [], []
    for k in range(num):
        at = (rank == k) & ~repeat
        picks.append(tf.gather(draws, tf.argmax(tf.cast(at, tf.int32), axis=1, output_type=tf.int32), batch_dims=1))
        found.append(tf.reduce_any(at, axis=1))
    picks, found = tf.stack(picks, axis=1), tf.stack(found, axis=1)  # [batch, num]

    def complete():
        taken = tf.reduce_any(
            tf.one_hot(picks, tf.shape(logits)[1], on_value=True, off_value=False) & found[..., None], 1
        )
        w, f, out = tf.where(taken, 0.0, weights), tf.where(taken, 0.0, fallback), []
        for k in range(num):
            v = u[:, tries + k : tries + k + 1]
            # level 3 (no non-positive candidate left): uniform over the candidates not yet drawn, the row's
            # draws so far and its found picks still to come (distinct) excluded
            drawn_so_far = tf.stack(out + [picks[:, j] for j in range(k, num)], axis=1)  # [batch, num]
            valid = tf.concat([tf.ones_like(found[:, :k]), found[:, k:]], axis=1)
            level3 = _uniform_index_excluding(v, tf.shape(logits)[1], drawn_so_far, valid)
            drawn = _inverse_cdf_blocked(w, f, v, uniform=level3)[:, 0]
            pick = tf.where(found[:, k], picks[:, k], drawn)
            new = tf.one_hot(pick, tf.shape(logits)[1], on_value=True, off_value=False) & ~found[:, k : k + 1]
            w, f = tf.where(new, 0.0, w), tf.where(new, 0.0, f)
            out.append(pick)
        return tf.stack(out, axis=1)

    return tf.cond(tf.reduce_all(found), lambda: picks, complete)


def _draw_weights(logits: tf.Tensor, candidate_is_positive: tf.Tensor, uniform_mix: float, bounded: bool = False):
    """The [batch, C] weights a row draws from, and the uniform fallback used where they are all zero.

    Args:
        logits: [batch, C] stage-2 logits (−inf where the weight is 0).
        candidate_is_positive: [batch, C] bool.
        uniform_mix: ρ of the mixture with uniform over the non-positive candidates (0: none).
        bounded: the finite logits lie in [0, log λ] (capped weights: w(s) >= w(0) = 1, at most λ), so ``exp``
            cannot overflow or underflow to 0 and the row max need not be subtracted (one pass over [batch, C]
            fewer).

    Returns:
        (weights, fallback), both [batch, C] float, 0 on the positives; weights are relative within a row.
    """
    valid = tf.math.is_finite(logits) & ~candidate_is_positive
    if bounded and uniform_mix == 0:
        return tf.where(valid, tf.exp(logits), 0.0), tf.cast(~candidate_is_positive, logits.dtype)
    masked = tf.where(valid, logits, tf.constant(-np.inf, logits.dtype))
    row_max = tf.reduce_max(masked, axis=1, keepdims=True)  # −inf where no candidate is valid
    has_valid = tf.math.is_finite(row_max)
    weights = tf.where(valid, tf.exp(masked - tf.where(has_valid, row_max, 0.0)), 0.0)
    fallback = tf.cast(~candidate_is_positive, weights.dtype)
    if uniform_mix > 0:
        w_sum = tf.reduce_sum(weights, axis=1, keepdims=True)
        f_sum = tf.maximum(tf.reduce_sum(fallback, axis=1, keepdims=True), 1.0)
        mixed = (1.0 - uniform_mix) * weights / tf.maximum(w_sum, 1e-30) + uniform_mix * fallback / f_sum
        weights = tf.where(w_sum > 0, mixed, 0.0)
    return weights, fallback


#: candidates per block of the two-level inverse CDF (several draws per row)
_BLOCK = 64


def _inverse_cdf_blocked(
    weights: tf.Tensor, fallback: tf.Tensor, u: tf.Tensor, uniform: tf.Tensor | None = None
) -> tf.Tensor:
    """`_inverse_cdf` for several draws per row at O(C / 64 + 64) per draw instead of O(C): under XLA a search is a
    compare-and-count over the row, so the row is cut into blocks of `_BLOCK` candidates: a draw first finds its block
    among the block totals, then its candidate inside the block. Same distribution (up to float rounding of sums).

    The sums are matrix products with a triangular matrix of ones, not ``cumsum``: XLA's CPU scans and inner-axis
    reductions are several times slower than its dot (measured on 2 cores, B = 256, C = 2000: 10 draws a row in
    2.5 ms against 3.7 ms with ``cumsum``). A product's partial sums need not be monotone in the last bit, so a draw
    is the first candidate whose cumulative weight passes the target AND whose own weight is positive: never a
    candidate of weight 0, whatever the rounding.

    Args / Returns: as `_inverse_cdf`; ``uniform`` [batch, n] int32 are the draws of the rows with neither weight
    nor fallback (None: ⌊u·C⌋, uniform over all C).
    """
    b, c = tf.shape(weights)[0], tf.shape(weights)[1]
    blocks = (c + _BLOCK - 1) // _BLOCK

    def block_sums(x):  # ([b, blocks, _BLOCK] the row cut in blocks, [b, blocks] their totals)
        per_block = tf.reshape(tf.pad(x, [[0, 0], [0, blocks * _BLOCK - c]]), [b, blocks, _BLOCK])
        return per_block, tf.squeeze(tf.matmul(per_block, tf.ones([_BLOCK, 1], x.dtype)), axis=2)

    per_block, totals = block_sums(weights)
    # a row without weight draws from the fallback (a block total is > 0 iff one of its weights is)
    has_weight = tf.reduce_any(totals > 0, axis=1, keepdims=True)  # [b, 1]
    fallback_blocks, fallback_totals = block_sums(fallback)
    per_block = tf.where(has_weight[:, :, None], per_block, fallback_blocks)
    totals = tf.where(has_weight, totals, fallback_totals)
    block_cdf = tf.matmul(totals, _upper_ones(blocks, weights.dtype))  # [b, blocks] inclusive prefix sums
    target = u * block_cdf[:, -1:]  # [b, n]
    # the block: the first whose cumulative total passes the target and which has weight (the last such, if
    # rounding says none passes)
    passes = (block_cdf[:, None, :] > target[:, :, None]) & (totals > 0)[:, None, :]  # [b, n, blocks]
    last_block = blocks - 1 - tf.argmax(tf.reverse(totals > 0, axis=[1]), axis=1, output_type=tf.int32)
    block = _first_true(passes, fallback=last_block[:, None])
    before = tf.where(block > 0, tf.gather(block_cdf, tf.maximum(block - 1, 0), batch_dims=1), 0.0)
    inner = tf.gather(per_block, block, batch_dims=1)  # [b, n, _BLOCK]
    inner_cdf = tf.matmul(inner, _upper_ones(_BLOCK, weights.dtype))
    passes = (inner_cdf > (target - before)[:, :, None]) & (inner > 0)
    last_inner = _BLOCK - 1 - tf.argmax(tf.reverse(inner > 0, axis=[2]), axis=2, output_type=tf.int32)
    picked = block * _BLOCK + _first_true(passes, fallback=last_inner)
    # a row with neither weight nor fallback (all totals 0) would land on the padding: the uniform draws instead
    uniform = _uniform_index(u, c) if uniform is None else uniform
    return tf.where(tf.reduce_any(totals > 0, axis=1, keepdims=True), picked, uniform)


def _uniform_index(u: tf.Tensor, c: tf.Tensor) -> tf.Tensor:
    """[...] int32 ⌊u·C⌋ of uniforms ``u`` in [0, 1): uniform over [0, C) (clipped at C − 1 against rounding);
    ``c`` a scalar or broadcastable to ``u``."""
    return tf.minimum(tf.cast(tf.floor(u * tf.cast(c, u.dtype)), tf.int32), c - 1)


def _uniform_index_excluding(u: tf.Tensor, c: tf.Tensor, taken: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """Uniform draws over [0, C) minus each row's taken indices, in O(k) per row (no pass over [batch, C]).

    The r-th index not taken, r = ⌊u·(C − m)⌋ with m taken: r is raised by one for each taken index at or below it,
    in ascending order.

    Args:
        u: [batch, 1] uniforms in [0, 1).
        c: C, the number of candidates (scalar).
        taken: [batch, k] int32 indices in [0, C), distinct where ``valid`` in a row.
        valid: [batch, k] bool, which of ``taken`` count (at least one index must be left: m < C).

    Returns:
        [batch, 1] int32 indices in [0, C), none of them a valid taken one.
    """
    taken = tf.sort(tf.where(valid, taken, c), axis=1)  # the invalid ones sort last, above every draw
    m = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1, keepdims=True)  # [batch, 1]
    r = _uniform_index(u, c - m)
    for j in range(taken.shape[1]):
        r += tf.cast(r >= taken[:, j : j + 1], tf.int32)
    return r


def _upper_ones(n, dtype) -> tf.Tensor:
    """[n, n] ones on and above the diagonal: ``x @ _upper_ones(n)`` is the inclusive prefix sum of x's rows."""
    return tf.linalg.band_part(tf.ones(tf.stack([n, n]), dtype), 0, -1)


def _first_true(mask: tf.Tensor, fallback: tf.Tensor) -> tf.Tensor:
    """[...] int32 index of the first True along the last axis of ``mask`` [..., k]; ``fallback`` where none is."""
    first = tf.argmax(tf.cast(mask, tf.int32), axis=-1, output_type=tf.int32)
    return tf.where(tf.reduce_any(mask, axis=-1), first, fallback)


def _inverse_cdf(weights: tf.Tensor, fallback: tf.Tensor, u: tf.Tensor) -> tf.Tensor:
    """Draws per row from ``weights`` (or ``fallback`` where a row's weights are all 0) by inverse CDF.

    The same distribution as Gumbel top-1, at the cost of one cumulative sum per row and ONE uniform per draw
    instead of a uniform and two logs per candidate.

    Args:
        weights: [batch, C] non-negative weights.
        fallback: [batch, C] non-negative weights of the fallback.
        u: [batch, n] uniforms in [0, 1): n independent draws per row.

    Returns:
        [batch, n] int32 indices into the candidates, in [0, C): where a row has neither weight nor fallback
        (every candidate a positive), uniform over all C.
    """
    has_weight = tf.reduce_any(weights > 0, axis=1, keepdims=True)
    weights = tf.where(has_weight, weights, fallback)
    cdf = tf.cumsum(weights, axis=1)
    picked = tf.searchsorted(cdf, u * cdf[:, -1:], side="right", out_type=tf.int32)  # first index with cdf > u
    # guard against u * total rounding up to total: the last candidate with a positive weight
    num_candidates = tf.shape(cdf)[1]
    last = num_candidates - 1 - tf.argmax(tf.reverse(weights > 0, axis=[1]), axis=1, output_type=tf.int32)
    picked = tf.minimum(picked, last[:, None])
    return tf.where(cdf[:, -1:] > 0, picked, _uniform_index(u, num_candidates))
