"""HLR (Tran, Salha-Galvan, Hennequin, Moussallam, RecSys 2021): hierarchical latent relations, the reference
code's ``hlre`` (HLR-E: TransE-style translation, ``catex``: the user is its own first reference).

For a pair (u, v) the references are x_0 = u and the user's reference items x_1..x_P (a seeded sample of at most
``max_num_prefs`` training items; the positive being predicted masked out). Each gives a latent relation through a
memory shared by all pairs, ``r_p = softmax((v ⊙ x_p) K) · Mem``: user–item (p = 0) and item–item (p ≥ 1)
relations. The user attends over them, ``a = softmax_p(⟨r_p, u⟩)``, and ``r = Σ_p a_p r_p``. The score is
``−‖u + r − v‖²``, trained with the triplet hinge.
"""

from __future__ import annotations

import tensorflow as tf

from cml_tf.models.relational import RelationalModel
from cml_tf.models.relations import hierarchical_block_relation, hierarchical_relation, reference_keys


class HLR(RelationalModel):
    """Hierarchical Latent Relation model (HLR-E).

    Args:
        n_users, n_items: table sizes.
        train: [n_users, n_items] training CSR (the reference items).
        max_num_prefs: P, reference items per user (the reference's ml-20m config: 50).
        num_memories: M, memory slots (20).
        **kwargs: `cml_tf.models.base.MetricModel`'s arguments.
    """

    def __init__(
        self, n_users: int, n_items: int, train=None, max_num_prefs: int = 50, num_memories: int = 20, **kwargs
    ):
        super().__init__(n_users, n_items, **kwargs)
        self.num_memories = int(num_memories)
        self.keys, self.memories = self._memory(self.num_memories)
        self._reference_table(train, max_num_prefs)

    def reference_vectors(self, users, u, exclude=None) -> tuple[tf.Tensor, tf.Tensor]:
        """([b, P + 1, d] references: the user, then their items; [b, P + 1] bool mask)."""
        prefs, mask = self.references(users, exclude)
        refs = tf.concat([u[:, None, :], prefs], axis=1)
        mask = tf.concat([tf.ones_like(mask[:, :1]), mask], axis=1)
        return refs, mask

    def relation(self, users, u, items, v, exclude=None):
        refs, mask = self.reference_vectors(users, u, exclude)
        return hierarchical_relation(u, v, refs, mask, self.keys, self.memories)[0]

    def pair_cost(self) -> int:
        return 4 * (self.max_num_prefs + 1) * self.num_memories + 4 * self.embedding_dim

    def block_users(self) -> int:
        # the folded keys of a batch hold b (P + 1) d M floats: keep them near 2^24 (64 MiB)
        return max(1, min(1024, 2**24 // ((self.max_num_prefs + 1) * self.embedding_dim * self.num_memories)))

    def user_state(self, users) -> dict:
        state = super().user_state(users)
        refs, mask = self.reference_vectors(users, state["u"])
        return {**state, "mask": mask, "folded": reference_keys(refs, self.keys)}

    def block_relation(self, state, items, v):
        return hierarchical_block_relation(state["u"], v, state["folded"], state["mask"], self.memories)

    def get_config(self):
        return {**super().get_config(), "max_num_prefs": self.max_num_prefs, "num_memories": self.num_memories}
