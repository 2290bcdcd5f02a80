"""CML+F (Hsieh et al. 2017, section 3.3): item features projected into the metric space by an MLP.

The projection f(x_j) pulls each item embedding v_j towards it through the feature loss
(`cml_tf.losses.feature_loss`), weighted by ``feature_l2_reg``.
"""

from __future__ import annotations

import keras
import numpy as np
import scipy.sparse as sp
import tensorflow as tf


class ItemFeatureProjection(keras.layers.Layer):
    """CML+F: an MLP mapping (sparse) item features into the embedding space, as CollMetric's CML.py does.

    ``f(x) = clip_by_norm(W2 · dropout(relu(W1 x + b1)) + b2, 1) · scale``.

    Args:
        features: [n_items, F] scipy sparse (or dense) item features, e.g. citeulike-t tags.
        embedding_dim: d.
        hidden_dim: hidden units (CollMetric: 512 in its citeulike example).
        dropout: dropout rate on the hidden layer.
        scale: ``feature_projection_scaling_factor``.
        seed: initialiser/dropout seed.
    """

    def __init__(self, features, embedding_dim, hidden_dim=512, dropout=0.3, scale=0.5, seed=0, **kwargs):
        super().__init__(**kwargs)
        coo = sp.coo_matrix(features, dtype=np.float32)
        self.features = tf.sparse.reorder(
            tf.SparseTensor(np.stack([coo.row, coo.col], 1).astype(np.int64), coo.data, coo.shape)
        )
        self.scale = float(scale)
        self.hidden = keras.layers.Dense(
            hidden_dim, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(seed)
        )
        self.hidden.build((None, coo.shape[1]))
        self.dropout = keras.layers.Dropout(dropout, seed=seed)
        self.out = keras.layers.Dense(embedding_dim, kernel_initializer=keras.initializers.GlorotUniform(seed + 1))
        self.out.build((None, hidden_dim))

    def call(self, training=False):
        """Returns [n_items, d] projections of every item."""
        h = tf.sparse.sparse_dense_matmul(self.features, self.hidden.kernel) + self.hidden.bias
        h = self.dropout(tf.nn.relu(h), training=training)
        return tf.clip_by_norm(self.out(h), 1.0, axes=[1]) * self.scale
