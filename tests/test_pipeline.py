"""TrainingStream on a tiny training matrix: element layout, epoch coverage, determinism, resume, masks."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

from cml_tf.sampling.pipeline import SamplerSpec, TrainingStream

N_USERS, N_ITEMS, BATCH = 12, 40, 8


@pytest.fixture(scope="module")
def train():
    rng = np.random.default_rng(0)
    dense = rng.random((N_USERS, N_ITEMS)) < 0.15
    dense[0, :3] = True  # every user has something
    dense[:, 0] = True
    m = sp.csr_matrix(dense.astype(np.float32))
    assert m.nnz % BATCH != 0  # a partial last batch is dropped: exercised below
    return m


def _spec(sampler, **kw):
    base = dict(sampler=sampler, batch_size=BATCH, num_negatives=3, num_candidates=10)
    base.update(kw)
    return SamplerSpec(**base)


def _elements(stream, start_step=0, num_steps=5):
    return [{k: v.numpy() for k, v in e.items()} for e in stream.dataset(start_step, num_steps)]


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


# ----------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kw, flag",
    [
        (dict(sampler="hard"), "--sampler"),
        (dict(batch_size=0), "--batch_size"),
        (dict(batch_size=10_000), "--batch_size"),
        (dict(num_negatives=0), "--num_negatives"),
        (dict(num_candidates=0), "--num_candidates"),
        (dict(num_candidates=N_ITEMS + 1), "--num_candidates"),
        (dict(num_negatives=11, num_candidates=10), "--num_negatives"),
        (dict(sampler="uniform", num_negatives=N_ITEMS), "--num_negatives"),
        (dict(beta=-1.0), "--beta"),
        (dict(popularity_smoothing=-0.5), "--popularity_smoothing"),
        (dict(popularity_uniform_mix=1.5), "--popularity_uniform_mix"),
    ],
)
def test_spec_validate_names_the_flag(kw, flag):
    spec = _spec(kw.pop("sampler", "2stage"), **kw)
    with pytest.raises(ValueError, match=flag):
        spec.validate(N_ITEMS, 100)


def test_spec_validate_accepts_good_values():
    for sampler in ("uniform", "popular", "2stage"):
        _spec(sampler).validate(N_ITEMS, 100)


def test_two_stage_needs_enough_drawable_items(train):
    # with smoothing 0, items absent from training have weight 0: C above their number is refused
    n_drawable = int((np.asarray(train.sum(0)).ravel() > 0).sum())
    with pytest.raises(ValueError, match="--num_candidates"):
        TrainingStream(train, _spec("2stage", num_candidates=n_drawable + 1, popularity_smoothing=0.0))
    TrainingStream(train, _spec("2stage", num_candidates=n_drawable, popularity_smoothing=0.0))


# ----------------------------------------------------------------------------------------- elements
@pytest.mark.parametrize("sampler", ["uniform", "popular", "2stage"])
def test_element_layout_and_real_pairs(train, sampler):
    stream = TrainingStream(train, _spec(sampler), seed=1)
    dense = train.toarray() > 0
    for e in _elements(stream, num_steps=3):
        assert e["users"].shape == (BATCH,) and e["users"].dtype == np.int32
        assert e["positives"].shape == (BATCH,) and e["positives"].dtype == np.int32
        assert dense[e["users"], e["positives"]].all()
        if sampler == "2stage":
            assert set(e) == {"users", "positives", "candidates", "candidate_is_positive"}
            assert e["candidates"].shape == (10,) and e["candidates"].dtype == np.int32
            assert e["candidate_is_positive"].shape == (BATCH, 10) and e["candidate_is_positive"].dtype == bool
        else:
            assert set(e) == {"users", "positives", "negatives"}
            assert e["negatives"].shape == (BATCH, 3) and e["negatives"].dtype == np.int32


def test_epoch_covers_distinct_pairs(train):
    stream = TrainingStream(train, _spec("uniform"), seed=2)
    nb = stream.batches_per_epoch
    assert nb == train.nnz // BATCH
    elements = _elements(stream, num_steps=2 * nb)
    epochs = [elements[:nb], elements[nb:]]
    pair_sets = []
    for epoch in epochs:
        pairs = [(int(u), int(i)) for e in epoch for u, i in zip(e["users"], e["positives"])]
        assert len(pairs) == nb * BATCH
        assert len(set(pairs)) == nb * BATCH  # no pair repeats within an epoch
        pair_sets.append(pairs)
    # each epoch is its own permutation
    assert pair_sets[0] != pair_sets[1]


def test_full_batches_cover_every_pair_when_divisible():
    dense = np.zeros((4, 6), np.float32)
    dense[[0, 0, 1, 1, 2, 2, 3, 3], [0, 1, 1, 2, 3, 4, 5, 0]] = 1
    train = sp.csr_matrix(dense)
    stream = TrainingStream(train, SamplerSpec("uniform", batch_size=4, num_negatives=1), seed=0)
    pairs = {(int(u), int(i)) for e in _elements(stream, num_steps=2) for u, i in zip(e["users"], e["positives"])}
    assert pairs == set(zip(*train.nonzero()))


@pytest.mark.parametrize("sampler", ["popular", "2stage"])
def test_same_seed_same_stream_different_seed_different(train, sampler):
    a = _elements(TrainingStream(train, _spec(sampler), seed=3), num_steps=4)
    _assert_same(a, _elements(TrainingStream(train, _spec(sampler), seed=3), num_steps=4))
    b = _elements(TrainingStream(train, _spec(sampler), seed=4), num_steps=4)
    assert not all(np.array_equal(x["users"], y["users"]) for x, y in zip(a, b))
    key = "candidates" if sampler == "2stage" else "negatives"
    assert not all(np.array_equal(x[key], y[key]) for x, y in zip(a, b))


@pytest.mark.parametrize("sampler", ["uniform", "2stage"])
def test_resume_equals_uninterrupted_stream(train, sampler):
    stream = TrainingStream(train, _spec(sampler), seed=5)
    nb = stream.batches_per_epoch
    full = _elements(stream, 0, 2 * nb + 2)
    for start in (3, nb - 1, nb, nb + 2):  # inside an epoch, across the boundary, at it, in epoch 2
        _assert_same(_elements(stream, start, 3), full[start : start + 3])


def test_negatives_are_never_positives(train):
    dense = train.toarray() > 0
    for sampler in ("uniform", "popular"):
        stream = TrainingStream(train, _spec(sampler, num_negatives=5), seed=6)
        for e in _elements(stream, num_steps=stream.batches_per_epoch):
            assert not dense[e["users"][:, None], e["negatives"]].any()
            assert e["negatives"].min() >= 0 and e["negatives"].max() < N_ITEMS


def test_candidates_sorted_unique_and_mask_matches_dense(train):
    dense = train.toarray() > 0
    stream = TrainingStream(train, _spec("2stage", num_candidates=15), seed=7)
    saw_positive = False
    for e in _elements(stream, num_steps=stream.batches_per_epoch):
        c = e["candidates"]
        assert np.all(np.diff(c) > 0)  # sorted ascending and unique
        assert c.min() >= 0 and c.max() < N_ITEMS
        np.testing.assert_array_equal(e["candidate_is_positive"], dense[e["users"]][:, c])
        saw_positive |= e["candidate_is_positive"].any()
    assert saw_positive  # not vacuous


def test_stage1_mixed_with_uniform_follows_a_reference_without_replacement():
    # items 0..29 by popularity (item j has j // 3 positives: items 0-2 none), items 30..39 absent from training
    rows, cols = [], []
    for j in range(30):
        for u in range(j // 3):
            rows.append(u)
            cols.append(j)
    train = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(12, N_ITEMS))
    eps, c, steps = 0.5, 10, 600
    counts = np.bincount(train.indices, minlength=N_ITEMS).astype(float)
    q = counts / counts.sum()  # smoothing 0: popularity alone never draws the absent items
    p = (1 - eps) * q + eps / N_ITEMS
    stream = TrainingStream(
        train, _spec("2stage", num_candidates=c, popularity_smoothing=0.0, popularity_uniform_mix=eps), seed=4
    )
    seen = np.zeros(N_ITEMS)
    for e in stream.dataset(0, steps):
        seen[e["candidates"].numpy()] += 1
    rng = np.random.default_rng(0)  # the reference: successive draws without replacement by p (numpy's choice)
    ref = np.zeros(N_ITEMS)
    for _ in range(20_000):
        ref[rng.choice(N_ITEMS, size=c, replace=False, p=p)] += 1
    ref /= 20_000
    got = seen / steps
    sd = np.sqrt(ref * (1 - ref) / steps)
    assert np.all(np.abs(got - ref) < 4.5 * sd + 0.01), np.round(np.c_[got, ref], 3)
    assert got[30:].min() > 0 and got[:3].min() > 0  # absent items are drawn (ε/n each) ...
    assert got[29] > got[3] + 0.1  # ... and popularity still weighs (item 29: 9 positives, item 3: 1)
    plain = TrainingStream(train, _spec("2stage", num_candidates=c, popularity_smoothing=0.0), seed=4)
    never = set()
    for e in plain.dataset(0, 50):
        never |= set(e["candidates"].numpy().tolist())
    assert never.isdisjoint(range(30, 40)) and never.isdisjoint(range(3))  # without the mix they never are


def test_every_step_draws_with_its_own_seed(train):
    # stage-1 candidates depend only on the step's seed: all distinct over two epochs (no seed reuse per epoch)
    stream = TrainingStream(train, _spec("2stage"), seed=8)
    nb = stream.batches_per_epoch
    candidate_sets = {tuple(e["candidates"].tolist()) for e in _elements(stream, num_steps=2 * nb)}
    assert len(candidate_sets) == 2 * nb


def test_candidate_groups_give_each_row_block_its_own_set_and_mask():
    train = sp.random(60, 400, density=0.05, format="csr", random_state=3)
    train.data[:] = 1.0
    spec = SamplerSpec(sampler="2stage", batch_size=32, num_candidates=50)
    one = next(iter(TrainingStream(train, spec, seed=5).dataset(0, 1)))
    grouped = next(iter(TrainingStream(train, spec, seed=5, candidate_groups=4).dataset(0, 1)))
    np.testing.assert_array_equal(grouped["users"], one["users"])  # same pairs
    candidates = grouped["candidates"].numpy()
    assert candidates.shape == (4, 50)
    assert len({tuple(c) for c in candidates}) == 4  # independent sets
    users = grouped["users"].numpy().reshape(4, 8)
    mask = grouped["candidate_is_positive"].numpy().reshape(4, 8, 50)
    for g in range(4):
        assert (np.diff(candidates[g]) > 0).all()
        dense = np.asarray(train[users[g]][:, candidates[g]].todense()) > 0
        np.testing.assert_array_equal(mask[g], dense)
    with pytest.raises(ValueError, match="divisible by the 3 replicas"):
        TrainingStream(train, spec, seed=5, candidate_groups=3)


def test_fixed_parallelism_with_the_autotuner_off(train, monkeypatch):
    """The stream runs deterministic, autotuner off, one batch builder per two cores (1 to 8)."""
    from cml_tf.sampling import pipeline

    options = TrainingStream(train, _spec("2stage"), seed=0).dataset().options()
    assert options.deterministic is True
    assert options.autotune.enabled is False
    for cores, workers in [(None, 1), (1, 1), (2, 1), (5, 2), (16, 8), (96, 8)]:
        monkeypatch.setattr(pipeline.os, "cpu_count", lambda c=cores: c)
        assert pipeline.input_parallelism() == workers


def test_side_info_stream_draws_group_mates_never_positives(train):
    groups = sp.csr_matrix((np.arange(N_ITEMS)[:, None] % 4 == np.arange(4)[None, :]).astype(np.float32))
    stream = TrainingStream(train, _spec("side_info"), seed=3, item_groups=groups)
    elements = _elements(stream, num_steps=6)
    dense = train.toarray() > 0
    for e in elements:
        assert set(e) == {"users", "positives", "negatives"} and e["negatives"].shape == (BATCH, 3)
        assert not dense[e["users"][:, None], e["negatives"]].any()
    negatives = np.concatenate([e["negatives"] for e in elements])
    positives = np.concatenate([e["positives"] for e in elements])
    assert ((negatives % 4) == (positives % 4)[:, None]).mean() > 0.9  # same group (residue mod 4)
    _assert_same(elements, _elements(TrainingStream(train, _spec("side_info"), seed=3, item_groups=groups), 0, 6))
    with pytest.raises(ValueError, match="--sampler=side_info needs item side information"):
        TrainingStream(train, _spec("side_info"), seed=3)


# ----------------------------------------------------------------------------- the original's popular sampler
def _original_popular_exact(p, positives_of_rows):
    """Exact P(negatives of a batch) under the original popular sampler (deezer/sigir2019-2stagesampling,
    samplers/popular_sampler.py, |N| = 1): ``np.random.choice(items, size=(B, 1), replace=False, p)`` (successive
    draws over the whole batch), then each draw that is a positive of its row's user redrawn from ``p`` until it is
    not (the complement, renormalised). Enumerates every ordered tuple of distinct first draws."""
    import itertools

    p = np.asarray(p, np.float64)
    n, b = p.size, len(positives_of_rows)
    out: dict[tuple, float] = {}
    for first in itertools.permutations(range(n), b):
        prob, left = 1.0, 1.0
        for i in first:
            prob *= p[i] / left
            left -= p[i]
        finals = []
        for row, i in enumerate(first):
            pos = positives_of_rows[row]
            if i in pos:
                free = np.array([0.0 if j in pos else p[j] for j in range(n)])
                finals.append([(j, free[j] / free.sum()) for j in range(n) if free[j] > 0])
            else:
                finals.append([(i, 1.0)])
        for combo in itertools.product(*finals):
            key = tuple(j for j, _ in combo)
            out[key] = out.get(key, 0.0) + prob * np.prod([q for _, q in combo])
    return out


def test_batch_distinct_popular_negatives_follow_the_original_sampler():
    from references import chi2_pvalue

    # 3 users x 6 items; the batch holds every pair once: users 0, 0, 1, 2 (B = 4)
    train = sp.csr_matrix(
        np.array([[1, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0], [1, 0, 0, 0, 1, 0]], np.float32)
    )  # item counts 2, 1, 1, 0, 1, 0: with smoothing 1, weights ∝ 3, 2, 2, 1, 2, 1
    spec = SamplerSpec(
        sampler="popular", batch_size=5, num_negatives=1, beta=1.0, popularity_smoothing=1.0, batch_distinct=True
    )
    stream = TrainingStream(train, spec, seed=3)
    assert stream.batches_per_epoch == 1
    w = np.array([3.0, 2, 2, 1, 2, 1])
    p = w / w.sum()
    rows, draws = None, []
    for element in stream.dataset(0, 6000):
        users = element["users"].numpy()
        order = np.lexsort((element["positives"].numpy(), users))  # rows sorted: (0,0) (0,1) (1,2) (2,0) (2,4)
        rows = users[order] if rows is None else rows
        draws.append(tuple(element["negatives"].numpy()[order, 0]))
    positives = [set(train[u].indices) for u in rows]
    assert not any(j in positives[r] for d in draws for r, j in enumerate(d))  # never a positive
    # rows 0 and 1 (both user 0): their joint law is the original's (the full 5-row joint is too fine for 6,000).
    # Both shuffle the pairs, so a row takes any place in the draw order: average over the batch orders.
    import itertools

    marginal: dict[tuple, float] = {}
    orders = list(itertools.permutations(range(5)))
    for order in orders:
        exact = _original_popular_exact(p, [positives[r] for r in order])
        for key, prob in exact.items():
            by_row = {order[place]: item for place, item in enumerate(key)}
            pair = (by_row[0], by_row[1])
            marginal[pair] = marginal.get(pair, 0.0) + prob / len(orders)
    keys = sorted(marginal)
    counts = [sum(1 for d in draws if d[:2] == k) for k in keys]
    assert chi2_pvalue(counts, [marginal[k] for k in keys]) > 1e-3
    # not the default's i.i.d. complement draws: the two rows collide far less often than i.i.d. draws would
    free = np.where(np.isin(np.arange(6), list(positives[0])), 0.0, p)
    free /= free.sum()
    collide = np.mean([d[0] == d[1] for d in draws])
    assert collide == pytest.approx(sum(marginal.get((j, j), 0.0) for j in range(6)), abs=0.02)
    assert collide < (free**2).sum() - 0.1


def test_batch_distinct_needs_enough_drawable_items(train):
    with pytest.raises(ValueError, match="--batch_distinct_negatives"):
        TrainingStream(train, _spec("popular", num_negatives=6, batch_distinct=True))


# ------------------------------------------------------------------------------ dns, in-batch, the softmax's log q
def test_dns_pools_are_uniform_draws_never_positive(train):
    from references import chi2_pvalue

    stream = TrainingStream(train, _spec("dns", num_negatives=2, dns_k=4), seed=1)
    counts = np.zeros(N_ITEMS)
    for e in _elements(stream, 0, 60):
        pool = e["negative_pool"]
        assert pool.shape == (BATCH, 2, 4) and "negatives" not in e
        assert not np.asarray(train[np.repeat(e["users"], 8), pool.reshape(-1)]).ravel().any()
        for user, row in zip(e["users"], pool):
            if user == 0:
                np.add.at(counts, row.ravel(), 1)
    free = 1.0 - train[0].toarray().ravel()
    assert chi2_pvalue(counts, free / free.sum()) > 1e-3  # uniform over user 0's non-positives


def test_in_batch_negatives_are_uniform_over_the_batch_positives_not_held(train):
    from references import chi2_pvalue

    stream = TrainingStream(train, _spec("in_batch", num_negatives=3), seed=2)
    observed, expected = np.zeros(N_ITEMS), np.zeros(N_ITEMS)
    for e in _elements(stream, 0, 300):
        held = train[e["users"]].toarray() > 0  # [B, n_items]
        for b in range(BATCH):
            allowed = e["positives"][~held[b, e["positives"]]]  # the batch's positives this user does not hold
            assert np.isin(e["negatives"][b], allowed).all()
            np.add.at(observed, e["negatives"][b], 1)
            np.add.at(expected, allowed, 3.0 / allowed.size)  # each draw: one column of the allowed ones, uniformly
    keep = expected > 0
    assert observed[~keep].sum() == 0
    assert chi2_pvalue(observed[keep], expected[keep] / expected[keep].sum()) > 1e-3


def test_inclusion_probabilities_sum_to_the_sample_size_and_match_successive_draws():
    from cml_tf.sampling.negatives import ItemSampler, inclusion_log_probs

    w = np.array([8.0, 4, 4, 2, 1, 1, 1, 0.5, 0.5, 0.0])
    log_w = np.log(np.where(w > 0, w, 1e-300))
    log_w[w == 0] = -np.inf
    pi = np.exp(inclusion_log_probs(log_w, w.size, 4))
    assert pi.sum() == pytest.approx(4.0, rel=1e-6) and pi[-1] == 0.0
    np.testing.assert_allclose(np.exp(inclusion_log_probs(None, 20, 5)), 0.25)
    sampler = ItemSampler(log_w, w.size)
    draws = np.stack(
        [sampler.sample_without_replacement(4, tf.constant([9, s], tf.int64)).numpy() for s in range(3000)]
    )
    freq = np.bincount(draws.ravel(), minlength=w.size) / len(draws)
    np.testing.assert_allclose(freq, pi, atol=0.04)  # the approximation of successive sampling's inclusion


def test_softmax_batches_carry_the_log_expected_counts(train):
    spec = _spec("2stage", softmax=True, in_batch=True)
    stream = TrainingStream(train, spec, seed=0)
    e = _elements(stream, 0, 1)[0]
    counts = np.bincount(train.indices, minlength=N_ITEMS).astype(float)
    from cml_tf.sampling.negatives import inclusion_log_probs, popularity_log_weights

    pi = np.exp(inclusion_log_probs(popularity_log_weights(counts, 1.0, 1.0), N_ITEMS, spec.num_candidates))
    expected = pi + (BATCH - 1) * counts / (counts.sum() - 1)  # stage-1 inclusion + the other rows' positives
    np.testing.assert_allclose(np.exp(e["candidate_log_q"]), expected[e["candidates"]], rtol=1e-5)
    np.testing.assert_allclose(np.exp(e["positive_log_q"]), expected[e["positives"]], rtol=1e-5)
    np.testing.assert_allclose(
        np.exp(e["batch_log_q"]), np.broadcast_to(expected[e["positives"]], (BATCH, BATCH)), rtol=1e-5
    )
    held = train[e["users"]].toarray() > 0
    np.testing.assert_array_equal(e["batch_is_positive"], held[:, e["positives"]])


# ------------------------------------------------------- the softmax's log q: expected counts in each row's pool
SOFTMAX_ITEMS, SOFTMAX_BATCHES = 500, 160


@pytest.fixture(scope="module")
def skewed_train():
    """60 users x 500 items, 5 to 60 positives each drawn by a long-tailed popularity: ~2,000 pairs."""
    rng = np.random.default_rng(7)
    p = 1.0 / (np.arange(SOFTMAX_ITEMS) + 5.0)
    p /= p.sum()
    dense = np.zeros((60, SOFTMAX_ITEMS), np.float32)
    for u in range(60):
        dense[u, rng.choice(SOFTMAX_ITEMS, size=rng.integers(5, 61), replace=False, p=p)] = 1
    return sp.csr_matrix(dense)


def _side_info_groups():
    """Item j is in groups j % 7 and 7 + (j // 7) % 5, except every 11th item, which has none."""
    members = [[j % 7, 7 + (j // 7) % 5] if j % 11 else [] for j in range(SOFTMAX_ITEMS)]
    rows = [j for j, gs in enumerate(members) for _ in gs]
    cols = [g for gs in members for g in gs]
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(SOFTMAX_ITEMS, 12)), members


def _per_draw_reference(sampler, held, positive, counts, item_groups, tries=8):
    """[n] the probability that one of the row's per-row draws is item j, from the samplers' definitions, for the
    items j ∉ P_u (a positive is never drawn) and, as if it could be drawn, for the row's own positive."""
    n = SOFTMAX_ITEMS
    free = n - held.sum()
    if sampler == "uniform":
        return np.full(n, 1.0 / free)
    if sampler == "popular":  # ∝ (c_j + 1)^β, β = 1, renormalised over the user's non-positives
        w = counts + 1.0
        return w / w[~held].sum()
    groups, members = item_groups  # side_info: a group of the positive uniformly, then T tries among its members
    if not members[positive]:
        return np.full(n, 1.0 / free)
    out = np.zeros(n)
    for g in members[positive]:
        in_g = np.asarray(groups[:, g].todense()).ravel() > 0
        fail = ((in_g & held).sum() / in_g.sum()) ** tries
        inside = in_g / max((in_g & ~held).sum(), 1) if (in_g & ~held).any() else np.zeros(n)
        out += ((1 - fail) * inside + fail / free) / len(members[positive])
    return out


@pytest.mark.parametrize(
    "sampler, in_batch, batch, num_negatives",
    [
        ("uniform", True, 64, 1),  # the case: a tail item's count is 0.002 in a row's pool, not 0.128
        ("popular", False, 64, 2),
        ("side_info", False, 64, 2),
        ("2stage", True, 8, 1),  # B = 8: B·f and (B − 1)·f differ by 14 %
        ("in_batch", True, 8, 1),
    ],
)
def test_softmax_log_q_is_the_expected_count_of_the_item_in_the_rows_pool(
    skewed_train, sampler, in_batch, batch, num_negatives
):
    """Per row i and pool item j, the batch's log q is log E[times j enters row i's pool] (Σ over its sub-pools).

    The reference, from the definition: row i (user u, positive p) gets its N per-row draws only into its own pool
    (N·q_j(i)), each other row's positive is a uniform draw of the other P − 1 pairs ((B − 1)·c_j / (P − 1)), the C
    stage-1 candidates enter with their inclusion probability π_j. Checked three ways: (1) the log q carried for
    every pool item (candidates, per-row negatives, batch positives, and the positive's own) equals the reference's
    sum; (2) the counts of each sub-pool, summed over all rows of SOFTMAX_BATCHES real batches, match the
    reference's expected counts per popularity quintile; (3) Σ over occurrences of 1 / exp(log q), the estimate of
    the number of the row's non-positive items that the softmax's normaliser relies on, matches it (it is unbiased
    exactly when exp(log q) is the expected count). Tolerances: 5 standard errors of the per-batch sums.
    """
    from cml_tf.sampling.negatives import inclusion_log_probs, popularity_log_weights

    train = skewed_train
    n, held_all = SOFTMAX_ITEMS, train.toarray() > 0
    counts = np.bincount(train.indices, minlength=n).astype(float)
    pairs = train.nnz
    spec = SamplerSpec(
        sampler=sampler, batch_size=batch, num_negatives=num_negatives, num_candidates=20, softmax=True,
        in_batch=in_batch,
    )  # fmt: skip
    item_groups = _side_info_groups()
    stream = TrainingStream(train, spec, seed=11, item_groups=item_groups[0] if sampler == "side_info" else None)
    pi = np.exp(inclusion_log_probs(popularity_log_weights(counts, 1.0, 1.0), n, 20)) if sampler == "2stage" else 0
    in_batch_count = (batch - 1) * counts / (pairs - 1) if in_batch else np.zeros(n)
    quintile = np.zeros(n, int)
    quintile[np.argsort(counts, kind="stable")] = np.arange(n) * 5 // n
    per_row_cache = {}
    sums = {k: [] for k in ("candidates", "negatives", "in_batch", "ht")}  # per batch: [observed, expected] x 5

    def quintiles(x):
        return np.bincount(quintile, weights=x, minlength=5)

    for e in _elements(stream, 0, SOFTMAX_BATCHES):
        users, positives = e["users"], e["positives"]
        held = held_all[users]  # [B, n]
        rows = np.arange(batch)
        expected = np.zeros((batch, n)) + pi + in_batch_count  # E_i(j), the indicator j ∉ P_u left out
        per_row = np.zeros((batch, n))
        if sampler in ("uniform", "popular", "side_info"):
            for i, (u, p) in enumerate(zip(users, positives)):
                key = (u, p) if sampler == "side_info" else u
                if key not in per_row_cache:
                    per_row_cache[key] = _per_draw_reference(sampler, held_all[u], p, counts, item_groups)
                per_row[i] = num_negatives * per_row_cache[key]
            expected += per_row
        # (1) every carried log q is the reference's log E_i(j)
        np.testing.assert_allclose(np.exp(e["positive_log_q"]), expected[rows, positives], rtol=1e-4)
        pools = []  # (sub-pool, [B, m] items, [B, m] in the row's pool, [B, m] carried log q)
        if "candidates" in e:
            c = np.broadcast_to(e["candidates"], (batch, e["candidates"].size))
            pools.append(("candidates", c, ~e["candidate_is_positive"], np.broadcast_to(e["candidate_log_q"], c.shape)))
        if "negatives" in e:
            assert not held[rows[:, None], e["negatives"]].any()
            pools.append(("negatives", e["negatives"], np.ones(e["negatives"].shape, bool), e["negative_log_q"]))
        if in_batch:
            b = np.broadcast_to(positives, (batch, batch))
            np.testing.assert_array_equal(e["batch_is_positive"], held[:, positives])
            pools.append(("in_batch", b, ~e["batch_is_positive"], e["batch_log_q"]))
        ht = np.zeros(n)
        for name, items, kept, log_q in pools:
            np.testing.assert_allclose(np.exp(log_q[kept]), expected[np.nonzero(kept)[0], items[kept]], rtol=1e-4)
            observed = np.bincount(items[kept], minlength=n).astype(float)
            sub = {"candidates": pi, "negatives": per_row, "in_batch": in_batch_count}[name]
            sub_expected = (np.broadcast_to(sub, (batch, n)) * ~held).sum(0)
            sums[name].append([quintiles(observed), quintiles(sub_expected)])
            covered = kept & (np.exp(log_q) >= 1e-4)
            np.add.at(ht, items[covered], np.exp(-log_q[covered].astype(np.float64)))
        # Σ 1/q vs the number of the row's non-positives, over the items a row's pool covers (E_i(j) >= 1e-4:
        # side_info reaches the other items only through a q_g^T fallback, with a variance no test can average)
        sums["ht"].append([quintiles(ht), quintiles((~held & (expected >= 1e-4)).sum(0).astype(float))])
    for name, per_batch in sums.items():
        if not per_batch:
            continue
        per_batch = np.asarray(per_batch)  # [batches, 2, 5]
        observed, reference = per_batch.sum(0)
        se = np.sqrt(len(per_batch)) * (per_batch[:, 0] - per_batch[:, 1]).std(0)
        slack = 0.03 * reference if name in ("candidates", "ht") and sampler == "2stage" else 0  # π_j approximated
        assert np.all(np.abs(observed - reference) <= 5 * se + slack + 1e-9), (name, observed, reference, se)
