"""Lazy (sparse) Adam and AdaGrad for Keras 3: a step touches only the embedding rows of the batch.

Keras 3's optimizers turn an embedding gradient (``tf.IndexedSlices``) into a dense update of every row of every
table, so a step costs O(catalog). These subclasses keep the Keras API (``model.compile(optimizer=...)``,
checkpoints, distribution) and override ``update_step`` for ``IndexedSlices``: duplicate indices are summed, the
moments of the touched rows are read, updated and scattered back, and only those rows of the variable move. Dense
gradients take the parent's exact path. This is the semantics of TF1 ``LazyAdamOptimizer`` / TF-Addons
``LazyAdam``: rows absent from a batch keep their moments (no decay) until they next appear.

The dense optimizers (``sparse=False``) are Keras' own, with one fix: an embedding gradient repeats a row index
once per lookup of that row in the batch, and Keras 3's Adam and AdaGrad square each repeated slice separately
(their second moment gets Σg² instead of (Σg)²). ``DenseAdam`` / ``DenseAdagrad`` / ``DenseSGD`` sum the repeated
rows first, as TF1's optimizers did, and are then exactly the dense optimizer on the summed gradient.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def _dedupe(gradient: tf.IndexedSlices) -> tuple[tf.Tensor, tf.Tensor]:
    """Sums the values of repeated indices. Returns ([u] unique indices, [u, d] summed rows)."""
    unique, position = tf.unique(gradient.indices)
    values = tf.math.unsorted_segment_sum(gradient.values, position, tf.shape(unique)[0])
    return unique, values


def _raw(variable):
    return variable.value if isinstance(variable, keras.Variable) else variable


class _SummedSlicesMixin:
    """Sums the repeated rows of an ``IndexedSlices`` gradient before the optimizer's own ``update_step``.

    Keras' updates are not linear in the gradient (Adam's and AdaGrad's squares), so slices that repeat an index
    must be summed first; the result is the update for the dense gradient ``tf.convert_to_tensor(gradient)``.
    """

    def update_step(self, gradient, variable, learning_rate):
        if isinstance(gradient, tf.IndexedSlices):
            rows, values = _dedupe(gradient)
            gradient = tf.IndexedSlices(values, rows, gradient.dense_shape)
        return super().update_step(gradient, variable, learning_rate)


class DenseAdam(_SummedSlicesMixin, keras.optimizers.Adam):
    """Keras' Adam (every row's moments decay every step) on gradients with repeated rows summed."""


class DenseAdagrad(_SummedSlicesMixin, keras.optimizers.Adagrad):
    """Keras' AdaGrad on gradients with repeated rows summed."""


class DenseSGD(_SummedSlicesMixin, keras.optimizers.SGD):
    """Keras' SGD on gradients with repeated rows summed (linear: the same update, for symmetry)."""


class _RowSparseMixin:
    """Shared constructor argument: ``max_row_norm`` clips the rows a sparse step touched (CML's unit ball).

    Keras applies variable constraints to the whole table after each step (O(catalog)); the lazy optimizers instead
    clip only the updated rows, which is exact because the other rows did not move.
    """

    def __init__(self, *args, max_row_norm: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_row_norm = max_row_norm

    def _scatter_sub_and_clip(self, variable, rows, delta):
        raw = _raw(variable)
        raw.scatter_sub(tf.IndexedSlices(delta, rows))
        if self.max_row_norm is not None:
            clipped = tf.clip_by_norm(tf.gather(raw, rows), self.max_row_norm, axes=[1])
            raw.scatter_update(tf.IndexedSlices(clipped, rows))

    def get_config(self):
        config = super().get_config()
        config["max_row_norm"] = self.max_row_norm
        return config


class LazyAdam(_RowSparseMixin, DenseAdam):
    """Adam whose sparse updates touch only the rows present in the gradient (see module docstring)."""

    def update_step(self, gradient, variable, learning_rate):
        if not isinstance(gradient, tf.IndexedSlices) or self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        lr = tf.cast(learning_rate, dtype)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        alpha = lr * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))
        index = self._get_variable_index(variable)
        m, v = _raw(self._momentums[index]), _raw(self._velocities[index])
        rows, g = _dedupe(gradient)
        g = tf.cast(g, dtype)
        m_rows = beta_1 * tf.gather(m, rows) + (1 - beta_1) * g
        v_rows = beta_2 * tf.gather(v, rows) + (1 - beta_2) * tf.square(g)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        self._scatter_sub_and_clip(variable, rows, alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon))


class LazyAdagrad(_RowSparseMixin, DenseAdagrad):
    """AdaGrad with row-sparse updates. Exact: AdaGrad leaves rows with zero gradient unchanged anyway."""

    def update_step(self, gradient, variable, learning_rate):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        lr = tf.cast(learning_rate, dtype)
        accumulator = _raw(self._accumulators[self._get_variable_index(variable)])
        rows, g = _dedupe(gradient)
        g = tf.cast(g, dtype)
        acc_rows = tf.gather(accumulator, rows) + tf.square(g)
        accumulator.scatter_update(tf.IndexedSlices(acc_rows, rows))
        self._scatter_sub_and_clip(variable, rows, lr * g / tf.sqrt(acc_rows + self.epsilon))


OPTIMIZERS = ("adam", "adagrad", "sgd")


class LazySGD(_RowSparseMixin, DenseSGD):
    """Plain SGD (no momentum) with row-sparse updates and optional row clipping."""

    def update_step(self, gradient, variable, learning_rate):
        if not isinstance(gradient, tf.IndexedSlices) or self.momentum != 0:
            return super().update_step(gradient, variable, learning_rate)
        rows, g = _dedupe(gradient)
        self._scatter_sub_and_clip(variable, rows, tf.cast(learning_rate, variable.dtype) * tf.cast(g, variable.dtype))


def make_optimizer(
    name: str, learning_rate: float, sparse: bool = True, max_row_norm: float | None = None
) -> keras.optimizers.Optimizer:
    """Builds an optimizer by name.

    Args:
        name: 'adam' (paper), 'adagrad' (CollMetric) or 'sgd'.
        learning_rate: step size.
        sparse: lazy row-sparse updates for embedding gradients (fast, O(batch)); False gives Keras' exact dense
            optimizer (O(catalog) per step) on gradients with repeated rows summed, as the TF1 originals.
        max_row_norm: with ``sparse``, clip every updated embedding row to this norm (the unit ball). The dense
            optimizers leave this to the variables' Keras constraints instead.
    """
    if not sparse:
        if name == "adam":
            return DenseAdam(learning_rate=learning_rate)
        if name == "adagrad":
            # CollMetric used tf.train.AdagradOptimizer: initial accumulator 0.1.
            return DenseAdagrad(learning_rate=learning_rate, initial_accumulator_value=0.1)
        if name == "sgd":
            return DenseSGD(learning_rate=learning_rate)
    elif name == "adam":
        return LazyAdam(learning_rate=learning_rate, max_row_norm=max_row_norm)
    elif name == "adagrad":
        return LazyAdagrad(learning_rate=learning_rate, initial_accumulator_value=0.1, max_row_norm=max_row_norm)
    elif name == "sgd":
        return LazySGD(learning_rate=learning_rate, max_row_norm=max_row_norm)
    raise ValueError(f"--optimizer: unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
