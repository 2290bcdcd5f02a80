"""cml_tf.sampling.two_stage: the capped inverse density and stage 2's draws against the definition."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow as tf
from references import chi2_pvalue, successive_pair_probs, tf_seed

from cml_tf.sampling import two_stage as T


# ----------------------------------------------------------------------------------------- inverse density
def test_inverse_density_logits_values():
    s = np.array([-0.5, -1e-3, 0.0, 0.3, 0.8, 0.99], np.float32)
    d = 10
    got = T.inverse_density_logits(tf.constant(s), d).numpy()
    assert np.isneginf(got[:2]).all()
    ref = -((d - 3) / 2) * np.log(1 - s[2:].astype(np.float64) ** 2)
    np.testing.assert_allclose(got[2:], ref, rtol=1e-5, atol=1e-7)
    assert got[2] == 0.0
    # monotone increasing in s >= 0: closer candidates are favoured
    assert np.all(np.diff(got[2:]) > 0)


def test_inverse_density_logits_clipped_at_one_and_no_overflow_d128():
    s = tf.constant([0.5, 0.999, 0.99999, 1.0, 1.0000001], tf.float32)
    got = T.inverse_density_logits(s, 128).numpy()
    assert np.isfinite(got).all()
    # the weights themselves overflow float32: exp(logit) is inf for s = 0.999 at d = 128
    with np.errstate(over="ignore"):
        assert np.isinf(np.exp(got[1].astype(np.float32)))
    assert got[1] == pytest.approx(-62.5 * np.log(1 - 0.999**2), rel=1e-3)
    assert got[3] == got[4] and got[3] >= got[2]  # values above the clip are clipped, not NaN


# ----------------------------------------------------------------------------------------- two-stage select
def _vectors_with_similarities(sims, d=8):
    """A positive e1 and candidates with exact dot products ``sims`` with it (unit vectors)."""
    sims = np.asarray(sims, np.float64)
    pos = np.zeros(d)
    pos[0] = 1.0
    cands = np.zeros((len(sims), d))
    cands[:, 0] = sims
    cands[:, 1] = np.sqrt(1 - sims**2)
    return pos.astype(np.float32), cands.astype(np.float32)


def _tile_select(pos, cands, mask_row, rows, num, seed):
    return T.two_stage_select(
        tf.constant(np.tile(pos, (rows, 1))),
        tf.constant(cands),
        tf.constant(np.tile(mask_row, (rows, 1))),
        num,
        seed,
    ).numpy()


def test_two_stage_select_distribution_matches_softmax_of_valid():
    sims = [0.9, 0.5, 0.0, -0.3, 0.7, 0.95]
    pos, cands = _vectors_with_similarities(sims, d=8)
    mask = np.array([False, False, False, False, False, True])  # the most similar one is a positive
    picked = _tile_select(pos, cands, mask, 40_000, 1, tf_seed(21)).ravel()
    # reference from the definition: p ∝ 1 / (1 - s^2)^((d-3)/2) over s >= 0, non-positive
    s = np.array(sims)
    w = np.where((s >= 0) & ~mask, (1 - s**2) ** (-(8 - 3) / 2), 0.0)
    assert chi2_pvalue(np.bincount(picked, minlength=6), w / w.sum()) > 1e-3
    # a uniform choice over the valid candidates would be rejected by the same check
    uniform = np.where((s >= 0) & ~mask, 1.0, 0.0)
    assert chi2_pvalue(np.bincount(picked, minlength=6), uniform / uniform.sum()) < 1e-6


def test_two_stage_select_without_replacement_never_positive():
    rng = np.random.default_rng(7)
    b, c, d = 64, 20, 16
    pos = rng.normal(size=(b, d))
    cand = rng.normal(size=(c, d))
    cand[:10] = pos[:1] + 0.3 * rng.normal(size=(10, d))  # several candidates with s >= 0
    pos /= np.linalg.norm(pos, axis=1, keepdims=True)
    cand /= np.linalg.norm(cand, axis=1, keepdims=True)
    mask = rng.random((b, c)) < 0.4
    picked = T.two_stage_select(
        tf.constant(pos, tf.float32), tf.constant(cand, tf.float32), tf.constant(mask), 5, tf_seed(2)
    ).numpy()
    assert picked.shape == (b, 5)
    assert all(len(set(row)) == 5 for row in picked.tolist())
    assert not mask[np.arange(b)[:, None], picked].any()
    # only s >= 0 candidates are drawn while at least 5 of them are valid in the row
    s = pos @ cand.T
    for r in range(b):
        valid = (s[r] >= 0) & ~mask[r]
        if valid.sum() >= 5:
            assert valid[picked[r]].all(), r


def test_two_stage_select_pairs_follow_successive_sampling():
    sims = [0.9, 0.6, 0.2, 0.0]
    pos, cands = _vectors_with_similarities(sims, d=6)
    picked = _tile_select(pos, cands, np.zeros(4, bool), 30_000, 2, tf_seed(5))
    w = (1 - np.array(sims) ** 2) ** (-(6 - 3) / 2)
    exact = successive_pair_probs(w)
    keys = sorted(exact)
    emp = {k: 0 for k in keys}
    for a, b in picked.tolist():
        emp[(a, b)] += 1
    assert chi2_pvalue([emp[k] for k in keys], [exact[k] for k in keys]) > 1e-3


def test_two_stage_select_falls_back_to_uniform_over_non_positives():
    sims = [-0.9, -0.5, -0.1, -0.7, -0.2]
    pos, cands = _vectors_with_similarities(sims, d=8)
    mask = np.array([False, True, False, False, False])
    # many draws: a float32 offset so large that Gumbel keys tie (top_k then favours low indices) shows up here
    picked = _tile_select(pos, cands, mask, 200_000, 1, tf_seed(8)).ravel()
    counts = np.bincount(picked, minlength=5)
    assert counts[1] == 0
    assert chi2_pvalue(counts, np.where(mask, 0.0, 0.25)) > 1e-3
    # with too few non-positives, the remaining slots may be positives but never repeat an index
    two = _tile_select(pos, cands, np.array([True, True, True, False, True]), 50, 2, tf_seed(9))
    assert (two[:, 0] == 3).all() and (two[:, 1] != 3).all()


def test_two_stage_select_mixes_valid_and_fallback_when_few_valid():
    sims = [0.5, -0.2, -0.4, -0.6]
    pos, cands = _vectors_with_similarities(sims, d=8)
    picked = _tile_select(pos, cands, np.zeros(4, bool), 3000, 2, tf_seed(10))
    assert (picked[:, 0] == 0).all()  # the only s >= 0 candidate always first
    assert set(picked[:, 1].tolist()) == {1, 2, 3}  # the rest uniformly from the fallback


def test_two_stage_select_depends_on_current_vectors():
    pos, cands_a = _vectors_with_similarities([0.95, 0.1, 0.1], d=16)
    _, cands_b = _vectors_with_similarities([0.1, 0.1, 0.95], d=16)
    mask = np.zeros(3, bool)
    a = _tile_select(pos, cands_a, mask, 2000, 1, tf_seed(3)).ravel()
    b = _tile_select(pos, cands_b, mask, 2000, 1, tf_seed(3)).ravel()
    assert np.mean(a == 0) > 0.95 and np.mean(b == 2) > 0.95


def _hand_vectors(sims, dim=128):
    """A positive e1 and unit candidates whose dot products with it are exactly ``sims``."""
    pos = np.zeros((1, dim), np.float32)
    pos[0, 0] = 1.0
    sims = np.asarray(sims, np.float32)
    cands = np.zeros((sims.size, dim), np.float32)
    cands[:, 0] = sims
    cands[np.arange(sims.size), 1 + np.arange(sims.size)] = np.sqrt(1 - sims**2)
    return pos, cands


def _capped_weights(sims, dim, cap, cutoff):
    """w(s) = min(λ, (1 − s²)^(−(d−3)/2)) for s >= 0 and √(2 − 2s) >= D_min, else 0: written from the definition."""
    out = []
    for s in np.asarray(sims, np.float64):
        if s < 0 or np.sqrt(2 - 2 * s) < cutoff:
            out.append(0.0)
            continue
        inv_density = (1 - s * s) ** (-(dim - 3) / 2)
        out.append(inv_density if cap is None else min(cap, inv_density))
    return np.array(out)


@pytest.mark.parametrize(
    "cap, cutoff, num",
    [(1.0, 0.0, 1), (3.0, 0.0, 1), (50.0, 0.0, 1), (50.0, 0.0, 2), (3.0, 0.9, 1), (None, 0.9, 1), (1e9, 0.0, 1)],
)
def test_stage2_distribution_matches_capped_inverse_density(cap, cutoff, num):
    # hand-computed similarities at d = 128: q⁻¹ = (1 − s²)^−62.5 is 1.0, 1.87, 12.9, 360, 1.6e16 for the s >= 0
    dim = 128
    sims = [-0.2, 0.0, 0.1, 0.2, 0.3, 0.6]
    w = _capped_weights(sims, dim, cap, cutoff)
    pos, cands = _hand_vectors(sims, dim)
    rows = 20_000
    mask = np.zeros((rows, len(sims)), bool)
    picked = T.two_stage_select(
        np.repeat(pos, rows, 0), cands, mask, num, tf_seed(5, 1), weight_cap=cap, cutoff=cutoff
    ).numpy()
    first = picked[:, 0]
    assert chi2_pvalue(np.bincount(first, minlength=len(sims)), w / w.sum()) > 1e-3
    if cutoff:
        assert not (picked == 5).any()  # s = 0.6: D = 0.89 < 0.9, ignored


def test_capped_weights_reference_by_hand():
    # (1 − s²)^−62.5 at s = 0, 0.1, 0.2: 1, 0.99^−62.5 = 1.8741, 0.96^−62.5 = 12.825
    np.testing.assert_allclose(_capped_weights([0.0, 0.1, 0.2], 128, None, 0.0), [1.0, 1.8741, 12.825], rtol=1e-3)
    np.testing.assert_allclose(_capped_weights([-0.1, 0.0, 0.1, 0.2], 128, 3.0, 0.0), [0, 1.0, 1.8741, 3.0], rtol=1e-3)
    # D = √(2 − 2s): s = 0.6 -> 0.894 < 0.9 is cut off, s = 0.5 -> 1.0 is kept
    np.testing.assert_allclose(_capped_weights([0.5, 0.6], 4, None, 0.9), [(1 - 0.25) ** -0.5, 0.0], rtol=1e-6)


def test_stage2_cutoff_leaves_the_uniform_fallback_when_nothing_remains():
    pos, cands = _hand_vectors([0.9, 0.95, -0.3], 16)
    mask = np.zeros((6000, 3), bool)
    picks = T.two_stage_select(np.repeat(pos, 6000, 0), cands, mask, 1, tf_seed(2), weight_cap=None, cutoff=1.0)
    freq = np.bincount(picks.numpy()[:, 0], minlength=3) / 6000
    np.testing.assert_allclose(freq, 1 / 3, atol=0.03)  # no candidate has a weight: uniform over all three


def test_two_stage_select_weight_cap_spreads_the_hardest_candidates():
    # candidate 0 has s = 0.9 (logit ~ 104 at d=128), the others s in (0, 0.1]: uncapped, 0 is always picked;
    # capped at λ = 1, every candidate with s >= 0 is equally likely
    dim = 128
    pos = np.zeros((1, dim), np.float32)
    pos[0, 0] = 1.0
    sims = np.array([0.9, 0.1, 0.05, 0.02], np.float32)
    cands = np.zeros((4, dim), np.float32)
    cands[:, 0] = sims
    cands[:, 1] = np.sqrt(1 - sims**2)
    rows = 4000
    p = np.repeat(pos, rows, 0)
    mask = np.zeros((rows, 4), bool)
    picks = T.two_stage_select(p, cands, mask, 1, tf.constant([1, 2], tf.int64)).numpy()[:, 0]
    assert (picks == 0).all()
    capped = T.two_stage_select(p, cands, mask, 1, tf.constant([1, 2], tf.int64), weight_cap=1.0).numpy()[:, 0]
    freq = np.bincount(capped, minlength=4) / rows
    np.testing.assert_allclose(freq, 0.25, atol=0.03)


# ------------------------------------------------------------- the original's stage 2 and the |N_ij| > 1 options
BETA_VOLUMN_CONST = 0.2228655673209082014292


def _original_spreadout_weights(spreadout_distance, embedding_dim):
    """deezer/sigir2019-2stagesampling, samplers/spreadout_sampler.py `_calculate_weights`, transcribed."""
    mask = spreadout_distance > 0
    log_weights = (1.0 - (float(embedding_dim) - 1) / 2) * np.log(1.0 - np.square(spreadout_distance) + 1e-8) + np.log(
        BETA_VOLUMN_CONST
    )
    weights = np.exp(log_weights)
    weights[np.isnan(weights)] = 0.0
    weights[~mask] = 0.0
    return weights / weights.sum() if weights.sum() > 0 else weights


def _successive_probs(w, num):
    """Exact P(ordered draw) of ``num`` successive draws ∝ w without replacement (np.random.choice(replace=False))."""
    w = np.asarray(w, np.float64)
    probs = {}
    for seq in itertools.permutations(range(len(w)), num):
        p, left = 1.0, w.sum()
        for i in seq:
            p *= w[i] / left if left > 0 else 0.0
            left -= w[i]
        if p > 0:
            probs[seq] = p
    return probs


def _sequence_counts(picked, keys):
    counts = dict.fromkeys(keys, 0)
    for row in map(tuple, picked.tolist()):
        assert row in counts, f"drawn {row}, impossible under the reference"
        counts[row] += 1
    return [counts[k] for k in keys]


def test_successive_stage2_is_the_original_spreadout_sampler():
    # the original's stage 2 at |N| = 3: weights by its own _calculate_weights (s <= 0 masked, uncapped), then
    # np.random.choice(size=3, p=weights, replace=False); ours: weight_cap=None (uncapped), successive draws
    dim = 16
    sims = np.array([0.8, 0.55, 0.3, 0.1, -0.2, -0.6])
    pos, cands = _hand_vectors(sims, dim)
    rows = 30_000
    picked = T.two_stage_select(
        np.repeat(pos, rows, 0), cands, np.zeros((rows, sims.size), bool), 3, tf_seed(8), weight_cap=None
    ).numpy()
    exact = _successive_probs(_original_spreadout_weights(sims, dim), 3)
    keys = sorted(exact)
    assert chi2_pvalue(_sequence_counts(picked, keys), [exact[k] for k in keys]) > 1e-3


def test_stage2_without_the_opposite_mask_weighs_by_the_absolute_similarity():
    dim = 16
    sims = np.array([0.5, 0.2, -0.5, -0.1, 0.0])
    pos, cands = _hand_vectors(sims, dim)
    rows = 30_000
    mask = np.zeros((rows, sims.size), bool)
    picked = T.two_stage_select(
        np.repeat(pos, rows, 0), cands, mask, 1, tf_seed(3), weight_cap=None, mask_opposite=False
    ).numpy()[:, 0]
    w = (1 - sims**2) ** (-(dim - 3) / 2)  # w(|s|): the two ±0.5 candidates weigh the same
    assert chi2_pvalue(np.bincount(picked, minlength=sims.size), w / w.sum()) > 1e-3
    masked = T.stage2_logits(tf.constant(sims, tf.float32), dim).numpy()
    assert np.isneginf(masked[[2, 3]]).all()  # the default gives s < 0 no weight


def test_stage2_with_replacement_draws_independently():
    dim = 16
    sims = np.array([0.6, 0.4, 0.1, 0.0])
    pos, cands = _hand_vectors(sims, dim)
    rows = 30_000
    mask = np.zeros((rows, sims.size), bool)
    picked = T.two_stage_select(
        np.repeat(pos, rows, 0), cands, mask, 2, tf_seed(4), weight_cap=8.0, replacement=True
    ).numpy()
    w = _capped_weights(sims, dim, 8.0, 0.0)
    p = w / w.sum()
    keys = [(a, b) for a in range(4) for b in range(4)]
    assert chi2_pvalue(_sequence_counts(picked, keys), [p[a] * p[b] for a, b in keys]) > 1e-3
    assert (picked[:, 0] == picked[:, 1]).mean() > 0.2  # repeats, which successive draws never give


@pytest.mark.parametrize("num", [1, 2])
def test_stage2_uniform_mix_is_the_mixture_of_the_two_distributions(num):
    dim = 16
    sims = np.array([0.7, 0.3, 0.0, -0.4, 0.5])
    pos, cands = _hand_vectors(sims, dim)
    rows = 30_000
    mask = np.zeros((rows, sims.size), bool)
    mask[:, 4] = True  # a positive: never drawn, not in the uniform part either
    picked = T.two_stage_select(
        np.repeat(pos, rows, 0), cands, mask, num, tf_seed(6), weight_cap=4.0, uniform_mix=0.3
    ).numpy()
    w = _capped_weights(sims, dim, 4.0, 0.0)
    w[4] = 0.0
    nonpositive = np.array([1.0, 1, 1, 1, 0])
    p = 0.7 * w / w.sum() + 0.3 * nonpositive / nonpositive.sum()
    exact = _successive_probs(p, num)
    keys = sorted(exact)
    assert chi2_pvalue(_sequence_counts(picked, keys), [exact[k] for k in keys]) > 1e-3


def test_blocked_inverse_cdf_follows_the_weights_across_blocks():
    # 150 candidates = 3 blocks of 64 (the last padded), a whole block without weight, a row without any weight
    rng = np.random.default_rng(4)
    w = rng.uniform(0.1, 2.0, size=150)
    w[64:128] = 0.0
    w[[3, 140]] = 0.0
    rows = 4000
    weights = tf.constant(np.stack([w] * rows + [np.zeros(150)]), tf.float32)
    fallback = tf.constant(np.ones((rows + 1, 150)), tf.float32)
    u = tf.random.stateless_uniform([rows + 1, 5], tf_seed(12))
    picked = T._inverse_cdf_blocked(weights, fallback, u).numpy()
    assert chi2_pvalue(np.bincount(picked[:rows].ravel(), minlength=150), w / w.sum()) > 1e-3
    assert ((picked[rows] >= 0) & (picked[rows] < 150)).all()  # the fallback row: uniform over every candidate
    edge = T._inverse_cdf_blocked(weights[:1], fallback[:1], tf.constant([[0.0, 1.0 - 1e-7]])).numpy()[0]
    assert edge[0] == 0 and edge[1] == 149  # u = 0: the first weighted candidate; u -> 1: the last one
