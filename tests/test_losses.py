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


# ----------------------------------------------------------------------------------------- every loss by hand, 2 x 3
# Two rows, three negatives each; every expected number is derived in the comment above it.
POS = [1.0, 3.0]
NEG = [[2.0, 0.5, 4.0], [1.0, 6.0, 3.5]]


def test_triplet_hinge_min_and_mean_2x3_by_hand():
    # α = 1. min: row 0 hardest negative 0.5 -> 1 - 0.5 + 1 = 1.5; row 1 hardest 1.0 -> 3 - 1 + 1 = 3
    np.testing.assert_allclose(L.triplet_hinge(_c(POS), _c(NEG), 1.0, "min").numpy(), [1.5, 3.0], rtol=1e-6)
    # mean: row 0 ([1-2+1]+ + [1-0.5+1]+ + [1-4+1]+)/3 = (0 + 1.5 + 0)/3 = 0.5
    #       row 1 ([3-1+1]+ + [3-6+1]+ + [3-3.5+1]+)/3 = (3 + 0 + 0.5)/3 = 7/6
    np.testing.assert_allclose(L.triplet_hinge(_c(POS), _c(NEG), 1.0, "mean").numpy(), [0.5, 7 / 6], rtol=1e-6)


def test_warp_rank_weight_2x3_by_hand():
    # α = 1, 6 items. impostors (pos - neg + 1 > 0): row 0: 0 > 0 no, 1.5 yes, -2 no -> 1/3 -> rank 2 -> log 3
    #                                                row 1: 3 yes, -2 no, 0.5 yes -> 2/3 -> rank 4 -> log 5
    np.testing.assert_allclose(L.warp_rank_weight(_c(POS), _c(NEG), 1.0, 6).numpy(), np.log([3.0, 5.0]), rtol=1e-6)


def test_squared_distance_matrix_2x3_by_hand():
    # users (0, 0), (1, 1); items (1, 0), (0, 2), (1, 1): row 0 = 1, 4, 2; row 1 = 0 + 1, 1 + 1, 0
    out = L.squared_distance_matrix(_c([[0.0, 0.0], [1.0, 1.0]]), _c([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]))
    np.testing.assert_allclose(out.numpy(), [[1.0, 4.0, 2.0], [1.0, 2.0, 0.0]], atol=1e-6)


def test_gor_covariance_and_feature_loss_2x3_by_hand():
    # GOR, d = 2: dots row 0 = 0.5, 1, 0; row 1 = -1, 0.5, 0 -> m1 = 1/6, m2 = (0.25 + 1 + 1 + 0.25)/6 = 5/12 < 1/2
    # -> L = (1/6)^2 = 1/36
    p = _c([[1.0, 0.0], [0.0, 1.0]])
    n = _c([[[0.5, 0.0], [1.0, 0.0], [0.0, 1.0]], [[0.0, -1.0], [0.5, 0.5], [1.0, 0.0]]])
    assert float(L.global_orthogonal_regularization(p, n)) == pytest.approx(1 / 36, rel=1e-5)
    # covariance: rows (1, 2, 0), (-1, 0, 2): mean (0, 1, 1), centred ±(1, 1, -1) -> C = x xᵀ, entries ±1;
    # ‖C‖_F² = 9, diagonal 3 -> off-diagonal 6, / N = 2 -> 3
    assert float(L.covariance_loss(_c([[1.0, 2.0, 0.0], [-1.0, 0.0, 2.0]]))) == pytest.approx(3.0, rel=1e-6)
    # feature loss: (1-1)² + (2-0)² + (3-3)² + 1 + 1 + 1 = 7
    assert float(L.feature_loss(_c([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]), _c([[1.0, 0.0, 3.0], [1.0, 1.0, 1.0]]))) == 7.0


# sampled softmax, τ = 0.5: positives D² = 1, 0.5 -> z_pos = -2, -1; negatives D² below -> z_neg = -2 D²
SM_POS = [1.0, 0.5]
SM_NEG = [[2.0, 4.0, 1.0], [0.5, 1.5, 3.0]]  # z_neg row 0: -4, -8, -2; row 1: -1, -3, -6


def test_sampled_softmax_2x3_by_hand():
    # loss = log Σ e^z - z_pos. row 0: log(e^-2 + e^-4 + e^-8 + e^-2) + 2 = log(2 + e^-2 + e^-6) = 0.759784
    #                            row 1: log(e^-1 + e^-1 + e^-3 + e^-6) + 1 = log(2 + e^-2 + e^-5) = 0.761774
    out = L.sampled_softmax(_c(SM_POS), _c(SM_NEG), 0.5).numpy()
    np.testing.assert_allclose(out, [0.759784, 0.761774], atol=1e-6)


