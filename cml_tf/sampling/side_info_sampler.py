"""The side_info sampler (the seed's ISMIR 2018 paper): negatives that share a group (a genre, a tag) with the
positive, never a positive of the user; its exact draw probabilities for the softmax's log q."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from cml_tf.sampling.negatives import NegativeSampler


class SideInfoSampler:
    """Negatives that share side information (a genre, a tag) with the positive, never a positive of the user.

    Per (user u, positive j) and draw: a group g uniformly among j's groups G(j); then up to ``tries`` items
    uniformly from g's members (with replacement), the first that is not a positive of u is the negative; when all
    are positives of u, or j has no group, the exact uniform draw over u's non-positives (`NegativeSampler`). With
    q_g = |g ∩ P_u| / |g| the fraction of g's members that u holds and T = ``tries``, the distribution is

        P(i | u, j) = Σ_{g ∈ G(j)} (1 / |G(j)|) · [(1 − q_g^T) · 1[i ∈ g, i ∉ P_u] / |g − P_u|
                                                   + q_g^T · 1[i ∉ P_u] / (n − |P_u|)]

    (uniform over the non-positives when G(j) is empty). Every step is a gather or a ``searchsorted`` over
    [batch, num, tries] tensors: group lookups in the item → group CSR and the group → item CSC, membership by
    `PositiveIndex` (sorted keys + searchsorted).

    Args:
        train: [n_users, n_items] CSR of training positives.
        item_groups: [n_items, G] sparse 0/1 item groups (`cml_tf.data.side_info.SideInfo.item_groups`).
        tries: T, draws from the group before the uniform fallback.
    """

    def __init__(self, train: sp.csr_matrix, item_groups: sp.spmatrix, tries: int = 8):
        train = sp.csr_matrix(train)
        groups = sp.csr_matrix(item_groups, dtype=np.float32)
        groups.eliminate_zeros()
        groups.sort_indices()
        if groups.shape[0] != train.shape[1]:
            raise ValueError(f"item groups have {groups.shape[0]} rows for a catalog of {train.shape[1]} items")
        if tries < 1:
            raise ValueError(f"tries must be >= 1, got {tries}")
        self.tries = int(tries)
        self.uniform = NegativeSampler(train)
        self.index = self.uniform.index
        members = groups.tocsc()
        members.sort_indices()
        pad = np.zeros(1, np.int64)  # one trailing entry keeps every gather in range (even with no group at all)
        self.item_group_starts = tf.constant(groups.indptr[:-1].astype(np.int64))  # [n_items]
        self.item_group_count = tf.constant(np.diff(groups.indptr).astype(np.int64))  # [n_items]
        self.item_group_ids = tf.constant(np.concatenate([groups.indices.astype(np.int64), pad]))  # [nnz + 1]
        self.group_starts = tf.constant(np.concatenate([members.indptr[:-1].astype(np.int64), pad]))  # [G + 1]
        self.group_size = tf.constant(np.concatenate([np.diff(members.indptr).astype(np.int64), pad]))  # [G + 1]
        self.group_items = tf.constant(np.concatenate([members.indices.astype(np.int64), pad]))  # [nnz + 1]
        # |g ∩ P_u| of every (user, group) that shares an item, as sorted keys u·G + g (and a sentinel past the end)
        self.n_groups = max(int(groups.shape[1]), 1)
        binary = sp.csr_matrix((np.ones(train.nnz), train.indices, train.indptr), shape=train.shape)
        held = sp.csr_matrix(binary @ sp.csr_matrix((np.ones(groups.nnz), groups.indices, groups.indptr), groups.shape))
        held.sort_indices()
        held_rows = np.repeat(np.arange(held.shape[0], dtype=np.int64), np.diff(held.indptr))
        sentinel = np.array([np.iinfo(np.int64).max])
        self.held_keys = tf.constant(np.concatenate([held_rows * self.n_groups + held.indices, sentinel]))
        self.held_counts = tf.constant(np.concatenate([held.data.astype(np.float64), [0.0]]))

    def _held(self, users: tf.Tensor, groups: tf.Tensor) -> tf.Tensor:
        """[K] float64 |g ∩ P_u| of the (user, group) pairs ``users``, ``groups`` [K] int64."""
        query = users * self.n_groups + groups
        pos = tf.minimum(
            tf.searchsorted(self.held_keys, query, out_type=tf.int64), tf.size(self.held_keys, out_type=tf.int64) - 1
        )
        return tf.where(tf.gather(self.held_keys, pos) == query, tf.gather(self.held_counts, pos), 0.0)

    def draw_probs(self, users: tf.Tensor, positives: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
        """P(i | u, j) of the class docstring for each row (u, j) and item i, the indicator 1[i ∉ P_u] left out (the
        caller knows which items are positives): the fallback's mass spread uniformly over the n − |P_u| items,
        plus (1 − q_g^T) / (|G(j)|·|g − P_u|) for each group g of j that holds i.

        Vectorised over ragged group lists: the groups of each row's positive, then the groups of each queried
        item searched among them (sorted keys row·G + g).

        Args:
            users: [batch] int user ids.
            positives: [batch] int item ids (the positive of each row).
            items: [batch, M] int item ids.

        Returns:
            [batch, M] float64 probabilities.
        """
        users = tf.cast(users, tf.int64)
        positives = tf.cast(positives, tf.int64)
        items = tf.cast(items, tf.int64)
        batch = tf.size(users, out_type=tf.int64)
        free = tf.cast(tf.maximum(self.uniform.n_items - tf.gather(self.uniform.degree, users), 1), tf.float64)
        # the groups g of each row's positive j: q_g^T and each group's own mass (1 − q_g^T) / (|G(j)|·|g − P_u|)
        count = tf.gather(self.item_group_count, positives)  # [B] |G(j)|
        starts = tf.gather(self.item_group_starts, positives)
        positions = tf.ragged.range(starts, starts + count)
        rows = positions.value_rowids()  # [K]
        group = tf.gather(self.item_group_ids, positions.flat_values)  # [K]
        size = tf.cast(tf.gather(self.group_size, group), tf.float64)
        held = self._held(tf.gather(users, rows), group)
        fail = tf.pow(held / size, float(self.tries))  # q_g^T
        share = 1.0 / tf.cast(tf.gather(count, rows), tf.float64)  # 1 / |G(j)|
        alpha = tf.where(size > held, (1.0 - fail) * share / tf.maximum(size - held, 1.0), 0.0)
        fallback = tf.math.unsorted_segment_sum(fail * share, rows, batch)
        fallback = tf.where(count > 0, fallback, 1.0) / free  # [B]
        # each queried item's groups, looked up among its row's groups
        flat = tf.reshape(items, [-1])
        item_starts = tf.gather(self.item_group_starts, flat)
        item_positions = tf.ragged.range(item_starts, item_starts + tf.gather(self.item_group_count, flat))
        pair = item_positions.value_rowids()  # which (row, item) each of the item's groups belongs to
        row_of_pair = pair // tf.cast(tf.shape(items)[1], tf.int64)
        query = row_of_pair * self.n_groups + tf.gather(self.item_group_ids, item_positions.flat_values)
        keys = tf.concat([rows * self.n_groups + group, [np.iinfo(np.int64).max]], 0)  # sorted: rows, then g
        alpha = tf.concat([alpha, [0.0]], 0)
        pos = tf.minimum(tf.searchsorted(keys, query, out_type=tf.int64), tf.size(keys, out_type=tf.int64) - 1)
        inside = tf.where(tf.gather(keys, pos) == query, tf.gather(alpha, pos), 0.0)
        inside = tf.math.unsorted_segment_sum(inside, pair, tf.size(flat, out_type=tf.int64))
        return fallback[:, None] + tf.reshape(inside, tf.shape(items))

    def sample(self, users: tf.Tensor, positives: tf.Tensor, num: int, seed: tf.Tensor) -> tf.Tensor:
        """``num`` negatives per (user, positive), with replacement.

        Args:
            users: [batch] int user ids.
            positives: [batch] int item ids (the positive of each row).
            num: negatives per row.
            seed: [2] int stateless seed.

        Returns:
            [batch, num] int64 item ids, none a training positive of its user.
        """
        seeds = tf.random.experimental.stateless_split(seed, num=3)
        fallback = self.uniform.sample(users, num, seeds[0])  # [B, num]
        users = tf.cast(users, tf.int64)
        positives = tf.cast(positives, tf.int64)
        shape = tf.shape(fallback)
        count = tf.gather(self.item_group_count, positives)[:, None]  # [B, 1] |G(j)|
        u = tf.random.stateless_uniform(shape, seeds[1], dtype=tf.float64)
        r = tf.minimum(tf.cast(tf.floor(u * tf.cast(count, tf.float64)), tf.int64), tf.maximum(count - 1, 0))
        group = tf.gather(self.item_group_ids, tf.gather(self.item_group_starts, positives)[:, None] + r)  # [B, num]
        size = tf.gather(self.group_size, group)[..., None]  # [B, num, 1]
        v = tf.random.stateless_uniform(tf.concat([shape, [self.tries]], 0), seeds[2], dtype=tf.float64)
        offset = tf.minimum(tf.cast(tf.floor(v * tf.cast(size, tf.float64)), tf.int64), tf.maximum(size - 1, 0))
        drawn = tf.gather(self.group_items, tf.gather(self.group_starts, group)[..., None] + offset)  # [B, num, T]
        ok = ~self.index.contains(users[:, None, None], drawn) & (count > 0)[..., None]
        first = tf.argmax(tf.cast(ok, tf.int32), axis=-1, output_type=tf.int64)  # the first acceptable try
        chosen = tf.gather(drawn, first[..., None], batch_dims=2)[..., 0]
        return tf.where(tf.reduce_any(ok, axis=-1), chosen, fallback)
