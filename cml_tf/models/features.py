"""CML+F (Hsieh et al. 2017, section 3.3): item features projected into the metric space by an MLP.

The projection f(x_j) pulls each item embedding v_j towards it through the feature loss
(`cml_tf.models.losses.feature_loss`, summed over ALL items at every step, weighted by ``feature_l2_reg``), as
CollMetric's ``CML.py`` does. What the original does, and this layer reproduces:

* ``f(x) = clip_by_norm(scale · (W2 · dropout(relu(W1 x + b1)) + b2), clip_norm)``: scaled FIRST, then clipped to
  the model's ``clip_norm`` (the same threshold as the embeddings' ball; 1.1 in CML.py's CML+F example).
  Glorot-uniform kernels, zero biases (``tf.layers.dense``'s defaults).
* The MLP is trained by a second AdaGrad on ``feature_loss / n_items`` only: its gradients are ``1/n_items`` of
  the feature loss's. Here one optimizer sees every variable, so the layer scales the gradient that flows back
  into the MLP by ``gradient_scale`` (default ``1/n_items``; the forward value is untouched). The embeddings get
  the unscaled feature-loss gradient, as in the original.
* Dropout: CML.py calls ``tf.layers.dropout(inputs, rate)`` without ``training=``, whose default is ``False``, so
  the original NEVER applies dropout (its 0.3 is inert). ``dropout`` here is honoured when ``training=True``;
  pass 0 to reproduce the original.
* Before training the original sets every item embedding to its projection (``optimize()``:
  ``tf.assign(item_embeddings, feature_projection)``): `initialise_items_from_features` does that.
"""

from __future__ import annotations

import keras
import numpy as np
import scipy.sparse as sp
import tensorflow as tf


class ItemFeatureProjection(keras.layers.Layer):
    """CML+F: an MLP mapping (sparse) item features into the embedding space, as CollMetric's CML.py does.

    ``f(x) = clip_by_norm(scale · (W2 · dropout(relu(W1 x + b1)) + b2), clip_norm)`` for every item at once.

    Args:
        features: [n_items, F] scipy sparse (or dense) item features, e.g. citeulike-t tags.
        embedding_dim: d.
        hidden_dim: hidden units (CML.py's CML+F example: 512).
        dropout: dropout rate on the hidden layer when called with ``training=True`` (the original's is inert:
            see the module docstring; 0 reproduces it).
        scale: ``feature_projection_scaling_factor``, applied before the clip (CML.py's example: 1; its
            constructor default: 0.5).
        clip_norm: norm bound of each projection, the embeddings' ``clip_norm`` (1.0 for the unit ball).
        gradient_scale: factor on the gradients reaching the MLP's weights; default ``1 / n_items`` (the
            original's second optimizer minimises ``feature_loss / n_items``).
        seed: initialiser/dropout seed.
    """

    def __init__(
        self,
        features,
        embedding_dim,
        hidden_dim=512,
        dropout=0.0,
        scale=1.0,
        clip_norm=1.0,
        gradient_scale=None,
        seed=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        coo = sp.coo_matrix(features, dtype=np.float32)
        if coo.ndim != 2 or coo.shape[0] < 1 or coo.shape[1] < 1:
            raise ValueError(f"item features must be a non-empty [n_items, F] matrix, got shape {coo.shape}")
        if not 0 <= dropout < 1:
            raise ValueError(f"feature dropout must be in [0, 1), got {dropout}")
        if clip_norm <= 0:
            raise ValueError(f"clip_norm must be positive, got {clip_norm}")
        self.n_items, self.n_features = (int(s) for s in coo.shape)
        self.features = tf.sparse.reorder(
            tf.SparseTensor(np.stack([coo.row, coo.col], 1).astype(np.int64), coo.data, coo.shape)
        )
        self.scale = float(scale)
        self.clip_norm = float(clip_norm)
        self.gradient_scale = float(1.0 / self.n_items if gradient_scale is None else gradient_scale)
        self.hidden = keras.layers.Dense(
            hidden_dim, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(seed), name="mlp_layer_1"
        )
        self.hidden.build((None, self.n_features))
        self.dropout = keras.layers.Dropout(dropout, seed=seed)
        self.out = keras.layers.Dense(
            embedding_dim, kernel_initializer=keras.initializers.GlorotUniform(seed + 1), name="mlp_layer_2"
        )
        self.out.build((None, hidden_dim))

    def call(self, training=False):
        """Returns [n_items, d] projections of every item (row norms <= ``clip_norm``)."""
        h = tf.sparse.sparse_dense_matmul(self.features, self.hidden.kernel) + self.hidden.bias
        h = self.dropout(tf.nn.relu(h), training=training)
        y = tf.clip_by_norm(self.out(h) * self.scale, self.clip_norm, axes=[1])
        if self.gradient_scale == 1.0:
            return y
        # Same value, gradient into the MLP multiplied by gradient_scale.
        frozen = tf.stop_gradient(y)
        return frozen + self.gradient_scale * (y - frozen)


def initialise_items_from_features(model) -> None:
    """Sets every item embedding to its feature projection, as the original's ``optimize()`` does first.

    Args:
        model: a `cml_tf.models.CML` built with item features (a no-op without).
    """
    projection = getattr(model, "feature_projection", None)
    if projection is None:
        return
    model.item_embedding.embeddings.assign(projection(training=False))
