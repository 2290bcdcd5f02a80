"""Metric definitions: hand-computed cases, a plain-Python reference, graph mode and dtypes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from cml_tf.evaluation import metrics


def reference(hits_row, n_rel: int, k: int) -> dict[str, float]:
    """Plain-Python metrics of one user, written from the definitions (ranks past len(hits_row) are misses)."""
    hits_row = [bool(h) for h in hits_row] + [False] * (k - len(hits_row))
    if n_rel == 0:
        return {"ap": 0.0, "ndcg": 0.0, "recall": 0.0, "precision": 0.0, "rr": 0.0, "rr_sum": 0.0}
    ap, seen, dcg, rr, rr_sum = 0.0, 0, 0.0, 0.0, 0.0
    for r, h in enumerate(hits_row, start=1):
        if h:
            seen += 1
            ap += seen / r
            dcg += 1.0 / math.log2(r + 1)
            rr = rr or 1.0 / r  # the first hit's
            rr_sum += 1.0 / r
    idcg = sum(1.0 / math.log2(r + 1) for r in range(1, min(n_rel, k) + 1))
    return {
        "ap": ap / min(n_rel, k),
        "ndcg": dcg / idcg,
        "recall": seen / n_rel,
        "precision": seen / k,
        "rr": rr,
        "rr_sum": rr_sum,
    }


def as_np(d):
    return {name: np.asarray(v) for name, v in d.items()}


def test_hand_computed():
    hits = [[True, False, True, False]]
    out = as_np(metrics.per_user_metrics(tf.constant(hits), [2]))
    assert out["ap"][0] == pytest.approx((1 / 1 + 2 / 3) / 2, rel=1e-6)
    idcg = 1 + 1 / math.log2(3)
    assert out["ndcg"][0] == pytest.approx((1 + 1 / math.log2(4)) / idcg, rel=1e-6)
    assert out["recall"][0] == pytest.approx(1.0)
    assert out["precision"][0] == pytest.approx(0.5)


def test_more_relevant_than_k():
    out = as_np(metrics.per_user_metrics(np.ones((1, 3)), [10]))
    assert out["ap"][0] == pytest.approx(1.0)  # denominator min(|T|, k) = 3
    assert out["ndcg"][0] == pytest.approx(1.0)
    assert out["recall"][0] == pytest.approx(0.3)
    assert out["precision"][0] == pytest.approx(1.0)


def test_no_relevant_gives_zero():
    hits = np.array([[1, 0], [0, 0], [0, 1]], bool)
    n_rel = np.array([1, 0, 2])
    per_user = metrics.per_user_metrics(hits, n_rel)
    assert all(np.isfinite(np.asarray(v)).all() for v in per_user.values())
    assert [float(per_user[n][1]) for n in metrics.METRIC_NAMES] == [0.0] * len(metrics.METRIC_NAMES)


def test_reciprocal_ranks_first_hit_and_the_hlr_reference_sum():
    # hits at ranks 2 and 3: MRR takes the first hit's 1/2; the reference code's MRR (rr_sum) adds 1/2 + 1/3;
    # one hit at rank 3: both 1/3; no hit: 0
    hits = np.array([[0, 1, 1], [0, 0, 1], [0, 0, 0]], bool)
    per_user = metrics.per_user_metrics(hits, np.array([2, 1, 1]))
    assert np.asarray(per_user["rr"]) == pytest.approx([1 / 2, 1 / 3, 0.0])
    assert np.asarray(per_user["rr_sum"]) == pytest.approx([1 / 2 + 1 / 3, 1 / 3, 0.0])


def test_short_list_with_larger_k():
    out = as_np(metrics.per_user_metrics(np.array([[1, 0]]), [3], k=4))
    assert out["ap"][0] == pytest.approx(1 / 3)
    assert out["precision"][0] == pytest.approx(1 / 4)
    assert out["ndcg"][0] == pytest.approx(1 / (1 + 1 / math.log2(3) + 1 / math.log2(4)), rel=1e-6)


def test_k_smaller_than_width_is_an_error():
    with pytest.raises(ValueError, match="slice"):
        metrics.per_user_metrics(np.ones((2, 5)), [1, 1], k=3)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_random_against_reference(dtype):
    rng = np.random.default_rng(0)
    n, width = 200, 12
    n_rel = rng.integers(0, 20, size=n)
    hits = rng.random((n, width)) < 0.3
    for u in range(n):  # a user cannot have more hits than test items
        idx = np.flatnonzero(hits[u])
        hits[u, idx[n_rel[u] :]] = False
    for k in (width, width + 5):
        out = as_np(metrics.per_user_metrics(hits, n_rel, k=k, dtype=dtype))
        assert out["ap"].dtype == dtype.as_numpy_dtype
        for u in range(n):
            ref = reference(hits[u], int(n_rel[u]), k)
            for name in metrics.METRIC_NAMES:
                assert out[name][u] == pytest.approx(ref[name], rel=1e-5, abs=1e-7), (name, u, k)


def test_inside_tf_function():
    f = tf.function(
        lambda h, n: metrics.per_user_metrics(h, n, k=4)["ndcg"],
        input_signature=[tf.TensorSpec([None, 4], tf.bool), tf.TensorSpec([None], tf.int32)],
    )
    got = f(tf.constant([[True, False, True, False]]), tf.constant([2])).numpy()
    assert got[0] == pytest.approx((1 + 0.5) / (1 + 1 / math.log2(3)), rel=1e-6)


def test_median_popularity():
    pop = np.array([10, 20, 30, 40, 50, 60], np.float64)
    top = np.array([[0, 5, 2], [0, 1, 2], [3, 4, 5]])  # odd k: middle value
    np.testing.assert_allclose(metrics.median_popularity(top, pop).numpy(), [30, 20, 50])
    top4 = np.array([[0, 5, 2, 3]])  # even k: mean of the two middle values, as np.median
    assert float(metrics.median_popularity(top4, pop)[0]) == pytest.approx(np.median(pop[top4[0]]))
    valid = np.array([[True, True, False, False], [False, False, False, False]])
    got = metrics.median_popularity(np.array([[0, 5, 2, 3], [0, 1, 2, 3]]), pop, valid).numpy()
    np.testing.assert_allclose(got, [(10 + 60) / 2, 0.0])


def test_median_popularity_random_with_mask():
    rng = np.random.default_rng(1)
    pop = rng.integers(0, 1000, size=50)
    top = rng.integers(0, 50, size=(100, 7))
    valid = rng.random((100, 7)) < 0.7
    got = metrics.median_popularity(top, pop, valid, dtype=tf.float64).numpy()
    for u in range(100):
        vals = pop[top[u][valid[u]]]
        assert got[u] == pytest.approx(np.median(vals) if vals.size else 0.0)
