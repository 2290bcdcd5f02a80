"""Loss terms of CML as pure functions of distances and embeddings.

Every function takes tensors and returns a tensor; none touches model state, so each can be tested alone.
"""

from __future__ import annotations

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
    d = tf.cast(tf.shape(positives)[-1], positives.dtype)
    dots = tf.reduce_sum(positives[:, None, :] * negatives, axis=-1)  # [batch, n]
    m1 = tf.reduce_mean(dots)
    m2 = tf.reduce_mean(tf.square(dots))
    return tf.square(m1) + tf.nn.relu(m2 - 1.0 / d)


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
