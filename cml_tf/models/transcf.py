"""TransCF (Park, Kim, Xie & Yu, ICDM 2018): collaborative translational metric learning.

The relation of a pair is the product of neighbourhood means, ``r(u, i) = n_u ⊙ n_i``: ``n_u`` is the mean of the
vectors of u's training items, ``n_i`` the mean of the vectors of i's training users. The means are read from the
current tables at every step without gradient (the reference code feeds them as inputs computed from the current
embeddings). The loss adds TransCF's two regularisers, summed over the batch:

* neighbourhood: ``α_nbr (‖u − n_u‖² + ‖v⁺ − n_{v⁺}‖² + Σ ‖v⁻ − n_{v⁻}‖²)``;
* distance: ``α_dist ‖u + r(u, v⁺) − v⁺‖²``.

The means are exact (every neighbour), from row-normalised sparse matrices built once from the training CSR: one
sparse-dense product per table, O(nnz · d) per step.
"""

from __future__ import annotations

import tensorflow as tf

from cml_tf.models.relational import RelationalModel
from cml_tf.models.relations import mean_operator


class TransCF(RelationalModel):
    """Collaborative Translational Metric Learning.

    Args:
        n_users, n_items: table sizes.
        train: [n_users, n_items] training CSR (the neighbourhoods).
        neighbour_weight: α_nbr (the reference's ``alpha_reg_nbr``, 0.1).
        distance_weight: α_dist (``alpha_reg_dist``, 0.1).
        **kwargs: `cml_tf.models.base.MetricModel`'s arguments.
    """

    def __init__(
        self, n_users: int, n_items: int, train=None, neighbour_weight: float = 0.1, distance_weight: float = 0.1, **kw
    ):
        super().__init__(n_users, n_items, **kw)
        if train is None:
            raise ValueError("TransCF needs the training interactions (train=...)")
        self.neighbour_weight = float(neighbour_weight)
        self.distance_weight = float(distance_weight)
        self.user_mean_operator = mean_operator(train)  # [n_users, n_items]
        self.item_mean_operator = mean_operator(train.T)  # [n_items, n_users]

    def neighbour_means(self) -> tuple[tf.Tensor, tf.Tensor]:
        """([n_users, d] mean of each user's items, [n_items, d] mean of each item's users), without gradient."""
        users, items = self.embeddings()
        user_means = tf.sparse.sparse_dense_matmul(self.user_mean_operator, items)
        item_means = tf.sparse.sparse_dense_matmul(self.item_mean_operator, users)
        return tf.stop_gradient(user_means), tf.stop_gradient(item_means)

    def relation(self, users, u, items, v, exclude=None):
        user_means, item_means = self.neighbour_means()
        return tf.gather(user_means, users)[:, None, :] * tf.gather(item_means, items)

    def extra_loss(self, users, u, positives, p, negatives, n):
        user_means, item_means = self.neighbour_means()
        nu = tf.gather(user_means, users)
        neighbour = (
            tf.reduce_sum(tf.square(u - nu))
            + tf.reduce_sum(tf.square(p - tf.gather(item_means, positives)))
            + tf.reduce_sum(tf.square(n - tf.gather(item_means, negatives)))
        )
        distance = tf.reduce_sum(tf.square(u + nu * tf.gather(item_means, positives) - p))
        return self.neighbour_weight * neighbour + self.distance_weight * distance

    def get_config(self):
        return {
            **super().get_config(),
            "neighbour_weight": self.neighbour_weight,
            "distance_weight": self.distance_weight,
        }
