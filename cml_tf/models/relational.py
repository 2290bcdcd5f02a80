"""The base of the relational models (LRML, TransCF, AttCML, HLR): a per-pair relation r(u, v) on CML's tables."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from cml_tf.models.base import MetricModel
from cml_tf.models.relations import reference_items, reference_mask


class RelationalModel(MetricModel):
    """A `MetricModel` whose score goes through a per-pair relation r(u, v): ``−‖u + r(u, v) − v‖²``.

    Holds what the relational models share: memory matrices (key K [d, M], slots Mem [M, d], initialised
    N(0, 1/d) as the reference code) and the users' reference items (a fixed [n_users, P] table built once from the
    training CSR, see `cml_tf.models.relations.reference_items`).
    """

    relational = True

    def _memory(self, num_memories: int, name: str = "memory") -> tuple:
        """Creates K [d, M] and Mem [M, d] (trainable, seeded)."""
        stddev = 1.0 / np.sqrt(self.embedding_dim)
        keys = self.add_weight(
            shape=(self.embedding_dim, num_memories),
            initializer=keras.initializers.RandomNormal(stddev=stddev, seed=self.seed + 2),
            name=f"{name}_keys",
        )
        memories = self.add_weight(
            shape=(num_memories, self.embedding_dim),
            initializer=keras.initializers.RandomNormal(stddev=stddev, seed=self.seed + 3),
            name=f"{name}_slots",
        )
        return keys, memories

    def _reference_table(self, train, max_num_prefs: int) -> None:
        """The users' reference items: ``self.reference_ids`` [n_users, P] int32, ``self.reference_valid`` bool."""
        if train is None:
            raise ValueError(f"{type(self).__name__} needs the training interactions (train=...)")
        ids, valid = reference_items(train, max_num_prefs, self.seed)
        self.max_num_prefs = int(max_num_prefs)
        self.reference_ids = tf.constant(ids)
        self.reference_valid = tf.constant(valid)

    def references(self, users, exclude=None) -> tuple[tf.Tensor, tf.Tensor]:
        """([b, P, d] reference item vectors, [b, P] bool mask) of users, ``exclude`` [b] masked out."""
        ids = tf.gather(self.reference_ids, users)
        mask = reference_mask(tf.gather(self.reference_valid, users), ids, exclude)
        return self.item_vectors(ids), mask
