"""cml_tf.sampling.negatives: popularity weights, the item sampler, exact complement sampling, side_info."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf
from references import chi2_pvalue, successive_pair_probs, tf_seed

from cml_tf.sampling import negatives as S
from cml_tf.sampling.side_info_sampler import SideInfoSampler


def _many_without_replacement(sampler, num, n_seeds, base=7):
    """[n_seeds, num] draws, one per seed (map_fn inside one tf.function: fast)."""
    seeds = tf.stack([tf.fill([n_seeds], tf.constant(base, tf.int64)), tf.range(n_seeds, dtype=tf.int64)], 1)
    fn = tf.function(
        lambda s: tf.map_fn(
            lambda sd: sampler.sample_without_replacement(num, sd),
            s,
            fn_output_signature=tf.TensorSpec([num], tf.int64),
        )
    )
    return fn(seeds).numpy()


def _random_csr(n_users, n_items, density, seed):
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < density
    dense[0] = False  # a user without positives
    return sp.csr_matrix(dense.astype(np.float32))


# ----------------------------------------------------------------------------------------- popularity weights
def test_popularity_log_weights_hand():
    counts = np.array([0, 1, 3, 7])
    np.testing.assert_allclose(S.popularity_log_weights(counts, 1.0), np.log([1, 2, 4, 8]))
    np.testing.assert_allclose(S.popularity_log_weights(counts, 0.5, smoothing=2.0), 0.5 * np.log([2, 3, 5, 9]))
    np.testing.assert_allclose(S.popularity_log_weights(counts, 0.0), 0.0)  # beta 0 -> uniform
    w = S.popularity_log_weights(counts, 1.0, smoothing=0.0)
    assert w[0] == -np.inf
    np.testing.assert_allclose(w[1:], np.log([1, 3, 7]))


def test_popularity_log_weights_mixed_with_uniform_hand():
    counts = np.array([0, 1, 3])  # smoothing 1: weights 1, 2, 4 -> q = 1/7, 2/7, 4/7
    mixed = np.exp(S.popularity_log_weights(counts, 1.0, uniform_mix=0.5))
    np.testing.assert_allclose(mixed, [0.5 / 7 + 1 / 6, 1 / 7 + 1 / 6, 2 / 7 + 1 / 6])
    np.testing.assert_allclose(np.exp(S.popularity_log_weights(counts, 1.0, uniform_mix=1.0)), 1 / 3)  # uniform
    np.testing.assert_allclose(S.popularity_log_weights(counts, 1.0, uniform_mix=0.0), np.log([1, 2, 4]))
    # an item absent from training (smoothing 0) is drawable again, with weight ε/n
    absent = np.exp(S.popularity_log_weights(counts, 1.0, smoothing=0.0, uniform_mix=0.25))
    np.testing.assert_allclose(absent, [0.25 / 3, 0.75 / 4 + 0.25 / 3, 0.75 * 3 / 4 + 0.25 / 3])


def test_item_sampler_rejects_bad_weights():
    with pytest.raises(ValueError, match="shape"):
        S.ItemSampler(np.zeros(3), 4)
    with pytest.raises(ValueError, match="positive sum"), np.errstate(invalid="ignore"):
        S.ItemSampler(np.full(3, -np.inf), 3)


# ----------------------------------------------------------------------------------------- with replacement
def test_sample_with_replacement_follows_distribution():
    counts = np.array([0, 0, 5, 1, 0, 10, 2, 0])
    log_w = S.popularity_log_weights(counts, 1.0, smoothing=0.0)  # items 0, 1, 4, 7 never drawable
    sampler = S.ItemSampler(log_w, 8)
    draws = sampler.sample([200_000], tf_seed(3)).numpy()
    assert draws.dtype == np.int64 and draws.shape == (200_000,)
    freq = np.bincount(draws, minlength=8)
    probs = counts / counts.sum()
    assert freq[counts == 0].sum() == 0
    assert chi2_pvalue(freq, probs) > 1e-3
    # and a detectably different distribution is rejected by the same check (the check can fail)
    assert chi2_pvalue(freq, np.array([0, 0, 5, 1.3, 0, 10, 2, 0]) / 18.3) < 1e-3


def test_sample_with_replacement_uniform_and_shape():
    sampler = S.ItemSampler(None, 6)
    draws = sampler.sample([4, 50_000], tf_seed(4)).numpy()
    assert draws.shape == (4, 50_000) and draws.min() >= 0 and draws.max() <= 5
    assert chi2_pvalue(np.bincount(draws.ravel(), minlength=6), np.full(6, 1 / 6)) > 1e-3


def test_sample_is_seeded():
    sampler = S.ItemSampler(np.log(np.arange(1.0, 51.0)), 50)
    a = sampler.sample([100], tf_seed(1, 2)).numpy()
    np.testing.assert_array_equal(a, sampler.sample([100], tf_seed(1, 2)).numpy())
    assert not np.array_equal(a, sampler.sample([100], tf_seed(1, 3)).numpy())


# ----------------------------------------------------------------------------------------- without replacement


def test_without_replacement_gumbel_path_exact_pair_distribution():
    w = np.array([5.0, 3.0, 1.0, 0.5, 0.5])
    sampler = S.ItemSampler(np.log(w), 5)
    assert sampler.n_items <= 32 * 2  # the Gumbel top-k path
    draws = _many_without_replacement(sampler, 2, 20_000)
    assert (draws[:, 0] != draws[:, 1]).all()
    exact = successive_pair_probs(w)
    keys = sorted(exact)
    counts = {k: 0 for k in keys}
    for a, b in draws:
        counts[(int(a), int(b))] += 1
    assert chi2_pvalue([counts[k] for k in keys], [exact[k] for k in keys]) > 1e-3
    # not the i.i.d. distribution of the second draw: P(second = 0) is clearly below w0/W
    p_second0 = sum(exact[(i, 0)] for i in range(1, 5))
    assert np.mean(draws[:, 1] == 0) == pytest.approx(p_second0, abs=0.015)
    assert abs(p_second0 - w[0] / w.sum()) > 0.1


def test_without_replacement_gumbel_path_skips_zero_weight_items():
    counts = np.array([0, 4, 0, 2, 1, 0])
    sampler = S.ItemSampler(S.popularity_log_weights(counts, 1.0, smoothing=0.0), 6)
    draws = _many_without_replacement(sampler, 3, 500)
    assert set(np.unique(draws)) == {1, 3, 4}
    with pytest.raises(ValueError, match="cannot draw 4 distinct"):
        sampler.sample_without_replacement(4, tf_seed(0))


def test_without_replacement_rejection_path_exact_distribution():
    # 100 items > 32 * 3: the i.i.d. draws + tf.unique path
    w = np.r_[[30.0, 20.0, 10.0, 5.0], np.full(96, 0.35)]
    sampler = S.ItemSampler(np.log(w), 100)
    assert sampler.n_items > 32 * 3
    n = 20_000
    draws = _many_without_replacement(sampler, 3, n)
    assert draws.shape == (n, 3)
    assert all(len(set(row)) == 3 for row in draws.tolist())
    # exact successive-sampling probabilities of ordered triples, enumerated
    W = w.sum()
    p1 = w / W
    p2 = p1[:, None] * w[None, :] / (W - w[:, None])
    np.fill_diagonal(p2, 0.0)
    rest = W - w[:, None, None] - w[None, :, None]
    p3 = p2[:, :, None] * w[None, None, :] / rest
    idx = np.arange(100)
    p3[idx, :, idx] = 0.0
    p3[:, idx, idx] = 0.0
    assert p3.sum() == pytest.approx(1.0)
    # first draw over categories {0, 1, 2, 3, other}
    cat = np.minimum(np.arange(100), 4)
    first_exact = np.bincount(cat, weights=p1, minlength=5)
    first_emp = np.bincount(cat[draws[:, 0]], minlength=5)
    assert chi2_pvalue(first_emp, first_exact) > 1e-3
    # ordered (first, second) category pairs
    pair_exact = np.zeros((5, 5))
    np.add.at(pair_exact, (cat[:, None], cat[None, :]), p2)
    pair_emp = np.zeros((5, 5))
    np.add.at(pair_emp, (cat[draws[:, 0]], cat[draws[:, 1]]), 1)
    assert chi2_pvalue(pair_emp.ravel(), pair_exact.ravel()) > 1e-3
    # inclusion probabilities of the heavy items among the 3
    incl = p3.sum(axis=(1, 2)) + p3.sum(axis=(0, 2)) + p3.sum(axis=(0, 1))
    for item in range(4):
        emp = np.mean((draws == item).any(axis=1))
        se = np.sqrt(incl[item] * (1 - incl[item]) / n)
        assert abs(emp - incl[item]) < 4 * se + 1e-3, (item, emp, incl[item])


def test_without_replacement_rejection_path_uniform_and_seeded():
    sampler = S.ItemSampler(None, 1000)
    a = sampler.sample_without_replacement(20, tf_seed(5)).numpy()
    assert a.shape == (20,) and len(set(a.tolist())) == 20 and a.min() >= 0 and a.max() < 1000
    np.testing.assert_array_equal(a, sampler.sample_without_replacement(20, tf_seed(5)).numpy())
    assert not np.array_equal(a, sampler.sample_without_replacement(20, tf_seed(6)).numpy())


@pytest.mark.parametrize(
    "n_items, num", [(50, 10), (3000, 500), (1000, 10)]
)  # Gumbel keys (n <= 32 num: top_k ordered, bisection unordered) and the i.i.d.-with-unique path
def test_without_replacement_unordered_is_the_same_set(n_items, num):
    log_w = np.log(np.random.default_rng(0).integers(1, 30, n_items).astype(np.float64))
    sampler = S.ItemSampler(log_w, n_items)
    for s in range(5):
        ordered = sampler.sample_without_replacement(num, tf_seed(s)).numpy()
        unordered = sampler.sample_without_replacement(num, tf_seed(s), ordered=False).numpy()
        assert len(unordered) == num
        np.testing.assert_array_equal(np.sort(ordered), np.sort(unordered))
        assert (np.diff(unordered) > 0).all()  # ascending by id on every path


def test_gumbel_top_set_against_sorting_the_keys():
    # the bisection's mask is the num largest keys, found by sorting them (negative and positive keys, -inf weights)
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 5, 400).astype(np.float32)
    log_w = np.where(counts > 0, 3.0 * np.log(np.maximum(counts, 1)), -np.inf).astype(np.float32)  # keys of both signs
    for s, num in [(0, 1), (1, 37), (2, 200), (3, int(np.isfinite(log_w).sum()))]:
        u = tf.random.stateless_uniform([400], tf_seed(s), 1e-20, 1.0)
        keys = log_w - np.log(-np.log(u.numpy()))
        expected = np.zeros(400, bool)
        expected[np.argsort(-keys, kind="stable")[:num]] = True
        np.testing.assert_array_equal(S._gumbel_top_set(u, tf.constant(log_w), num=num).numpy(), expected)


# ----------------------------------------------------------------------------------------- positive index
def test_positive_index_contains_matches_set():
    train = _random_csr(30, 40, 0.15, seed=0)
    index = S.PositiveIndex(train)
    pairs = {(u, i) for u, i in zip(*train.nonzero())}
    rng = np.random.default_rng(1)
    users = rng.integers(0, 30, size=(50, 7))
    items = rng.integers(0, 40, size=(50, 7))
    # include every real positive too
    pu, pi = train.nonzero()
    got = index.contains(tf.constant(users), tf.constant(items)).numpy()
    ref = np.array([[(u, i) in pairs for u, i in zip(ru, ri)] for ru, ri in zip(users, items)])
    assert got.shape == (50, 7)
    np.testing.assert_array_equal(got, ref)
    assert index.contains(tf.constant(pu), tf.constant(pi)).numpy().all()
    # broadcasting a [B, 1] users against [B, K] items
    b = index.contains(tf.constant(users[:, :1]), tf.constant(items)).numpy()
    np.testing.assert_array_equal(b, [[(u[0], i) in pairs for i in ri] for u, ri in zip(users, items)])


def test_positive_index_searchsorted_boundaries():
    # queries below the first key, above the last key, and equal to both ends
    dense = np.zeros((3, 4), np.float32)
    dense[0, 1] = dense[2, 3] = 1
    index = S.PositiveIndex(sp.csr_matrix(dense))
    users = tf.constant([0, 0, 2, 2, 1])
    items = tf.constant([0, 1, 3, 2, 3])
    np.testing.assert_array_equal(index.contains(users, items).numpy(), [False, True, True, False, False])


def test_positive_index_empty_matrix():
    index = S.PositiveIndex(sp.csr_matrix((3, 4), dtype=np.float32))
    assert not index.contains(tf.constant([[0, 1], [2, 2]]), tf.constant([[0, 3], [1, 2]])).numpy().any()


@pytest.mark.parametrize("items_per_candidate", [S.DENSE_LOOKUP_ITEMS_PER_CANDIDATE, 1])
def test_candidate_mask_matches_dense(monkeypatch, items_per_candidate):
    """Both lookups: the dense column table (60 items <= 32 x 15 candidates) and the binary search (60 > 1 x 15)."""
    monkeypatch.setattr(S, "DENSE_LOOKUP_ITEMS_PER_CANDIDATE", items_per_candidate)
    train = _random_csr(25, 60, 0.2, seed=2)
    dense = train.toarray() > 0
    index = S.PositiveIndex(train)
    rng = np.random.default_rng(3)
    users = rng.integers(0, 25, size=17)
    users[0] = 0  # no positives
    users[1] = users[2]  # repeated user
    candidates = np.sort(rng.choice(60, size=15, replace=False))
    got = index.candidate_mask(tf.constant(users), tf.constant(candidates)).numpy()
    ref = dense[users][:, candidates]
    assert got.shape == (17, 15) and got.dtype == bool
    np.testing.assert_array_equal(got, ref)
    assert ref.any()  # the check is not vacuous


# ----------------------------------------------------------------------------------------- NegativeSampler
def test_segment_count_le_equals_searchsorted_per_row():
    train = _random_csr(30, 40, 0.4, seed=2)
    values = train.indices.astype(np.int64)
    rng = np.random.default_rng(0)
    users = rng.integers(0, 30, size=200)
    queries = rng.integers(-1, 42, size=200)
    starts, lengths = train.indptr[users], np.diff(train.indptr)[users]
    got = S._segment_count_le(
        tf.constant(values), tf.constant(starts), tf.constant(lengths), tf.constant(queries), depth=6
    ).numpy()
    ref = [np.searchsorted(values[a : a + n], q, side="right") for a, n, q in zip(starts, lengths, queries)]
    np.testing.assert_array_equal(got, ref)


def _negatives(train, log_w, users, num, seed):
    return S.NegativeSampler(train, log_w).sample(tf.constant(users), num, seed).numpy()


@pytest.mark.parametrize("popular", [False, True])
def test_negatives_never_positive_with_the_default_path_and_seeded(popular):
    # users holding half, 7/8 and all but one of the catalog: rejection with 8 proposals returned positives here
    n_items = 64
    dense = np.zeros((4, n_items), bool)
    dense[0, ::2] = True
    dense[1, : n_items * 7 // 8] = True
    dense[2, 1:] = True  # only item 0 is a negative
    train = sp.csr_matrix(dense.astype(np.float32))
    log_w = S.popularity_log_weights(dense.sum(0), 1.0) if popular else None
    users = np.repeat(np.arange(4), 2000)
    a = _negatives(train, log_w, users, 3, tf_seed(1))
    assert a.shape == (8000, 3) and a.dtype == np.int64
    assert not dense[users[:, None], a].any()
    assert (a[users == 2] == 0).all()
    np.testing.assert_array_equal(a, _negatives(train, log_w, users, 3, tf_seed(1)))
    assert not np.array_equal(a, _negatives(train, log_w, users, 3, tf_seed(2)))


def test_uniform_negatives_are_uniform_over_the_complement():
    dense = np.zeros((2, 12), bool)
    dense[0, [0, 1, 5, 6, 7, 11]] = True
    train = sp.csr_matrix(dense.astype(np.float32))
    got = _negatives(train, None, np.zeros(30_000, np.int64), 1, tf_seed(4)).ravel()
    probs = (~dense[0]).astype(float)
    assert chi2_pvalue(np.bincount(got, minlength=12), probs / probs.sum()) > 1e-3


def test_popular_negatives_follow_the_weights_renormalised_over_non_positives():
    # one user with positives {0, 2, 3}; weights 1..6 -> negatives ∝ w restricted to {1, 4, 5}
    train = sp.csr_matrix(np.array([[1, 0, 1, 1, 0, 0]], np.float32))
    w = np.arange(1.0, 7.0)
    got = _negatives(train, np.log(w), np.zeros(30_000, np.int64), 2, tf_seed(9)).ravel()
    probs = np.where(train.toarray()[0] > 0, 0.0, w)
    assert chi2_pvalue(np.bincount(got, minlength=6), probs / probs.sum()) > 1e-3


def test_popular_negatives_never_draw_zero_weight_items():
    # smoothing 0: item 3 never occurs in training and has weight 0
    dense = np.array([[1, 0, 0, 0, 1], [0, 1, 1, 0, 0]], bool)
    log_w = S.popularity_log_weights(dense.sum(0), 1.0, smoothing=0.0)
    got = _negatives(sp.csr_matrix(dense.astype(np.float32)), log_w, np.repeat([0, 1], 5000), 1, tf_seed(3))
    assert set(np.unique(got[:5000])) == {1, 2} and set(np.unique(got[5000:])) == {0, 4}


# ---------------------------------------------------------------- side_info


def _side_info_reference(
    positives_of_user: set, groups: list[set], item_groups: list[list[int]], j: int, n: int, tries
):
    """P(i | u, j) of `SideInfoSampler` written from its definition, with plain Python sets."""
    non_pos = [i for i in range(n) if i not in positives_of_user]
    uniform = np.zeros(n)
    uniform[non_pos] = 1.0 / len(non_pos)
    if not item_groups[j]:
        return uniform
    p = np.zeros(n)
    for g in item_groups[j]:
        members = groups[g]
        q = len(members & positives_of_user) / len(members)
        free = sorted(members - positives_of_user)
        inside = np.zeros(n)
        if free:
            inside[free] = 1.0 / len(free)
        p += ((1 - q**tries) * inside + q**tries * uniform) / len(item_groups[j])
    return p


# 7 items; groups g0 = {0, 2, 3}, g1 = {1, 4}, g2 = {0, 1}, g3 = {5}; item 6 has no group
_GROUPS = [{0, 2, 3}, {1, 4}, {0, 1}, {5}]
_ITEM_GROUPS = [[0, 2], [1, 2], [0], [0], [1], [3], []]


def _groups_matrix():
    rows = [i for i, gs in enumerate(_ITEM_GROUPS) for _ in gs]
    cols = [g for gs in _ITEM_GROUPS for g in gs]
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(7, 4))


@pytest.mark.parametrize("positive, tries", [(0, 2), (0, 8), (1, 1), (4, 3), (6, 2), (5, 2)])
def test_side_info_distribution_matches_the_definition(positive, tries):
    # user 0 holds items 0, 1, 5: g2 is all positives (always the fallback), g3 = {5} too
    train = sp.csr_matrix(([1.0, 1.0, 1.0, 1.0], ([0, 0, 0, 1], [0, 1, 5, 2])), shape=(2, 7))
    sampler = SideInfoSampler(train, _groups_matrix(), tries=tries)
    draws = sampler.sample(tf.zeros([20000], tf.int32), tf.fill([20000], positive), 3, tf_seed(5)).numpy()
    probs = _side_info_reference({0, 1, 5}, _GROUPS, _ITEM_GROUPS, positive, 7, tries)
    assert chi2_pvalue(np.bincount(draws.ravel(), minlength=7), probs) > 1e-3


def test_side_info_reference_by_hand():
    # positive 0, T = 1: g0 (q = 1/3): 2/3 on {2, 3}, 1/3 uniform on {2, 3, 4, 6}; g2 (q = 1): uniform
    p = _side_info_reference({0, 1, 5}, _GROUPS, _ITEM_GROUPS, 0, 7, 1)
    np.testing.assert_allclose(
        p, [0, 0, 0.5 * (1 / 3 + 1 / 12) + 0.125, 0.5 * (1 / 3 + 1 / 12) + 0.125, 0.5 / 12 + 0.125, 0, 0.5 / 12 + 0.125]
    )


def test_side_info_falls_back_to_uniform_without_a_group_or_a_free_member():
    train = sp.csr_matrix(([1.0, 1.0, 1.0], ([0, 0, 0], [0, 1, 5])), shape=(1, 7))
    sampler = SideInfoSampler(train, _groups_matrix(), tries=4)
    for positive in (6, 5):  # item 6: no group; item 5: its only group {5} is all positives of the user
        draws = sampler.sample(tf.zeros([4000], tf.int32), tf.fill([4000], positive), 2, tf_seed(9)).numpy()
        counts = np.bincount(draws.ravel(), minlength=7)
        assert counts[[0, 1, 5]].sum() == 0
        assert chi2_pvalue(counts, [0, 0, 0.25, 0.25, 0.25, 0, 0.25]) > 1e-3
    # no groups at all: the uniform sampler exactly (same seed, same draws)
    empty = SideInfoSampler(train, sp.csr_matrix((7, 0)), tries=4)
    a = empty.sample(tf.zeros([50], tf.int32), tf.fill([50], 2), 3, tf_seed(1))
    b = empty.uniform.sample(tf.zeros([50], tf.int32), 3, tf.random.experimental.stateless_split(tf_seed(1), 3)[0])
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_side_info_never_a_positive_seeded_and_within_the_group():
    rng = np.random.default_rng(0)
    n_users, n_items, n_groups = 40, 60, 5
    train = sp.random(n_users, n_items, density=0.3, format="csr", random_state=1)
    train.data[:] = 1
    groups = sp.csr_matrix((rng.random((n_items, n_groups)) < 0.3).astype(np.float32))
    sampler = SideInfoSampler(train, groups)
    users, items = train.nonzero()
    draws = sampler.sample(tf.constant(users), tf.constant(items), 4, tf_seed(3)).numpy()
    dense = train.toarray() > 0
    assert not dense[users[:, None], draws].any()
    again = sampler.sample(tf.constant(users), tf.constant(items), 4, tf_seed(3)).numpy()
    np.testing.assert_array_equal(draws, again)
    assert not np.array_equal(draws, sampler.sample(tf.constant(users), tf.constant(items), 4, tf_seed(4)).numpy())
    # most draws share a group with the positive (where the positive has one)
    g = groups.toarray() > 0
    shares = (g[items][:, None, :] & g[draws]).any(-1)
    has = g[items].any(1)
    assert shares[has].mean() > 0.9


def test_side_info_sampler_checks_its_input():
    train = sp.csr_matrix(np.eye(3))
    with pytest.raises(ValueError, match="item groups have 2 rows for a catalog of 3 items"):
        SideInfoSampler(train, sp.csr_matrix((2, 1)))
    with pytest.raises(ValueError, match="tries must be >= 1"):
        SideInfoSampler(train, sp.csr_matrix((3, 1)), tries=0)


def test_draw_probs_are_the_samplers_distributions():
    # the probability of one draw, by hand (uniform, popular) and by the side_info reference, for every non-positive
    train = sp.csr_matrix(([1.0, 1.0, 1.0, 1.0], ([0, 0, 0, 1], [0, 1, 5, 2])), shape=(2, 7))
    items = tf.constant([[2, 3], [0, 1]])
    uniform = S.NegativeSampler(train).draw_probs(tf.constant([0, 1]), items).numpy()
    np.testing.assert_allclose(uniform, [[1 / 4, 1 / 4], [1 / 6, 1 / 6]])
    popular = S.NegativeSampler(train, np.log(np.arange(1.0, 8.0))).draw_probs(tf.constant([0, 1]), items).numpy()
    np.testing.assert_allclose(popular, [[3 / 19, 4 / 19], [1 / 25, 2 / 25]])  # w = 1..7; user 0 holds 1 + 2 + 6
    users, positives = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1]), np.array([0, 1, 2, 3, 4, 5, 6, 2, 0])
    for tries in (1, 2, 8):
        sampler = SideInfoSampler(train, _groups_matrix(), tries=tries)
        got = sampler.draw_probs(users, positives, np.tile(np.arange(7), (9, 1))).numpy()
        for row, (u, j) in enumerate(zip(users, positives)):
            held = set(train[u].indices)
            free = [i for i in range(7) if i not in held]
            want = _side_info_reference(held, _GROUPS, _ITEM_GROUPS, j, 7, tries)
            np.testing.assert_allclose(got[row, free], want[free], err_msg=f"tries {tries}, row {row}")
