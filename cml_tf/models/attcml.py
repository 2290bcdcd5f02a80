"""AttCML (the reference code's attentive CML): the user is translated by an attentive summary of their items.

For a target item v, the user's reference items p_1..p_P (a seeded sample of at most ``max_num_prefs`` training
items, the positive being predicted masked out) are weighted by ``a = softmax_j(⟨p_j, v⟩)``; the relation is
``r = Σ_j a_j p_j`` and the score ``−‖u + r − v‖²``. (The reference's training graph also gives one padding slot a
weight, ``n_prefs + 1`` in its mask; its scoring graph does not. Both use the scoring graph's definition here.)
"""

from __future__ import annotations

from cml_tf.models.relational import RelationalModel
from cml_tf.models.relations import preference_attention


class AttCML(RelationalModel):
    """Attentive Collaborative Metric Learning.

    Args:
        n_users, n_items: table sizes.
        train: [n_users, n_items] training CSR (the reference items).
        max_num_prefs: P, reference items per user (the reference's ml-20m config: 50).
        **kwargs: `cml_tf.models.base.MetricModel`'s arguments.
    """

    def __init__(self, n_users: int, n_items: int, train=None, max_num_prefs: int = 50, **kwargs):
        super().__init__(n_users, n_items, **kwargs)
        self._reference_table(train, max_num_prefs)

    def relation(self, users, u, items, v, exclude=None):
        prefs, mask = self.references(users, exclude)
        return preference_attention(v, prefs, mask)[0]

    def pair_cost(self) -> int:
        return 3 * self.max_num_prefs + 4 * self.embedding_dim

    def get_config(self):
        return {**super().get_config(), "max_num_prefs": self.max_num_prefs}
