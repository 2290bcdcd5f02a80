"""LRML (Tay, Tuan & Hui, WWW 2018): latent relational metric learning with memory-based attention.

The relation of a pair is ``r = softmax((u ⊙ v) K) · Mem`` (K [d, M] keys, Mem [M, d] memory slots); the score is
``−‖u + r − v‖²``. Each negative gets its own relation (the reference code's ``copy = false``).
"""

from __future__ import annotations

from cml_tf.models.relational import RelationalModel
from cml_tf.models.relations import lram


class LRML(RelationalModel):
    """Latent Relational Metric Learning.

    Args:
        n_users, n_items: table sizes.
        num_memories: M, the memory slots (the reference's ml-20m config: 20).
        train: unused (accepted so every model is built the same way).
        **kwargs: `cml_tf.models.base.MetricModel`'s arguments.
    """

    def __init__(self, n_users: int, n_items: int, num_memories: int = 20, train=None, **kwargs):
        super().__init__(n_users, n_items, **kwargs)
        self.num_memories = int(num_memories)
        self.keys, self.memories = self._memory(self.num_memories)

    def relation(self, users, u, items, v, exclude=None):
        return lram(u, v, self.keys, self.memories)[0]

    def pair_cost(self) -> int:
        return 3 * self.num_memories + 4 * self.embedding_dim

    def get_config(self):
        return {**super().get_config(), "num_memories": self.num_memories}
