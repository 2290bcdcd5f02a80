"""Shared pieces of the relational models: neighbourhood tables built once from the training CSR, and the
attention functions, written once for training (a batch of pairs) and ranking (a block of users x items).

Shapes: ``b`` users, ``n`` items per user (the positive, the negatives, or a block of the catalog), ``d`` the
embedding dimension, ``P`` reference items per user, ``M`` memory slots.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import tensorflow as tf


def reference_items(train: sp.csr_matrix, max_items: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's reference items: a seeded sample of up to ``max_items`` of their training items, padded.

    Built once from the training CSR (no per-user Python): every interaction gets a random key, rows are sorted by
    (user, key), and the first ``max_items`` of each row are kept. Users with fewer items are padded with item 0
    and a False mask (masking, not filtering: the table keeps its fixed shape).

    Args:
        train: [n_users, n_items] CSR of training interactions.
        max_items: P, the width of the table (the reference code's ``max_num_prefs``).
        seed: seed of the sample.

    Returns:
        ([n_users, P] int32 item ids, [n_users, P] bool mask).
    """
    train = sp.csr_matrix(train)
    train.sort_indices()
    n_users = train.shape[0]
    counts = np.diff(train.indptr)
    rows = np.repeat(np.arange(n_users), counts)
    keys = np.random.default_rng(seed).random(train.nnz)
    order = np.lexsort((keys, rows))
    rank = np.arange(train.nnz) - train.indptr[rows]  # rows[order] == rows: lexsort keeps the row blocks
    keep = rank < max_items
    items = np.zeros((n_users, max_items), np.int32)
    mask = np.zeros((n_users, max_items), bool)
    items[rows[keep], rank[keep]] = train.indices[order][keep]
    mask[rows[keep], rank[keep]] = True
    return items, mask


def mean_operator(matrix: sp.spmatrix) -> tf.sparse.SparseTensor:
    """The row-normalised interaction matrix as a SparseTensor: ``A @ X`` is the mean of each row's neighbours' X.

    Rows without a neighbour are all zero (their mean is 0).

    Args:
        matrix: [rows, cols] scipy sparse; non-zeros are neighbours.

    Returns:
        [rows, cols] float32 SparseTensor with values 1 / (row degree), in canonical order.
    """
    m = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    m.sum_duplicates()
    m.data[:] = 1.0
    degree = np.diff(m.indptr)
    m.data /= np.repeat(np.maximum(degree, 1), degree).astype(np.float32)
    coo = m.tocoo()
    indices = np.stack([coo.row, coo.col], axis=1).astype(np.int64)
    return tf.sparse.reorder(tf.sparse.SparseTensor(indices, coo.data, coo.shape))


def masked_softmax(logits: tf.Tensor, mask: tf.Tensor, axis: int = -1) -> tf.Tensor:
    """Softmax over the entries where ``mask`` is True (numerically stable); all-masked slices give zeros.

    Args:
        logits: [..., n] float.
        mask: bool, broadcastable to ``logits``.
        axis: the softmax axis.

    Returns:
        Weights of ``logits``' shape that sum to 1 over ``axis`` (0 where masked).
    """
    mask = tf.broadcast_to(mask, tf.shape(logits))
    very_negative = tf.constant(-1e30, logits.dtype)
    shifted = tf.where(mask, logits, very_negative)
    shifted -= tf.stop_gradient(tf.reduce_max(shifted, axis=axis, keepdims=True))
    weights = tf.where(mask, tf.exp(shifted), tf.zeros_like(logits))
    return tf.math.divide_no_nan(weights, tf.reduce_sum(weights, axis=axis, keepdims=True))


def reference_mask(mask: tf.Tensor, items: tf.Tensor, exclude: tf.Tensor | None) -> tf.Tensor:
    """A batch's reference mask [b, P] with the ``exclude`` [b] item (the positive being predicted) masked out."""
    if exclude is None:
        return mask
    return tf.logical_and(mask, tf.not_equal(items, tf.cast(exclude, items.dtype)[:, None]))


