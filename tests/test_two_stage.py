"""cml_tf.sampling.two_stage: the capped inverse density and stage 2's draws against the definition."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from helpers import synthetic_config
from references import chi2_pvalue, stage2_sequence_probs, successive_pair_probs, tf_seed

from cml_tf.sampling import two_stage as T
from cml_tf.training.outputs import read_metrics_csv


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
    # with too few non-positives, the remaining slots are positives (real candidates), never a repeat
    two = _tile_select(pos, cands, np.array([True, True, True, False, True]), 50, 2, tf_seed(9))
    assert (two[:, 0] == 3).all() and set(two[:, 1].tolist()) <= {0, 1, 2, 4}


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
    exact = stage2_sequence_probs(_original_spreadout_weights(sims, dim), np.zeros(sims.size, bool), 3)
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
    exact = stage2_sequence_probs(p, mask[0], num)
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


# ----------------------------------------------- rows crowded with positives: real, distinct candidates at every |N|
def _crowded_rows(c, num, rng):
    """[rows, C] bool positives: none, C − N + 1 (N − 1 non-positives left), C − N, C − 1, all C, half at random."""
    rows = []
    for held in (0, c - num + 1, c - num, c - 1, c):
        for _ in range(3):
            row = np.zeros(c, bool)
            row[rng.choice(c, held, replace=False)] = True
            rows.append(row)
    rows.append(rng.random(c) < 0.5)
    return np.stack(rows)


STAGE2_SETTINGS = [
    dict(weight_cap=cap, mask_opposite=True, replacement=False, uniform_mix=0.0) for cap in (None, 1.0, 4.0, 16.0)
] + [
    dict(weight_cap=4.0, mask_opposite=False, replacement=False, uniform_mix=0.0),
    dict(weight_cap=None, mask_opposite=False, replacement=False, uniform_mix=0.3),
    dict(weight_cap=4.0, mask_opposite=True, replacement=False, uniform_mix=0.3),
    dict(weight_cap=4.0, mask_opposite=True, replacement=True, uniform_mix=0.0),
    dict(weight_cap=None, mask_opposite=False, replacement=True, uniform_mix=0.3),
]


_DEFAULT_RUN = [  # (num, index in STAGE2_SETTINGS) in the default test run (each case an XLA compile of 2-4 s)
    (5, 0),  # uncapped
    (5, 2),  # λ = 4, the default
    (5, 4),  # s < 0 weighed
    (5, 6),  # mixture
    (5, 7),  # independent draws
    (2, 2),
    (1, 2),
]
CROWDED_CASES = [
    pytest.param(
        settings,
        num,
        id=f"{num}-" + "-".join(f"{k}={v}" for k, v in settings.items()),
        marks=() if (num, i) in _DEFAULT_RUN else pytest.mark.slow,
    )
    for num in (1, 2, 5)
    for i, settings in enumerate(STAGE2_SETTINGS)
]


@pytest.mark.parametrize("settings, num", CROWDED_CASES)
def test_stage2_returns_real_distinct_candidates_when_positives_crowd_the_row(settings, num):
    # C = 70: two blocks of 64, the second padded to 128 (the old fallback returned the padding slot 127 or 63)
    c, d = 70, 16
    rng = np.random.default_rng(num)
    mask = _crowded_rows(c, num, rng)
    pos = rng.normal(size=(len(mask), d))
    cand = rng.normal(size=(c, d))
    pos /= np.linalg.norm(pos, axis=1, keepdims=True)
    cand /= np.linalg.norm(cand, axis=1, keepdims=True)
    for seed in range(3):
        picked = T.two_stage_select(
            tf.constant(pos, tf.float32),
            tf.constant(cand, tf.float32),
            tf.constant(mask),
            num,
            tf_seed(seed),
            **settings,
        ).numpy()
        assert picked.shape == (len(mask), num)
        assert ((picked >= 0) & (picked < c)).all(), picked[(picked < 0) | (picked >= c)]
        for r, row in enumerate(picked.tolist()):
            non_positive = int((~mask[r]).sum())
            drawn_positive = mask[r, row]
            if settings["replacement"]:  # independent draws: a positive only in a row of positives
                assert not drawn_positive.any() or non_positive == 0, (r, row)
                continue
            assert len(set(row)) == num, (r, row)
            # positives last: every non-positive candidate is drawn before the first positive
            first = min(num, non_positive)
            assert not drawn_positive[:first].any() and drawn_positive[first:].all(), (r, row)


def test_stage2_sequence_reference_by_hand():
    # w = (1, 3, 0) with candidate 2 a positive, 3 draws: 0 then 1 (1/4) or 1 then 0 (3/4), then the positive
    assert stage2_sequence_probs([1.0, 3.0, 0.0], [False, False, True], 3) == pytest.approx(
        {(0, 1, 2): 0.25, (1, 0, 2): 0.75}
    )
    # no weight: uniform over the non-positive ones (0 and 2: 1/2 · 1), then a positive (1 or 3: 1/2)
    probs = stage2_sequence_probs([0.0] * 4, [False, True, False, True], 3)
    assert probs == pytest.approx({(0, 2, 1): 1 / 4, (0, 2, 3): 1 / 4, (2, 0, 1): 1 / 4, (2, 0, 3): 1 / 4})
    # every candidate a positive: uniform over the 3 · 2 ordered pairs, or the 9 pairs with replacement
    assert stage2_sequence_probs([5.0, 1.0, 2.0], [True] * 3, 2) == pytest.approx(
        {(a, b): 1 / 6 for a in range(3) for b in range(3) if a != b}
    )
    assert stage2_sequence_probs([5.0, 1.0, 2.0], [True] * 3, 2, replacement=True) == pytest.approx(
        {(a, b): 1 / 9 for a in range(3) for b in range(3)}
    )


def test_uniform_index_excluding_skips_the_taken_indices():
    # C = 6, row 0 has taken {4, 1} (and an invalid 0), row 1 nothing valid, row 2 all but index 5: uniform over the
    # rest, from the definition: each untaken index with probability 1 / (C − m)
    rows = 12_000
    taken = np.tile(np.array([[4, 1, 0, 0, 0], [2, 3, 0, 0, 0], [0, 3, 1, 4, 2]], np.int32), (rows, 1))
    valid = np.tile(np.array([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], bool), (rows, 1))
    u = tf.random.stateless_uniform([3 * rows, 1], tf_seed(13))
    got = T._uniform_index_excluding(u, tf.constant(6), tf.constant(taken), tf.constant(valid)).numpy()[:, 0]
    for r, allowed in enumerate(([0, 2, 3, 5], range(6))):
        p = np.isin(np.arange(6), list(allowed)) / len(list(allowed))
        assert chi2_pvalue(np.bincount(got[r::3], minlength=6), p) > 1e-3
    assert (got[2::3] == 5).all()
    edge = T._uniform_index_excluding(
        tf.constant([[0.0], [1.0 - 1e-7]]), tf.constant(6), tf.constant([[0, 5], [0, 5]]), tf.ones([2, 2], tf.bool)
    ).numpy()[:, 0]
    assert edge.tolist() == [1, 4]  # u = 0: the first index left; u -> 1: the last one


# the joint law of a row's draws on C = 5 hand-made candidates (d = 16): (similarities, positives, |N|, settings)
JOINT_CASES = {
    # the default path: capped at λ = 4 (w = 1, 1.69, 4, 4 for s = 0, 0.2, 0.5, 0.7), successive; s < 0 weighs 0
    "capped-n3": ([0.7, 0.5, 0.2, 0.0, -0.3], [0, 0, 0, 0, 0], 3, dict(weight_cap=4.0)),
    "capped-n2-one-positive": ([0.7, 0.5, 0.2, 0.0, 0.3], [0, 0, 0, 0, 1], 2, dict(weight_cap=4.0)),
    # two weighted candidates, then uniform over the two s < 0 ones (level 2), 4 draws
    "capped-n4-weight-runs-out": ([0.6, 0.3, -0.2, -0.5, 0.1], [0, 0, 0, 0, 1], 4, dict(weight_cap=4.0)),
    # C − N + 1 = 3 positives at |N| = 3: the 2 non-positives, then one positive uniformly (level 3)
    "capped-n3-crowded": ([0.6, 0.3, -0.2, 0.5, 0.1], [1, 0, 1, 0, 1], 3, dict(weight_cap=4.0)),
    "uncapped-n3-crowded": ([0.6, 0.3, -0.2, 0.5, 0.1], [1, 0, 1, 0, 1], 3, dict(weight_cap=None)),
    # C − 1 positives, and every candidate a positive
    "capped-n3-one-left": ([0.6, 0.3, -0.2, 0.5, 0.1], [1, 1, 1, 0, 1], 3, dict(weight_cap=4.0)),
    "capped-n2-all-positive": ([0.6, 0.3, -0.2, 0.5, 0.1], [1, 1, 1, 1, 1], 2, dict(weight_cap=4.0)),
    "mixed-n3-crowded": ([0.6, 0.3, -0.2, 0.5, 0.1], [1, 0, 1, 0, 1], 3, dict(weight_cap=4.0, uniform_mix=0.3)),
    "capped-n1-all-positive": ([0.6, 0.3, -0.2, 0.5, 0.1], [1, 1, 1, 1, 1], 1, dict(weight_cap=4.0)),
    "replacement-n2-all-positive": ([0.6, 0.3, -0.2, 0.5, 0.1], [1] * 5, 2, dict(weight_cap=4.0, replacement=True)),
}


@pytest.mark.parametrize("case", sorted(JOINT_CASES))
def test_stage2_joint_law_of_a_rows_draws_matches_the_definition(case):
    sims, positive, num, settings = JOINT_CASES[case]
    dim, rows = 16, 20_000
    sims, positive = np.array(sims), np.array(positive, bool)
    pos, cands = _hand_vectors(sims, dim)
    picked = T.two_stage_select(
        np.repeat(pos, rows, 0), cands, np.tile(positive, (rows, 1)), num, tf_seed(11, num), **settings
    ).numpy()
    w = _capped_weights(sims, dim, settings["weight_cap"], 0.0)
    mix = settings.get("uniform_mix", 0.0)
    if mix:  # (1 − ρ)·w / Σw + ρ·uniform over the non-positive candidates
        w = np.where(positive, 0.0, w)
        w = (1 - mix) * w / w.sum() + mix * ~positive / (~positive).sum()
    exact = stage2_sequence_probs(w, positive, num, replacement=settings.get("replacement", False))
    keys = sorted(exact)
    assert chi2_pvalue(_sequence_counts(picked, keys), [exact[k] for k in keys]) > 1e-3


# ------------------------------------------------------------------------------------------------- end to end
def test_stage2_trains_at_five_negatives_when_a_user_holds_all_but_one_item(tmp_path, monkeypatch):
    # 100 items, C = 100 (every item a candidate), user 0 holds 99 of them: its rows have ONE non-positive candidate,
    # so stage 2 at |N_ij| = 5 must add 4 of the user's positives (the old fallback gave index 127 and the step
    # stopped with "indices[0,3] = 127 is not in [0, 100)"). Every pick is checked inside the step.
    from cml_tf.data.interactions import Interactions
    from cml_tf.data.splits import Split
    from cml_tf.models import step
    from cml_tf.training import run

    n_users, n_items = 21, 100
    rng = np.random.default_rng(0)
    users, items = [0] * 99, list(range(99))  # user 0: items 0..98
    for u in range(1, n_users):
        held = rng.choice(n_items, 8, replace=False)
        users += [u] * 8
        items += held.tolist()
    users, items = np.array(users), np.array(items)
    interactions = Interactions.from_pairs(users, items, n_users, n_items)
    part = np.where(users == 0, 0, np.arange(users.size) % 8)  # others: 6 train, 1 valid, 1 test items

    def matrix(keep):
        return Interactions.from_pairs(users[keep], items[keep], n_users, n_items).matrix

    split = Split(train=matrix(part < 6), valid=matrix(part == 6), test=matrix(part == 7))
    checked = []

    def checked_select(positive_vectors, candidate_vectors, candidate_is_positive, num, seed, **options):
        picked = T.two_stage_select(positive_vectors, candidate_vectors, candidate_is_positive, num, seed, **options)
        c = tf.shape(candidate_vectors, out_type=tf.int32)[0]
        ordered = tf.sort(picked, axis=1)
        checks = [
            tf.debugging.assert_non_negative(picked, message="stage 2 picked a negative index"),
            tf.debugging.assert_less(picked, c, message="stage 2 picked an index outside the candidates"),
            tf.debugging.assert_positive(ordered[:, 1:] - ordered[:, :-1], message="stage 2 picked one twice"),
        ]
        checked.append(num)
        with tf.control_dependencies(checks):
            return tf.identity(picked)

    monkeypatch.setattr(step, "two_stage_select", checked_select)
    config = synthetic_config(
        n_users,
        n_items,
        int(users.size),
        sampler="2stage",
        num_negatives=5,
        num_candidates=100,
        batch_size=32,
        embedding_dim=16,
        max_steps=20,
        eval_every=20,
        steps_per_execution=5,
        k=10,
    )
    results = run.train(config, str(tmp_path / "run"), data=(interactions, split), verbose=0)
    assert checked and set(checked) == {5}  # the step drew through the checked stage 2
    assert np.isfinite(results["valid"]["ndcg@10"])
    metrics = read_metrics_csv(str(tmp_path / "run" / "metrics.csv"))
    assert int(metrics[-1]["step"]) == 20 and np.isfinite(float(metrics[-1]["loss"]))