def test_sampled_softmax_log_q_2x3_by_hand():
    # z = -D²/τ - log q. log q of the positives: log 2, 0; of the negatives, [M] shared by the rows: 0, log ½, log 4
    # row 0: e^z = e^-2/2 | e^-4, 2 e^-8, e^-2/4; loss = log(¾ e^-2 + e^-4 + 2 e^-8) + 2 + log 2
    #        = log(1.5 + 2 e^-2 + 4 e^-6) = 0.576942
    # row 1: e^z = e^-1 | e^-1, 2 e^-3, e^-6/4; loss = log(2 e^-1 + 2 e^-3 + e^-6/4) + 1 = log(2 + 2 e^-2 + e^-5/4)
    #        = 0.820817
    pos_lq, neg_lq = _c([np.log(2.0), 0.0]), _c([0.0, np.log(0.5), np.log(4.0)])
    out = L.sampled_softmax(_c(SM_POS), _c(SM_NEG), 0.5, pos_lq, neg_lq).numpy()
    np.testing.assert_allclose(out, [0.576942, 0.820817], atol=1e-6)
    # [batch, M] log q, a row each: row 1's negatives get log 2, 0, 0 -> e^z = e^-1 | e^-1/2, e^-3, e^-6
    #        loss = log(e^-1 + e^-1/2 + e^-3 + e^-6) + 1 = log(1.5 + e^-2 + e^-5) = 0.495960 (row 0 as above)
    rows = _c([[0.0, np.log(0.5), np.log(4.0)], [np.log(2.0), 0.0, 0.0]])
    out = L.sampled_softmax(_c(SM_POS), _c(SM_NEG), 0.5, pos_lq, rows).numpy()
    np.testing.assert_allclose(out, [0.576942, 0.495960], atol=1e-6)


def test_sampled_softmax_masks_2x3_by_hand():
    # row 0 drops its third negative (z = -2), row 1 its first (z = -1):
    # row 0: log(e^-2 + e^-4 + e^-8) + 2 = log(1 + e^-2 + e^-6) = 0.129109
    # row 1: log(e^-1 + e^-3 + e^-6) + 1 = log(1 + e^-2 + e^-5) = 0.132845
    excluded = tf.constant([[False, False, True], [True, False, False]])
    out = L.sampled_softmax(_c(SM_POS), _c(SM_NEG), 0.5, neg_excluded=excluded).numpy()
    np.testing.assert_allclose(out, [0.129109, 0.132845], atol=1e-6)
    # every negative masked: only the positive is left, loss log e^z_pos - z_pos = 0
    out = L.sampled_softmax(_c(SM_POS), _c(SM_NEG), 0.5, neg_excluded=tf.ones([2, 3], tf.bool)).numpy()
    np.testing.assert_allclose(out, [0.0, 0.0], atol=1e-7)


# ----------------------------------------------------------------------------------------- the learned temperature
# τ = exp(s). With z_j = -d_j/τ - log q_j and p = softmax(z): dL/dτ = Σ_j p_j d_j/τ² - d_0/τ², so
# dL/ds = τ dL/dτ = (E_p[d] - d_0)/τ: positive when the positive is closer than the softmax-weighted pool (the
# optimiser then lowers τ, sharpening the softmax), negative when it is farther.
def _softmax_loss_np(d, tau, log_q=None):
    """Σ over rows of log Σ_j e^{z_j} - z_0, z_j = -d_j/τ - log q_j, straight from the definition (float64)."""
    d = np.asarray(d, np.float64)
    z = -d / tau - (0.0 if log_q is None else np.asarray(log_q, np.float64))
    return float(np.sum(np.log(np.exp(z).sum(axis=1)) - z[:, 0]))


def _grad_log_tau(s, d_pos, d_neg, log_q_pos=None, log_q_neg=None):
    v = tf.Variable(s, dtype=tf.float64)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(L.sampled_softmax(d_pos, d_neg, tf.exp(v), log_q_pos, log_q_neg))
    return float(tape.gradient(loss, v))


