"""Lazy (sparse) Adam and AdaGrad for Keras 3: a step touches only the embedding rows of the batch.

Keras 3's optimizers turn an embedding gradient (``tf.IndexedSlices``) into a dense update of every row of every
table, so a step costs O(catalog). These subclasses keep the Keras API (``model.compile(optimizer=...)``,
checkpoints, distribution) and override ``update_step`` for ``IndexedSlices``: duplicate indices are summed, the
moments of the touched rows are read, updated and scattered back, and only those rows of the variable move; the
arithmetic is one XLA-compiled function (`_new_rows`; static shapes: each position of the slices carries the sum of
its index's slices and writes the same row, so no ``tf.unique``). Dense gradients take the parent's exact path. This is
the semantics of TF1 ``LazyAdamOptimizer`` / TF-Addons ``LazyAdam``: rows absent from a batch keep their moments (no
decay) until they next appear.

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


def _summed_per_position(indices: tf.Tensor, values: tf.Tensor) -> tf.Tensor:
    """At each position, the sum of the slices of every position holding the same index, with static shapes.

    Args:
        indices: [n] int row ids (repeats allowed); values: [n, d].

    Returns:
        [n, d]: row k is Σ values[j] over the j with indices[j] == indices[k] (repeated positions get equal rows, so
        scattering them with ``scatter_update`` writes one value per index, whatever the order).
    """
    n = tf.shape(indices)[0]
    order = tf.argsort(indices, stable=True)
    ordered = tf.gather(indices, order)
    starts = tf.concat([tf.ones([1], tf.int32), tf.cast(ordered[1:] != ordered[:-1], tf.int32)], axis=0)
    group = tf.scatter_nd(order[:, None], tf.cumsum(starts) - 1, [n])  # each position's group id, in [0, n)
    return tf.gather(tf.math.unsorted_segment_sum(values, group, n), group)


def _new_rows(rule, max_row_norm, rows, slot_rows, indices, values, *hyper):
    """The updated rows of a variable and of its slots for one lazy step (compiled by XLA; no variable inside, so
    the one compiled function serves every model and every replica's variables).

    Args:
        rule: ``rule(g, slot_rows, *hyper) -> (new slot rows, delta)`` on [n, d] rows, ``g`` the summed gradient.
        max_row_norm: clip the updated rows to this norm (None: no clipping).
        rows: [n, d] the variable's rows at ``indices``; slot_rows: the slots' rows there, each [n, d].
        indices: [n] int (repeats allowed); values: [n, d] the gradient's slices.
        *hyper: scalar tensors the rule takes (learning rate, bias corrections).

    Returns:
        ([n, d] new rows, [new slot rows]): repeated indices get identical rows.
    """
    g = tf.cast(_summed_per_position(indices, values), rows.dtype)
    new_slots, delta = rule(g, slot_rows, *hyper)
    rows = rows - delta
    if max_row_norm is not None:
        rows = tf.clip_by_norm(rows, max_row_norm, axes=[1])
    return rows, new_slots


_NEW_ROWS = tf.function(_new_rows, jit_compile=True)


def _adam_rule(g, slot_rows, alpha, beta_1, beta_2, epsilon):
    m_rows = beta_1 * slot_rows[0] + (1 - beta_1) * g
    v_rows = beta_2 * slot_rows[1] + (1 - beta_2) * tf.square(g)
    return [m_rows, v_rows], alpha * m_rows / (tf.sqrt(v_rows) + epsilon)


def _adagrad_rule(g, slot_rows, lr, epsilon):
    accumulated = slot_rows[0] + tf.square(g)
    return [accumulated], lr * g / tf.sqrt(accumulated + epsilon)


def _sgd_rule(g, slot_rows, lr):
    return [], lr * g


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

    def _update_rows(self, rule, variable, slots, gradient: tf.IndexedSlices, *hyper):
        """Applies ``rule`` to the rows of ``gradient`` (`_new_rows`), clipping them to ``max_row_norm``: the rows
        are read and written here, on the variables as the strategy hands them over (a replica's own copy)."""
        raw, indices = _raw(variable), gradient.indices
        rows, new_slots = _NEW_ROWS(
            rule,
            self.max_row_norm,
            tf.gather(raw, indices),
            [tf.gather(slot, indices) for slot in slots],
            indices,
            gradient.values,
            *hyper,
        )
        for slot, new in zip(slots, new_slots):
            slot.scatter_update(tf.IndexedSlices(new, indices))  # repeated indices write identical rows
        raw.scatter_update(tf.IndexedSlices(rows, indices))

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
        slots = [_raw(self._momentums[index]), _raw(self._velocities[index])]
        epsilon = tf.cast(self.epsilon, dtype)
        self._update_rows(_adam_rule, variable, slots, gradient, alpha, beta_1, beta_2, epsilon)


class LazyAdagrad(_RowSparseMixin, DenseAdagrad):
    """AdaGrad with row-sparse updates. Exact: AdaGrad leaves rows with zero gradient unchanged anyway."""

    def update_step(self, gradient, variable, learning_rate):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        lr = tf.cast(learning_rate, dtype)
        accumulator = _raw(self._accumulators[self._get_variable_index(variable)])
        self._update_rows(_adagrad_rule, variable, [accumulator], gradient, lr, tf.cast(self.epsilon, dtype))


OPTIMIZERS = ("adam", "adagrad", "sgd")


class LazySGD(_RowSparseMixin, DenseSGD):
    """Plain SGD (no momentum) with row-sparse updates and optional row clipping."""

    def update_step(self, gradient, variable, learning_rate):
        if not isinstance(gradient, tf.IndexedSlices) or self.momentum != 0:
            return super().update_step(gradient, variable, learning_rate)
        self._update_rows(_sgd_rule, variable, [], gradient, tf.cast(learning_rate, variable.dtype))


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
