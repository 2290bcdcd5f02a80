"""Full-ranking evaluator: hand-computed cases and a plain-Python reference on random data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

from cml_tf.evaluation.evaluator import Evaluator

KEYS = ("map", "ndcg", "recall", "precision")


def csr(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    r = [u for u, items in enumerate(rows) for _ in items]
    c = [i for items in rows for i in items]
    return sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(len(rows), n_items))


def reference(scores: np.ndarray, train: sp.csr_matrix, test: sp.csr_matrix, k: int, users=None, popularity=None):
    """Plain-Python reference from the definitions. Python sets are fine here (test code only).

    scores: [n_users, n_items] float64, higher is better; ties broken by the lower item index.
    """
    n_users, n_items = scores.shape
    if popularity is None:
        popularity = np.bincount(train.indices, minlength=n_items)
    if users is None:
        users = range(n_users)
    per_user = {"map": [], "ndcg": [], "recall": [], "precision": [], "mrr": [], "mrr_sum": [], "mmr": []}
    for u in users:
        test_items = set(test.indices[test.indptr[u] : test.indptr[u + 1]].tolist())
        if not test_items:
            continue
        train_items = set(train.indices[train.indptr[u] : train.indptr[u + 1]].tolist())
        s = [(-np.inf if i in train_items else float(scores[u, i])) for i in range(n_items)]
        order = sorted(range(n_items), key=lambda i: (-s[i], i))[: min(k, n_items)]
        ranked = [i for i in order if s[i] > -np.inf]  # masked items never count
        hits = [i in test_items for i in ranked]
        n_rel = len(test_items)
        seen, ap, dcg, rr, rr_sum = 0, 0.0, 0.0, 0.0, 0.0
        for r, h in enumerate(hits, start=1):
            if h:
                seen += 1
                ap += seen / r
                dcg += 1 / math.log2(r + 1)
                rr = rr or 1 / r  # MRR: the first hit's reciprocal rank
                rr_sum += 1 / r  # the HLR reference code's MRR: every hit's
        idcg = sum(1 / math.log2(r + 1) for r in range(1, min(n_rel, k) + 1))
        per_user["map"].append(ap / min(n_rel, k))
        per_user["ndcg"].append(dcg / idcg)
        per_user["recall"].append(seen / n_rel)
        per_user["precision"].append(seen / k)
        per_user["mrr"].append(rr)
        per_user["mrr_sum"].append(rr_sum)
        per_user["mmr"].append(float(np.median([popularity[i] for i in ranked])) if ranked else 0.0)
    out = {f"{name}@{k}": float(np.mean(v)) for name, v in per_user.items() if name != "mmr"}
    out["mmr"] = float(np.mean(per_user["mmr"]))
    out["users"] = len(per_user["map"])
    return out


def distance_scores(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    u, v = u.astype(np.float64), v.astype(np.float64)
    return -((u[:, None, :] - v[None, :, :]) ** 2).sum(-1)


def assert_same(got: dict, want: dict):
    assert set(got) == set(want)
    assert got["users"] == want["users"]
    for key in want:
        if key != "users":
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), key


def random_case(seed: int, n_users: int, n_items: int, d: int = 4, max_train: int = 8, max_test: int = 4):
    rng = np.random.default_rng(seed)
    train_rows, test_rows = [], []
    for _ in range(n_users):
        items = rng.permutation(n_items)
        n_tr = int(rng.integers(0, max_train + 1))
        n_te = int(rng.integers(0, max_test + 1))
        train_rows.append(items[:n_tr].tolist())
        test_rows.append(items[n_tr : n_tr + n_te].tolist())
    u = rng.standard_normal((n_users, d)).astype(np.float32)
    v = rng.standard_normal((n_items, d)).astype(np.float32)
    return csr(train_rows, n_items), csr(test_rows, n_items), u, v


def test_hand_computed_one_dimension():
    # Items on a line at 0..5; user 0 at 0.1: distance order 0, 1, 2, 3, 4, 5. Item 0 is a training item.
    v = np.arange(6, dtype=np.float32)[:, None]
    u = np.array([[0.1], [5.0]], np.float32)
    train = csr([[0], []], 6)
    test = csr([[2, 5], [5]], 6)
    ev = Evaluator(train, test, k=3)
    got = ev.evaluate(u, v)
    # user 0 ranking after masking item 0: 1, 2, 3 -> hits [0, 1, 0]; |T| = 2
    ap0, ndcg0 = (1 / 2) / 2, (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    # user 1 at 5.0: ranking 5, 4, 3 -> hits [1, 0, 0]; |T| = 1
    assert got["map@3"] == pytest.approx((ap0 + 1.0) / 2)
    assert got["ndcg@3"] == pytest.approx((ndcg0 + 1.0) / 2)
    assert got["recall@3"] == pytest.approx((0.5 + 1.0) / 2)
    assert got["precision@3"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert got["mrr@3"] == pytest.approx((1 / 2 + 1.0) / 2)
    # popularity = train column counts = [1, 0, 0, 0, 0, 0]: every median is 0
    assert got["mmr"] == 0.0
    assert got["users"] == 2
    assert got["mrr_sum@3"] == pytest.approx((1 / 2 + 1.0) / 2)  # one hit each: the same as MRR
    assert set(got) == {"map@3", "ndcg@3", "recall@3", "precision@3", "mrr@3", "mrr_sum@3", "mmr", "users"}


def test_training_items_are_masked_even_when_best():
    # Training items get the highest scores; with masking the ranking starts after them.
    n_items = 10
    train = csr([[0, 1, 2], [7]], n_items)
    test = csr([[3], [0]], n_items)
    scores = -np.arange(n_items, dtype=np.float32)  # item 0 best, then 1, ...
    ev = Evaluator(train, test, k=1)
    got = ev.evaluate_scores(lambda users: np.tile(scores, (len(users), 1)))
    assert got["recall@1"] == pytest.approx(1.0)  # both users hit at rank 1
    assert got["map@1"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "seed,n_users,n_items,k,batch_size,scoring",
    [
        (0, 37, 30, 5, 8, "distance"),  # several batches, padded last batch
        (1, 25, 12, 10, 1024, "distance"),  # n_items - |train| < k for many users
        (2, 20, 9, 50, 7, "dot"),  # k > n_items: clamped
        (3, 40, 60, 20, 16, "dot"),
    ],
)
def test_random_against_reference(seed, n_users, n_items, k, batch_size, scoring):
    train, test, u, v = random_case(seed, n_users, n_items)
    assert (np.diff(test.indptr) == 0).any()  # the case includes users without test items
    ev = Evaluator(train, test, k=k, batch_size=batch_size, scoring=scoring)
    scores = distance_scores(u, v) if scoring == "distance" else u.astype(np.float64) @ v.T.astype(np.float64)
    assert_same(ev.evaluate(u, v), reference(scores, train, test, k))
    assert ev.top_k == min(k, n_items)


def test_traced_once_and_batch_size_independent():
    train, test, u, v = random_case(4, 50, 40)
    results = []
    for bs in (1, 7, 64):
        ev = Evaluator(train, test, k=10, batch_size=bs)
        results.append(ev.evaluate_per_user(u, v))
        ev.evaluate(tf.Variable(u), tf.constant(v))  # other input kinds: no retrace
        ev.evaluate(u.astype(np.float64), v)
        assert ev._embedding_step.experimental_get_tracing_count() == 1
    for other in results[1:]:
        np.testing.assert_array_equal(other["users"], results[0]["users"])
        for name in ("ap", "ndcg", "recall", "precision", "mmr"):
            np.testing.assert_allclose(other[name], results[0][name], rtol=1e-6)


def test_score_fn_baseline_with_ties_and_broadcast():
    train, test, _, _ = random_case(5, 30, 25, max_train=5, max_test=5)
    popularity = np.bincount(train.indices, minlength=25).astype(np.float32)  # many ties
    ev = Evaluator(train, test, k=8, batch_size=4)
    want = reference(np.tile(popularity.astype(np.float64), (30, 1)), train, test, 8)
    calls = []

    def score_fn(users):
        calls.append(len(users))
        return popularity  # [n_items]: broadcast to every user

    assert_same(ev.evaluate_scores(score_fn), want)
    assert sum(calls) == want["users"]  # called on real users only, never on padding
    assert_same(ev.evaluate_scores(lambda users: tf.constant(popularity)[None, :]), want)
    assert ev._score_step.experimental_get_tracing_count() == 1


def test_scored_minus_inf_and_k_beyond_unmasked_items_never_hit():
    # 4 items, user 0 trains on 3 of them and tests on item 1, which is also a training item (overlap).
    train = csr([[0, 1, 2], []], 4)
    test = csr([[1], [3]], 4)
    ev = Evaluator(train, test, k=4)
    got = ev.evaluate_per_user(np.zeros((2, 2), np.float32), np.eye(4, 2, dtype=np.float32))
    assert got["recall"][0] == 0.0 and got["ap"][0] == 0.0  # item 1 is masked: no hit though it is in top 4
    assert got["recall"][1] == 1.0


def test_users_argument_and_custom_popularity():
    train, test, u, v = random_case(6, 30, 20)
    no_test = np.flatnonzero(np.diff(test.indptr) == 0)
    with_test = np.flatnonzero(np.diff(test.indptr) > 0)
    users = np.concatenate([with_test[:10], no_test[:2]])
    pop = np.random.default_rng(0).integers(0, 100, size=20)
    ev = Evaluator(train, test, k=5, users=users, item_popularity=pop)
    assert ev.num_excluded == min(2, len(no_test))
    assert_same(ev.evaluate(u, v), reference(distance_scores(u, v), train, test, 5, users=users, popularity=pop))


def test_no_users_to_evaluate():
    ev = Evaluator(csr([[0]], 3), csr([[]], 3), k=2)
    got = ev.evaluate(np.zeros((1, 2)), np.zeros((3, 2)))
    assert got["users"] == 0 and math.isnan(got["map@2"])


def test_errors_name_the_counts():
    train, test = csr([[0], [1]], 5), csr([[1], [2]], 5)
    with pytest.raises(ValueError, match="2 users x 5 items but test is 2 users x 6 items"):
        Evaluator(train, csr([[1], [2]], 6))
    with pytest.raises(ValueError, match="scoring"):
        Evaluator(train, test, scoring="cosine")
    with pytest.raises(ValueError, match=r"out of range \[0, 2\)"):
        Evaluator(train, test, users=np.array([0, 2]))
    with pytest.raises(ValueError, match="item_popularity"):
        Evaluator(train, test, item_popularity=np.ones(4))
    ev = Evaluator(train, test, k=2)
    with pytest.raises(ValueError, match="dimension 3 but item embeddings 4"):
        ev.evaluate(np.zeros((2, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="3 rows but the evaluator has 2 users"):
        ev.evaluate(np.zeros((3, 4)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="4 rows but the evaluator has 5 items"):
        ev.evaluate(np.zeros((2, 4)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="NaN"):
        ev.evaluate(np.full((2, 4), np.nan), np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"score_fn must return \[2, 5\]"):
        ev.evaluate_scores(lambda users: np.zeros((len(users), 4)))


# ----------------------------------------------------------------------------------- the reference protocol


def lightgcn_reference(scores: np.ndarray, train, valid, test, k: int) -> dict:
    """LightGCN's test protocol from its definition, pure numpy loops over users: every item is ranked except the
    user's TRAIN items (validation items stay in the ranking); Recall@k = hits / |test items|; NDCG@k = DCG / the
    DCG of min(|test items|, k) leading hits; means over the users with test items. Ties: the lower item first."""
    n_users, n_items = scores.shape
    recalls, ndcgs = [], []
    for u in range(n_users):
        t = set(test[u].indices.tolist())
        if not t:
            continue
        excluded = set(train[u].indices.tolist())  # NOT valid[u]: valid items compete for the top k
        candidates = [i for i in range(n_items) if i not in excluded]
        candidates.sort(key=lambda i: (-scores[u, i], i))
        top = candidates[:k]
        hits = [1.0 if i in t else 0.0 for i in top]
        recalls.append(sum(hits) / len(t))
        dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
        idcg = sum(1 / math.log2(r + 2) for r in range(min(len(t), k)))
        ndcgs.append(dcg / idcg)
    return {f"recall@{k}": float(np.mean(recalls)), f"ndcg@{k}": float(np.mean(ndcgs)), "users": len(recalls)}


def split_case(seed: int, n_users: int = 30, n_items: int = 25):
    """Random disjoint train / valid / test rows (some users without test items) and a random score matrix."""
    from cml_tf.data.splits import Split

    rng = np.random.default_rng(seed)
    rows = {"train": [], "valid": [], "test": []}
    for _ in range(n_users):
        items = rng.permutation(n_items)
        a, b, c = int(rng.integers(1, 9)), int(rng.integers(0, 5)), int(rng.integers(0, 12))
        rows["train"].append(items[:a].tolist())
        rows["valid"].append(items[a : a + b].tolist())
        rows["test"].append(items[a + b : a + b + c].tolist())
    split = Split(*(csr(rows[p], n_items) for p in ("train", "valid", "test")))
    return split, rng.standard_normal((n_users, n_items))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reference_protocol_matches_lightgcn_definition(seed):
    split, scores = split_case(seed)
    k = 5  # below many users' test counts: Recall divides by |T_u|, not min(k, |T_u|)
    got = Evaluator.for_split(split, "test", "reference", k=k, batch_size=7).evaluate_scores(lambda u: scores[u])
    want = lightgcn_reference(scores, split.train, split.valid, split.test, k)
    assert got["users"] == want["users"]
    assert got[f"recall@{k}"] == pytest.approx(want[f"recall@{k}"], rel=1e-5)
    assert got[f"ndcg@{k}"] == pytest.approx(want[f"ndcg@{k}"], rel=1e-5)
    # cml's own protocol masks the validation items too: on these cases it ranks differently
    cml = Evaluator.for_split(split, "test", "cml", k=k, batch_size=7).evaluate_scores(lambda u: scores[u])
    assert cml[f"recall@{k}"] != pytest.approx(want[f"recall@{k}"], rel=1e-5)


def test_reference_protocol_a_valid_item_ranked_first_is_a_miss_occupying_a_slot():
    # one user, 5 items: train {0}, valid {1}, test {2, 3}; scores rank 0 > 1 > 2 > 4 > 3
    from cml_tf.data.splits import Split

    split = Split(csr([[0]], 5), csr([[1]], 5), csr([[2, 3]], 5))
    scores = np.array([[5.0, 4.0, 3.0, 1.0, 2.0]])
    ref = Evaluator.for_split(split, "test", "reference", k=2).evaluate_scores(lambda u: scores[u])
    # ranking without item 0: 1 (valid: a miss), 2 (hit) -> recall 1/2, ndcg (1/log2 3) / (1 + 1/log2 3)
    assert ref["recall@2"] == pytest.approx(0.5)
    assert ref["ndcg@2"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    cml = Evaluator.for_split(split, "test", "cml", k=2).evaluate_scores(lambda u: scores[u])
    assert cml["recall@2"] == pytest.approx(0.5)  # ranking 2 (hit), 4 (miss)
    assert cml["ndcg@2"] == pytest.approx(1 / (1 + 1 / math.log2(3)))
    # validation masks the training items only, whatever the protocol
    valid = Evaluator.for_split(split, "valid", k=1).evaluate_scores(lambda u: scores[u])
    assert valid["recall@1"] == 1.0


def test_reference_protocol_with_validation_carved_from_train_masks_the_whole_training_file():
    from cml_tf.data.splits import Split

    split = Split(csr([[0]], 5), csr([[1]], 5), csr([[2, 3]], 5), valid_from_train=True)
    assert split.excluded_at_test("reference").toarray().tolist() == [[1, 1, 0, 0, 0]]
    assert split.excluded_at_test("cml").toarray().tolist() == [[1, 1, 0, 0, 0]]
    with pytest.raises(ValueError, match="--protocol"):
        split.excluded_at_test("lightgcn")