def lram(u: tf.Tensor, v: tf.Tensor, keys: tf.Tensor, memories: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """LRML's latent relational attentive memory: ``r = softmax((u ⊙ v) K) · Mem``.

    Args:
        u: [b, d] user vectors.
        v: [b, n, d] item vectors.
        keys: [d, M] key matrix K.
        memories: [M, d] memory slots Mem.

    Returns:
        (relations [b, n, d], attention [b, n, M] over the memory slots).
    """
    logits = tf.tensordot(u[:, None, :] * v, keys, 1)  # (u ⊙ v) K: [b, n, M]
    attention = tf.nn.softmax(logits, axis=-1)
    return tf.tensordot(attention, memories, 1), attention


def preference_attention(v: tf.Tensor, prefs: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """AttCML's attentive user part: ``Σ_j a_j p_j`` with ``a = softmax_j(⟨p_j, v⟩)`` over the valid references.

    Args:
        v: [b, n, d] target item vectors.
        prefs: [b, P] -> [b, P, d] vectors of each user's reference items.
        mask: [b, P] bool, valid references.

    Returns:
        (attentive vectors [b, n, d], weights [b, n, P]); a user without references gets 0.
    """
    weights = masked_softmax(tf.matmul(v, prefs, transpose_b=True), mask[:, None, :])
    return tf.matmul(weights, prefs), weights


def hierarchical_relation(
    u: tf.Tensor, v: tf.Tensor, refs: tf.Tensor, mask: tf.Tensor, keys: tf.Tensor, memories: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """HLR-E's relation (the reference's ``hlre``): one memory relation per reference, attended by the user.

    For every reference ``x_p`` (the user itself, then their reference items) the item-reference relation is
    ``r_p = softmax((v ⊙ x_p) K) · Mem``; the pair's relation is ``r = Σ_p a_p r_p`` with
    ``a = softmax_p(⟨r_p, u⟩)`` over the valid references.

    Computed without materialising the [b, n, P, d] relations: ``⟨r_p, u⟩ = att_p · (Mem u)`` and
    ``Σ_p a_p r_p = (Σ_p a_p att_p) · Mem``. Ranking uses `hierarchical_block_relation`, the same numbers with the
    keys from one GEMM.

    Args:
        u: [b, d] user vectors.
        v: [b, n, d] item vectors.
        refs: [b, P, d] reference vectors (the user's own vector first).
        mask: [b, P] bool, valid references.
        keys: [d, M] key matrix K.
        memories: [M, d] memory slots Mem.

    Returns:
        (relations [b, n, d], weights a [b, n, P]).
    """
    logits = tf.tensordot(v[:, :, None, :] * refs[:, None, :, :], keys, 1)  # (v ⊙ x_p) K: [b, n, P, M]
    return attend_references(u, logits, mask, memories)


def reference_keys(refs: tf.Tensor, keys: tf.Tensor) -> tf.Tensor:
    """``x_p ⊙ K`` for every reference, laid out for one GEMM against a block of items: [d, b * P * M].

    ``(v ⊙ x_p) K = v · (x_p[:, None] ⊙ K)``, so ranking c items against b users' references is the product
    [c, d] x [d, b P M], computed once per batch of users (see `hierarchical_block_relation`).
    """
    b, p = tf.shape(refs)[0], tf.shape(refs)[1]
    folded = refs[:, :, :, None] * keys[None, None]  # [b, P, d, M]
    return tf.reshape(tf.transpose(folded, [2, 0, 1, 3]), [tf.shape(keys)[0], b * p * tf.shape(keys)[1]])


def hierarchical_block_relation(
    u: tf.Tensor, v: tf.Tensor, folded: tf.Tensor, mask: tf.Tensor, memories: tf.Tensor
) -> tf.Tensor:
    """`hierarchical_relation` of b users x a block of c items (ranking), from `reference_keys`.

    Args:
        u: [b, d]; v: [c, d] items shared by every user; folded: [d, b * P * M]; mask: [b, P]; memories: [M, d].

    Returns:
        [b, c, d] relations.
    """
    b, p, m = tf.shape(mask)[0], tf.shape(mask)[1], tf.shape(memories)[0]
    logits = tf.reshape(tf.matmul(v, folded), [tf.shape(v)[0], b, p, m])  # [c, b, P, M]
    return attend_references(u, tf.transpose(logits, [1, 0, 2, 3]), mask, memories)[0]


def attend_references(u, logits, mask, memories) -> tuple[tf.Tensor, tf.Tensor]:
    """HLR's two attentions from the slot logits ``(v ⊙ x_p) K`` [b, n, P, M]: over the memory slots, then the
    user's over the references. Returns (relations [b, n, d], reference weights [b, n, P])."""
    slot_attention = tf.nn.softmax(logits, axis=-1)  # [b, n, P, M]
    user_memory = tf.matmul(u, memories, transpose_b=True)  # ⟨Mem_m, u⟩: [b, M]
    reference_logits = tf.reduce_sum(slot_attention * user_memory[:, None, None, :], axis=-1)  # ⟨r_p, u⟩
    weights = masked_softmax(reference_logits, mask[:, None, :])
    mixed = tf.reduce_sum(weights[..., None] * slot_attention, axis=2)  # Σ_p a_p att_p: [b, n, M]
    return tf.tensordot(mixed, memories, 1), weights
