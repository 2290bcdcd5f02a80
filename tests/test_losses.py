"""Loss terms checked on hand-computed tensors and against plain numpy written from the definitions."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from cml_tf.models import losses as L


def _c(x):
    return tf.constant(np.asarray(x, np.float32))


# ----------------------------------------------------------------------------------------- squared distances
def test_squared_distances_hand():
    u = _c([[0.0, 0.0], [1.0, 2.0]])
    v = _c([[3.0, 4.0], [1.0, 0.0]])
    np.testing.assert_allclose(L.squared_distances(u, v).numpy(), [25.0, 4.0])


def test_squared_distances_rank3_against_loop():
    rng = np.random.default_rng(0)
    u = rng.normal(size=(4, 5)).astype(np.float32)
    v = rng.normal(size=(4, 3, 5)).astype(np.float32)
    ref = np.array([[sum((u[b, k] - v[b, n, k]) ** 2 for k in range(5)) for n in range(3)] for b in range(4)])
    out = L.squared_distances(_c(u), _c(v)).numpy()
    assert out.shape == (4, 3)
    np.testing.assert_allclose(out, ref, rtol=1e-5)


# ----------------------------------------------------------------------------------------- triplet hinge
def test_triplet_hinge_hand():
    pos = _c([1.0, 5.0, 0.5])
    neg = _c([[4.0, 2.5], [9.0, 7.0], [0.1, 3.0]])
    out = L.triplet_hinge(pos, neg, margin=2.0).numpy()
    # row 0: 1 - 2.5 + 2 = 0.5 ; row 1: 5 - 7 + 2 = 0 ; row 2: 0.5 - 0.1 + 2 = 2.4
    np.testing.assert_allclose(out, [0.5, 0.0, 2.4], rtol=1e-6)
    # min, not mean or max, over the negatives
    assert L.triplet_hinge(_c([0.0]), _c([[1.0, 10.0]]), 1.5).numpy()[0] == pytest.approx(0.5)


def test_triplet_hinge_mean_is_one_hinge_per_negative_averaged():
    pos = _c([1.0, 5.0, 0.5])
    neg = _c([[4.0, 2.5], [9.0, 7.0], [0.1, 3.0]])
    out = L.triplet_hinge(pos, neg, margin=2.0, over="mean").numpy()
    # row 0: ([1-4+2]+ + [1-2.5+2]+)/2 = (0 + 0.5)/2 ; row 1: 0 ; row 2: ([0.5-0.1+2]+ + [0.5-3+2]+)/2 = 2.4/2
    np.testing.assert_allclose(out, [0.25, 0.0, 1.2], rtol=1e-6)
    one = _c([[3.0], [0.0], [9.0]])  # a single negative: both reductions agree
    np.testing.assert_allclose(L.triplet_hinge(pos, one, 2.0, "mean"), L.triplet_hinge(pos, one, 2.0), rtol=1e-6)
    with pytest.raises(ValueError, match="--hinge"):
        L.triplet_hinge(pos, neg, 2.0, "max")


def test_triplet_hinge_random_against_numpy():
    rng = np.random.default_rng(1)
    pos = rng.uniform(0, 4, size=7).astype(np.float32)
    neg = rng.uniform(0, 4, size=(7, 5)).astype(np.float32)
    ref = np.maximum(pos - neg.min(axis=1) + 0.7, 0.0)
    np.testing.assert_allclose(L.triplet_hinge(_c(pos), _c(neg), 0.7).numpy(), ref, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------- WARP weight
def test_warp_rank_weight_hand():
    pos = _c([1.0, 1.0, 10.0])
    neg = _c([[0.5, 3.0, 1.5, 5.0], [10.0, 10.0, 10.0, 10.0], [0.0, 0.0, 0.0, 0.0]])
    # margin 1: impostors where pos - neg + 1 > 0 -> row0: 1.5>0, -1 no, 0.5>0, -3 no -> 2/4 ; row1: 0/4 ; row2: 4/4
    out = L.warp_rank_weight(pos, neg, 1.0, n_items=100).numpy()
    np.testing.assert_allclose(out, np.log([100 * 0.5 + 1, 0 + 1, 100 + 1]), rtol=1e-6)


def test_warp_rank_weight_random_and_no_gradient():
    rng = np.random.default_rng(2)
    pos = rng.uniform(0, 4, size=6).astype(np.float32)
    neg = rng.uniform(0, 4, size=(6, 9)).astype(np.float32)
    frac = np.array([np.mean([pos[b] - neg[b, k] + 0.3 > 0 for k in range(9)]) for b in range(6)])
    ref = np.log(37 * frac + 1)
    p, n = _c(pos), _c(neg)
    with tf.GradientTape() as tape:
        tape.watch([p, n])
        w = L.warp_rank_weight(p, n, 0.3, 37)
        total = tf.reduce_sum(w)
    np.testing.assert_allclose(w.numpy(), ref, rtol=1e-5)
    assert all(g is None for g in tape.gradient(total, [p, n]))


# ----------------------------------------------------------------------------------------- GOR (paper Eq. 3)
def _gor_reference(p, n):
    """Zhang et al. 2017 Eq. 3 over Q = B*N pairs: m1 = mean dot, m2 = mean dot^2, m1^2 + max(0, m2 - 1/d)."""
    b, k, d = n.shape
    dots = [float(np.dot(p[i], n[i, j])) for i in range(b) for j in range(k)]
    q = len(dots)
    m1 = sum(dots) / q
    m2 = sum(x * x for x in dots) / q
    return m1**2 + max(0.0, m2 - 1.0 / d)


def test_gor_hinge_inactive_hand():
    # d = 2, B = 2, N = 1: dots 0.1 and -0.3 -> m1 = -0.1, m2 = (0.01 + 0.09)/2 = 0.05 < 1/2 -> L = 0.01
    p = _c([[1.0, 0.0], [0.0, 1.0]])
    n = _c([[[0.1, 0.9]], [[0.5, -0.3]]])
    out = float(L.global_orthogonal_regularization(p, n))
    assert out == pytest.approx(0.01, rel=1e-5)
    assert out == pytest.approx(_gor_reference(p.numpy(), n.numpy()), rel=1e-5)


def test_gor_hinge_active_hand():
    # d = 2, B = 1, N = 2: dots 0.9 and 0.7 -> m1 = 0.8, m2 = (0.81 + 0.49)/2 = 0.65 > 0.5
    # L = 0.64 + 0.15 = 0.79
    p = _c([[1.0, 0.0]])
    n = _c([[[0.9, 0.1], [0.7, -0.5]]])
    out = float(L.global_orthogonal_regularization(p, n))
    assert out == pytest.approx(0.79, rel=1e-5)
    assert out == pytest.approx(_gor_reference(p.numpy(), n.numpy()), rel=1e-5)


def test_gor_is_mean_not_sum_random():
    rng = np.random.default_rng(3)
    p = rng.normal(size=(5, 4)).astype(np.float32)
    n = rng.normal(size=(5, 3, 4)).astype(np.float32)
    p /= np.linalg.norm(p, axis=-1, keepdims=True)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    out = float(L.global_orthogonal_regularization(_c(p), _c(n)))
    assert out == pytest.approx(_gor_reference(p, n), rel=1e-4, abs=1e-7)
    # duplicating the batch leaves means unchanged (a sum would double)
    out2 = float(L.global_orthogonal_regularization(_c(np.concatenate([p, p])), _c(np.concatenate([n, n]))))
    assert out2 == pytest.approx(out, rel=1e-5)


# ----------------------------------------------------------------------------------------- covariance loss
def test_covariance_loss_against_numpy():
    rng = np.random.default_rng(4)
    y = rng.normal(size=(12, 4)).astype(np.float64)
    y[:, 1] += 0.8 * y[:, 0]  # correlated dims -> non-trivial off-diagonals
    n = y.shape[0]
    c = np.cov(y, rowvar=False, bias=True)  # (1/N) sum (y - mu)(y - mu)^T
    off = sum(c[i, j] ** 2 for i in range(4) for j in range(4) if i != j)
    out = float(L.covariance_loss(tf.constant(y.astype(np.float32))))
    assert out == pytest.approx(off / n, rel=1e-4)


def test_covariance_loss_hand_and_zero_for_diagonal_covariance():
    # rows (1,1), (-1,-1): mu = 0, C = [[1,1],[1,1]], off-diagonal sum of squares 2, / N=2 -> 1
    assert float(L.covariance_loss(_c([[1.0, 1.0], [-1.0, -1.0]]))) == pytest.approx(1.0)
    # uncorrelated +-1 pattern: C = I -> 0, and never negative
    y = _c([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    assert float(L.covariance_loss(y)) == pytest.approx(0.0, abs=1e-7)
    # anti-correlated: still positive (squared), not negative like a raw off-diagonal sum
    assert float(L.covariance_loss(_c([[1.0, -1.0], [-1.0, 1.0]]))) == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------- feature loss
def test_feature_loss_hand():
    v = _c([[1.0, 2.0], [0.0, 0.0]])
    f = _c([[0.0, 2.0], [3.0, 4.0]])
    assert float(L.feature_loss(v, f)) == pytest.approx(1.0 + 25.0)


# ----------------------------------------------------------------------------------------- sampled softmax
def test_squared_distance_matrix_against_pairs():
    rng = np.random.default_rng(3)
    u, v = rng.normal(size=(5, 7)), rng.normal(size=(9, 7))
    ref = ((u[:, None, :] - v[None]) ** 2).sum(-1)
    np.testing.assert_allclose(L.squared_distance_matrix(_c(u), _c(v)).numpy(), ref, rtol=1e-5, atol=1e-5)


def test_sampled_softmax_hand():
    # one row: D²(u, pos) = 1, negatives 2 and 4, τ = 0.5, log q = 0 everywhere: z = [-2, -4, -8]
    loss = L.sampled_softmax(_c([1.0]), _c([[2.0, 4.0]]), 0.5).numpy()[0]
    assert loss == pytest.approx(np.log(np.exp(-2) + np.exp(-4) + np.exp(-8)) + 2, abs=1e-6)
    # the log q correction: z = -D²/τ - log q; a negative drawn twice as often counts half
    lq_pos, lq_neg = _c([np.log(0.5)]), _c([[np.log(2.0), np.log(0.25)]])
    got = L.sampled_softmax(_c([1.0]), _c([[2.0, 4.0]]), 0.5, lq_pos, lq_neg).numpy()[0]
    z = np.array([-2 - np.log(0.5), -4 - np.log(2.0), -8 - np.log(0.25)])
    assert got == pytest.approx(np.log(np.exp(z).sum()) - z[0], abs=1e-6)
    # an excluded negative (a positive of the user) is not counted: only the positive and the 8 remain
    excl = L.sampled_softmax(_c([1.0]), _c([[2.0, 4.0]]), 0.5, neg_excluded=tf.constant([[True, False]])).numpy()[0]
    assert excl == pytest.approx(np.log(np.exp(-2) + np.exp(-8)) + 2, abs=1e-6)
    # [M] log q broadcasts over the rows
    both = L.sampled_softmax(_c([1.0, 1.0]), _c([[2.0, 4.0], [2.0, 4.0]]), 0.5, _c([0.0, 0.0]), _c([0.0, 1.0]))
    np.testing.assert_allclose(both.numpy(), both.numpy()[0], rtol=1e-6)


def test_sampled_softmax_gradient_against_the_definition():
    rng = np.random.default_rng(5)
    dpos = rng.uniform(0, 3, size=4)
    dneg = rng.uniform(0, 3, size=(4, 6))
    lq = rng.normal(size=6)
    excluded = rng.random((4, 6)) < 0.3
    tau = 0.3
    x = tf.Variable(np.concatenate([dpos[:, None], dneg], 1).astype(np.float64))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(
            L.sampled_softmax(x[:, 0], x[:, 1:], tau, tf.zeros(4, tf.float64), tf.constant(lq), excluded)
        )
    grad = tape.gradient(loss, x).numpy()
    # reference: z_j = -d_j / τ - log q_j, loss = logsumexp(z) - z_0, dL/dd_j = -(softmax_j - 1[j = 0]) / τ
    z = np.concatenate([-dpos[:, None] / tau, -dneg / tau - lq[None]], 1)
    z[:, 1:][excluded] = -np.inf
    soft = np.exp(z - z.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    onehot = np.zeros_like(soft)
    onehot[:, 0] = 1
    np.testing.assert_allclose(grad, -(soft - onehot) / tau, rtol=1e-9, atol=1e-12)
    ref_loss = (np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1) - z[:, 0]).sum()
    assert loss.numpy() == pytest.approx(ref_loss, rel=1e-9)