def test_sampled_softmax_gradient_wrt_log_temperature_by_hand_and_central_difference():
    d = np.array([[SM_POS[0], *SM_NEG[0]], [SM_POS[1], *SM_NEG[1]]])  # column 0 the positive
    d_pos, d_neg = tf.constant(d[:, 0]), tf.constant(d[:, 1:])
    s = np.log(0.5)
    # by hand at τ = 0.5: row 0 p ∝ e^-2, e^-4, e^-8, e^-2, d - d_0 = 0, 1, 3, 0
    #   -> dL/ds = (e^-4 + 3 e^-8) / (2 e^-2 + e^-4 + e^-8) / 0.5 = 2 (e^-2 + 3 e^-6) / (2 + e^-2 + e^-6) = 0.133568
    # row 1 p ∝ e^-1, e^-1, e^-3, e^-6, d - d_0 = 0, 0, 1, 2.5
    #   -> dL/ds = 2 (e^-2 + 2.5 e^-5) / (2 + e^-2 + e^-5) = 0.142087; both positive: the positives are the closer
    grad = _grad_log_tau(s, d_pos, d_neg)
    assert grad == pytest.approx(0.133568 + 0.142087, abs=2e-6)
    h = 1e-5  # central difference of the definition in float64: error O(h²)
    fd = (_softmax_loss_np(d, np.exp(s + h)) - _softmax_loss_np(d, np.exp(s - h))) / (2 * h)
    assert grad == pytest.approx(fd, rel=1e-7)
    # a positive farther than its negatives: the gradient turns negative (the optimiser raises τ)
    far = np.array([[3.0, 1.0, 2.0, 0.5], [4.0, 1.0, 1.0, 2.0]])
    grad_far = _grad_log_tau(s, tf.constant(far[:, 0]), tf.constant(far[:, 1:]))
    fd_far = (_softmax_loss_np(far, np.exp(s + h)) - _softmax_loss_np(far, np.exp(s - h))) / (2 * h)
    assert grad_far < 0 and grad_far == pytest.approx(fd_far, rel=1e-7)
    # with log q the corrections shift the weights p but not the d_j/τ terms: still (E_p[d] - d_0)/τ
    lq = np.array([[np.log(2.0), 0.0, np.log(0.5), np.log(4.0)], [0.0, 0.0, np.log(0.5), np.log(4.0)]])
    grad_q = _grad_log_tau(s, d_pos, d_neg, tf.constant(lq[:, 0]), tf.constant(lq[:, 1:]))
    fd_q = (_softmax_loss_np(d, np.exp(s + h), lq) - _softmax_loss_np(d, np.exp(s - h), lq)) / (2 * h)
    assert grad_q == pytest.approx(fd_q, rel=1e-7)


def test_model_learned_temperature_gets_the_gradient_of_its_softmax_loss():
    """The model's log τ (models/base.py, models/step.py) against the definition on the model's own distances."""
    from cml_tf.models import CML

    model = CML(4, 6, embedding_dim=3, loss="softmax", temperature=0.3, learn_temperature=True, seed=2)
    data = {
        "users": tf.constant([0, 1], tf.int32),
        "positives": tf.constant([2, 3], tf.int32),
        "candidates": tf.constant([4, 5, 0], tf.int32),
        "candidate_is_positive": tf.zeros([2, 3], tf.bool),
        "candidate_log_q": tf.constant([0.0, np.log(0.5), np.log(2.0)], tf.float32),
        "positive_log_q": tf.constant([np.log(2.0), 0.0], tf.float32),
    }
    with tf.GradientTape() as tape:
        total = model.compute_softmax_losses(data)["total"]
    grad = float(tape.gradient(total, model.log_temperature))
    u = model.user_vectors(data["users"]).numpy().astype(np.float64)
    items = np.array([[2, 4, 5, 0], [3, 4, 5, 0]])  # the positive, then the shared candidates
    v = model.item_vectors(tf.constant(items)).numpy().astype(np.float64)  # [2, 4, d]
    d = ((u[:, None, :] - v) ** 2).sum(-1)
    lq = np.array([[np.log(2.0), 0.0, np.log(0.5), np.log(2.0)], [0.0, 0.0, np.log(0.5), np.log(2.0)]])
    s = float(model.log_temperature.numpy())
    assert s == pytest.approx(np.log(0.3), rel=1e-6)
    h = 1e-4
    fd = (_softmax_loss_np(d, np.exp(s + h), lq) - _softmax_loss_np(d, np.exp(s - h), lq)) / (2 * h)
    z = -d / np.exp(s) - lq
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    exact = float(np.sum(((p * d).sum(1) - d[:, 0]) / np.exp(s)))  # Σ_rows (E_p[d] - d_0)/τ
    assert fd == pytest.approx(exact, rel=1e-6)
    assert grad == pytest.approx(exact, rel=1e-3, abs=1e-5)  # float32 model
    assert total.numpy() == pytest.approx(_softmax_loss_np(d, np.exp(s), lq), rel=1e-5)
