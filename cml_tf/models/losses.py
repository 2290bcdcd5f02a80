"""Loss terms of CML as pure functions of distances and embeddings.

Every function takes tensors and returns a tensor; none touches model state, so each can be tested alone.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def squared_distances(users: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
    """Squared Euclidean distances between users and items.

    Args:
        users: [batch, d] float user vectors.
        items: [batch, d] or [batch, n, d] float item vectors.

    Returns:
        [batch] or [batch, n] float ``||u - v||²``.
    """
    if items.shape.rank == 3:
        users = users[:, None, :]
    return tf.reduce_sum(tf.math.squared_difference(users, items), axis=-1)


HINGES = ("min", "mean")
LOSSES = ("hinge", "softmax")


def triplet_hinge(pos_distances: tf.Tensor, neg_distances: tf.Tensor, margin: float, over: str = "min") -> tf.Tensor:
    """Per-pair triplet hinge over the pair's n negatives.

    ``over="min"`` (the paper, CollMetric): ``[D²(u, v_pos) − min_k D²(u, v_k) + α]_+``, the hardest negative only;
    ``"mean"``: one hinge per negative, averaged, ``(1/n) Σ_k [D²(u, v_pos) − D²(u, v_k) + α]_+``. The two agree for
    n = 1.

    Args:
        pos_distances: [batch] squared distances user -> positive item.
        neg_distances: [batch, n] squared distances user -> each of the n negatives.
        margin: α.
        over: "min" or "mean".

    Returns:
        [batch] per-pair hinge (the paper and CollMetric sum these over the batch).
    """
    if over == "mean":
        return tf.reduce_mean(tf.nn.relu(pos_distances[:, None] - neg_distances + margin), axis=-1)
    if over != "min":
        raise ValueError(f"--hinge: unknown {over!r}; expected one of {', '.join(HINGES)}")
    closest = tf.reduce_min(neg_distances, axis=-1)
    return tf.nn.relu(pos_distances - closest + margin)


def squared_distance_matrix(users: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
    """``||u - v||²`` of every user x item pair by one matmul: ``|u|² + |v|² − 2 u·v`` (no [B, M, d] tensor).

    Args:
        users: [batch, d] float; items: [M, d] float.

    Returns:
        [batch, M] float, clipped at 0 (rounding).
    """
    u2 = tf.reduce_sum(tf.square(users), axis=-1, keepdims=True)
    v2 = tf.reduce_sum(tf.square(items), axis=-1)[None, :]
    return tf.nn.relu(u2 + v2 - 2.0 * tf.matmul(users, items, transpose_b=True))


def sampled_softmax(
    pos_distances: tf.Tensor,
    neg_distances: tf.Tensor,
    temperature,
    pos_log_q: tf.Tensor | None = None,
    neg_log_q: tf.Tensor | None = None,
    neg_excluded: tf.Tensor | None = None,
) -> tf.Tensor:
    """Per-pair sampled softmax loss over logits ``−D²/τ − log q`` (Jean et al. 2015; Yi et al. 2019's correction).

    ``loss = −log softmax([z_pos, z_1, …, z_M])_pos`` with ``z = −D²(u, v)/τ − log q(v)``, q(v) the expected number
    of times v enters the pool of sampled negatives (subtracting it makes the sample's softmax estimate the full
    one). Negatives that are positives of the user (``neg_excluded``) are left out: never counted as negatives.

    Args:
        pos_distances: [batch] squared distances user -> positive.
        neg_distances: [batch, M] squared distances user -> each sampled negative.
        temperature: τ > 0 (a float or a scalar tensor).
        pos_log_q: [batch] log q of the positives, or None (no correction).
        neg_log_q: [batch, M] or [M] log q of the negatives, or None.
        neg_excluded: [batch, M] bool, True where the negative must not count, or None.

    Returns:
        [batch] per-pair loss ``logsumexp(z) − z_pos`` (>= 0).
    """
    z_pos = -pos_distances / temperature
    z_neg = -neg_distances / temperature
    if pos_log_q is not None:
        z_pos = z_pos - pos_log_q
    if neg_log_q is not None:
        z_neg = z_neg - (neg_log_q if neg_log_q.shape.rank == 2 else neg_log_q[None, :])
    if neg_excluded is not None:
        z_neg = tf.where(neg_excluded, tf.constant(-np.inf, z_neg.dtype), z_neg)
    logits = tf.concat([z_pos[:, None], z_neg], axis=1)
    return tf.reduce_logsumexp(logits, axis=1) - z_pos


def warp_rank_weight(pos_distances: tf.Tensor, neg_distances: tf.Tensor, margin: float, n_items) -> tf.Tensor:
    """CollMetric's WARP weight ``log(rank + 1)``, rank estimated from impostors among the sampled negatives.

    rank ≈ n_items · (fraction of negatives k with D²(u, v_pos) − D²(u, v_k) + α > 0), as in CollMetric's CML.py.

    Args:
        pos_distances: [batch]; neg_distances: [batch, n]; margin: α; n_items: catalog size.

    Returns:
        [batch] weights (gradient-free: the rank estimate is a count).
    """
    impostors = tf.cast(pos_distances[:, None] - neg_distances + margin > 0, pos_distances.dtype)
    rank = tf.reduce_mean(impostors, axis=-1) * tf.cast(n_items, pos_distances.dtype)
    return tf.stop_gradient(tf.math.log(rank + 1.0))


def global_orthogonal_regularization(positives: tf.Tensor, negatives: tf.Tensor) -> tf.Tensor:
    """Global Orthogonal Regularisation, paper Eq. 3 (Zhang et al. 2017), over positive–negative item pairs.

    With Q = batch·n pairs (v_p, v_n): ``m1 = (1/Q) Σ v_pᵀv_n``, ``m2 = (1/Q) Σ (v_pᵀv_n)²`` and
    ``L_gor = m1² + [m2 − 1/d]_+``. Means, not sums (the original code summed, which scales with the batch).

    Args:
        positives: [batch, d] positive item vectors (unit norm on the sphere).
        negatives: [batch, n, d] their negatives.

    Returns:
        scalar.
    """
    dots = tf.reduce_sum(positives[:, None, :] * negatives, axis=-1)  # [batch, n]
    return orthogonality_of_dots(dots, positives.shape[-1])


def orthogonality_of_dots(dots: tf.Tensor, dim: int) -> tf.Tensor:
    """GOR's ``m1² + [m2 − 1/d]_+`` from the dot products ``dots`` [...] of positive–negative pairs in d = ``dim``."""
    m1 = tf.reduce_mean(dots)
    m2 = tf.reduce_mean(tf.square(dots))
    return tf.square(m1) + tf.nn.relu(m2 - 1.0 / tf.cast(dim, dots.dtype))


def covariance_loss(embeddings: tf.Tensor) -> tf.Tensor:
    """Covariance regulariser of CML (Hsieh et al. 2017, Eq. 7): de-correlates the embedding dimensions.

    ``C = (1/N) Σ (y − μ)(y − μ)ᵀ`` over all N user and item rows; loss ``(‖C‖_F² − ‖diag C‖²) / N``.
    CollMetric's code summed the raw off-diagonal entries instead (which can go negative without bound); this
    follows the paper's definition.

    Args:
        embeddings: [N, d] all user and item rows stacked.

    Returns:
        scalar.
    """
    n = tf.cast(tf.shape(embeddings)[0], embeddings.dtype)
    centred = embeddings - tf.reduce_mean(embeddings, axis=0, keepdims=True)
    cov = tf.matmul(centred, centred, transpose_a=True) / n
    off_diagonal = tf.reduce_sum(tf.square(cov)) - tf.reduce_sum(tf.square(tf.linalg.diag_part(cov)))
    return off_diagonal / n


def feature_loss(item_vectors: tf.Tensor, projections: tf.Tensor) -> tf.Tensor:
    """CML+F feature loss: squared distance between item embeddings and their feature projections, summed.

    Args:
        item_vectors: [batch, d]; projections: [batch, d] f(x_j) of the same items.

    Returns:
        scalar ``Σ ‖f(x_j) − v_j‖²``.
    """
    return tf.reduce_sum(tf.math.squared_difference(item_vectors, projections))
