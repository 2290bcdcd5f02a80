"""Lazy row-sparse optimizers against Keras' dense ones and a plain-numpy LazyAdam written from the definition."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from cml_tf.training import optimizers as O

ROWS, DIM = 6, 3


def _init(seed=0, scale=1.0):
    return (np.random.default_rng(seed).normal(size=(ROWS, DIM)) * scale).astype(np.float32)


def _slices(indices, values):
    return tf.IndexedSlices(
        tf.constant(np.asarray(values, np.float32)), tf.constant(np.asarray(indices, np.int64)), [ROWS, DIM]
    )


def _dense(indices, values):
    """The dense equivalent of an IndexedSlices gradient: repeated rows summed."""
    g = np.zeros((ROWS, DIM), np.float32)
    np.add.at(g, np.asarray(indices), np.asarray(values, np.float32))
    return g


def _step(optimizer, variable, gradient):
    if not isinstance(gradient, tf.IndexedSlices):
        gradient = tf.constant(gradient)
    optimizer.apply_gradients([(gradient, variable)])
    return variable.numpy().copy()


def _pair(lazy, dense, init):
    a, b = keras.Variable(init), keras.Variable(init)
    lazy.build([a])
    dense.build([b])
    return a, b


def test_lazy_adam_first_step_equals_dense_adam():
    init = _init()
    lazy, dense = O.LazyAdam(learning_rate=0.1), keras.optimizers.Adam(learning_rate=0.1)
    a, b = _pair(lazy, dense, init)
    idx, vals = [1, 4], np.random.default_rng(1).normal(size=(2, DIM))
    got = _step(lazy, a, _slices(idx, vals))
    ref = _step(dense, b, _dense(idx, vals))
    np.testing.assert_allclose(got[idx], ref[idx], rtol=1e-6, atol=2e-6)  # float32 round-off of a 0.1 move
    assert not np.allclose(got[idx], init[idx])  # the touched rows moved
    untouched = [0, 2, 3, 5]
    np.testing.assert_array_equal(got[untouched], init[untouched])  # bit-identical
    np.testing.assert_array_equal(ref[untouched], init[untouched])  # dense Adam: m = v = 0 -> no move on step 1
    # first Adam step moves each coordinate by about lr * sign(g)
    np.testing.assert_allclose(init[idx] - got[idx], 0.1 * np.sign(vals), rtol=1e-4)


def test_lazy_adam_sums_duplicate_indices():
    init = _init(2)
    lazy, dense = O.LazyAdam(learning_rate=0.05), keras.optimizers.Adam(learning_rate=0.05)
    a, b = _pair(lazy, dense, init)
    idx = [3, 0, 3, 3]
    vals = np.array([[1.0, -2.0, 0.5], [0.2, 0.1, -0.3], [-0.4, 0.5, 0.5], [0.1, 0.1, 0.1]])
    for _ in range(2):  # after a second step the moments of the summed row matter, not only its sign
        got = _step(lazy, a, _slices(idx, vals))
        ref = _step(dense, b, _dense(idx, vals))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    m = lazy._momentums[lazy._get_variable_index(a)].numpy()
    g_summed = vals[[0, 2, 3]].sum(axis=0)
    beta_1 = 0.9
    np.testing.assert_allclose(m[3], (1 - beta_1) * g_summed * (1 + beta_1), rtol=1e-5)


def _numpy_lazy_adam(init, steps, lr, beta_1=0.9, beta_2=0.999, eps=1e-7):
    """Reference from the definition: a row (moments included) is updated only at steps where it is present.

    Keras/TF1 form of the bias correction: x -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps).
    """
    x = init.astype(np.float64).copy()
    m = np.zeros_like(x)
    v = np.zeros_like(x)
    for t, (idx, vals) in enumerate(steps, start=1):
        g = np.zeros_like(x)
        np.add.at(g, idx, vals)
        alpha = lr * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        for r in sorted(set(idx)):
            m[r] = beta_1 * m[r] + (1 - beta_1) * g[r]
            v[r] = beta_2 * v[r] + (1 - beta_2) * g[r] ** 2
            x[r] -= alpha * m[r] / (np.sqrt(v[r]) + eps)
    return x


def test_lazy_adam_multi_step_against_numpy_reference():
    init = _init(3)
    rng = np.random.default_rng(4)
    steps = [
        ([0, 2, 2], rng.normal(size=(3, DIM))),
        ([2, 5], rng.normal(size=(2, DIM))),
        ([0, 1], rng.normal(size=(2, DIM))),
    ]
    lazy = O.LazyAdam(learning_rate=0.1)
    a = keras.Variable(init)
    lazy.build([a])
    for idx, vals in steps:
        got = _step(lazy, a, _slices(idx, vals))
    ref = _numpy_lazy_adam(init, steps, 0.1)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    # rows 3 and 4 were never present: unchanged; row 0 absent at step 2 kept its moments (no decay)
    np.testing.assert_array_equal(got[[3, 4]], init[[3, 4]])
    # and the lazy result differs from dense Adam, which decays and applies absent rows' moments
    dense = keras.optimizers.Adam(learning_rate=0.1)
    b = keras.Variable(init)
    dense.build([b])
    for idx, vals in steps:
        dense_out = _step(dense, b, _dense(idx, vals))
    assert not np.allclose(dense_out[0], got[0], atol=1e-4)


def test_lazy_adagrad_equals_dense_adagrad_over_steps():
    init = _init(5)
    lazy = O.LazyAdagrad(learning_rate=0.3, initial_accumulator_value=0.1)
    dense = keras.optimizers.Adagrad(learning_rate=0.3, initial_accumulator_value=0.1)
    a, b = _pair(lazy, dense, init)
    rng = np.random.default_rng(6)
    for idx in ([0, 3], [3, 3, 5], [1], [0, 5, 1]):
        vals = rng.normal(size=(len(idx), DIM))
        got = _step(lazy, a, _slices(idx, vals))
        ref = _step(dense, b, _dense(idx, vals))
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got[[2, 4]], init[[2, 4]])


def test_lazy_sgd_equals_dense_sgd():
    init = _init(7)
    lazy, dense = O.LazySGD(learning_rate=0.5), keras.optimizers.SGD(learning_rate=0.5)
    a, b = _pair(lazy, dense, init)
    idx, vals = [2, 2, 4], np.ones((3, DIM))
    got = _step(lazy, a, _slices(idx, vals))
    np.testing.assert_allclose(got, _step(dense, b, _dense(idx, vals)), rtol=1e-6)
    np.testing.assert_allclose(got[2], init[2] - 1.0, rtol=1e-6)


@pytest.mark.parametrize("cls", [O.LazyAdam, O.LazyAdagrad, O.LazySGD])
def test_max_row_norm_clips_only_touched_rows(cls):
    init = _init(8)
    init *= 3.0 / np.linalg.norm(init, axis=1, keepdims=True)  # every row has norm 3
    opt = cls(learning_rate=0.01, max_row_norm=1.0)
    a = keras.Variable(init)
    opt.build([a])
    got = _step(opt, a, _slices([0, 2], np.full((2, DIM), 0.1)))
    norms = np.linalg.norm(got, axis=1)
    np.testing.assert_allclose(norms[[0, 2]], 1.0, rtol=1e-5)
    np.testing.assert_array_equal(got[[1, 3, 4, 5]], init[[1, 3, 4, 5]])  # untouched rows keep norm 3


def test_max_row_norm_leaves_short_rows_alone():
    init = _init(9) * 0.01
    opt = O.LazySGD(learning_rate=0.1, max_row_norm=1.0)
    a = keras.Variable(init)
    opt.build([a])
    got = _step(opt, a, _slices([1], np.ones((1, DIM))))
    np.testing.assert_allclose(got[1], init[1] - 0.1, rtol=1e-6)


@pytest.mark.parametrize(
    "lazy, dense",
    [
        (lambda: O.LazyAdam(learning_rate=0.1), lambda: keras.optimizers.Adam(learning_rate=0.1)),
        (
            lambda: O.LazyAdagrad(learning_rate=0.1, initial_accumulator_value=0.1),
            lambda: keras.optimizers.Adagrad(learning_rate=0.1, initial_accumulator_value=0.1),
        ),
    ],
)
def test_dense_gradient_takes_parent_path(lazy, dense):
    init = _init(10)
    lz, dn = lazy(), dense()
    a, b = _pair(lz, dn, init)
    g = np.zeros((ROWS, DIM), np.float32)
    g[1] = 1.0
    for _ in range(2):
        got = _step(lz, a, g)
        ref = _step(dn, b, g)
    np.testing.assert_array_equal(got, ref)
    if isinstance(lz, O.LazyAdam):
        # step 2 of dense Adam on a row with zero gradient still moves nothing (m stays 0); row 1 moved twice
        assert not np.allclose(got[1], init[1])


@pytest.mark.parametrize("name", ["adam", "adagrad", "sgd"])
def test_dense_optimizer_sums_repeated_rows_like_the_dense_gradient(name):
    # Row 1 is looked up three times, row 4 twice: the gradient is the sum of the slices. Keras' own Adam and
    # AdaGrad would square each slice (Σg² instead of (Σg)²): 0.12 (Adam) and 0.09 (AdaGrad) away after 3 steps.
    init = _init(3)
    idx = [1, 4, 1, 1, 4]
    vals = np.random.default_rng(4).normal(size=(5, DIM))
    a, b = keras.Variable(init), keras.Variable(init)
    sliced, dense = O.make_optimizer(name, 0.1, sparse=False), O.make_optimizer(name, 0.1, sparse=False)
    sliced.build([a])
    dense.build([b])
    for _ in range(3):
        got = _step(sliced, a, _slices(idx, vals))
        ref = _step(dense, b, _dense(idx, vals))
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    assert not np.allclose(got[[1, 4]], init[[1, 4]])


def test_lazy_adam_amsgrad_path_sums_repeated_rows():
    # amsgrad takes the parent (dense) path: it must see summed rows too
    init = _init(5)
    a, b = keras.Variable(init), keras.Variable(init)
    lazy, dense = O.LazyAdam(learning_rate=0.1, amsgrad=True), keras.optimizers.Adam(learning_rate=0.1, amsgrad=True)
    lazy.build([a])
    dense.build([b])
    idx, vals = [2, 2, 0], np.random.default_rng(6).normal(size=(3, DIM))
    for _ in range(2):
        got = _step(lazy, a, _slices(idx, vals))
        ref = _step(dense, b, _dense(idx, vals))
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


def test_make_optimizer_names_and_settings():
    adam = O.make_optimizer("adam", 1e-3)
    assert type(adam) is O.LazyAdam and adam.max_row_norm is None
    assert float(adam.learning_rate) == pytest.approx(1e-3)
    ada = O.make_optimizer("adagrad", 0.1, max_row_norm=1.0)
    assert type(ada) is O.LazyAdagrad and ada.max_row_norm == 1.0
    assert ada.initial_accumulator_value == pytest.approx(0.1)
    assert type(O.make_optimizer("sgd", 0.1)) is O.LazySGD
    assert type(O.make_optimizer("adam", 1e-3, sparse=False)) is O.DenseAdam
    dense_ada = O.make_optimizer("adagrad", 0.1, sparse=False)
    assert type(dense_ada) is O.DenseAdagrad and dense_ada.initial_accumulator_value == pytest.approx(0.1)
    assert type(O.make_optimizer("sgd", 0.1, sparse=False)) is O.DenseSGD
    for sparse in (True, False):
        with pytest.raises(ValueError, match="--optimizer: unknown optimizer 'rmsprop'"):
            O.make_optimizer("rmsprop", 0.1, sparse=sparse)


def test_config_roundtrip_keeps_max_row_norm():
    opt = O.LazyAdam(learning_rate=0.01, max_row_norm=1.0)
    clone = O.LazyAdam.from_config(opt.get_config())
    assert clone.max_row_norm == 1.0 and float(clone.learning_rate) == pytest.approx(0.01)


def test_summed_per_position_against_a_loop():
    """Each position carries the sum over every position of its index (the compiled lazy update's dedupe)."""
    rng = np.random.default_rng(4)
    indices = rng.integers(0, 6, 40)
    values = rng.normal(size=(40, 3)).astype(np.float32)
    expected = np.stack([values[indices == i].sum(axis=0) for i in indices])
    got = O._summed_per_position(tf.constant(indices, tf.int32), tf.constant(values)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_lazy_update_with_repeated_rows_is_one_update_per_row():
    """Repeated rows in one gradient move a row once, by the summed gradient, also compiled (scatter order free)."""
    table = tf.Variable(np.ones((5, 2), np.float32))
    opt = O.LazySGD(learning_rate=0.5)
    opt.build([table])
    slices = tf.IndexedSlices(tf.constant([[1.0, 0.0], [2.0, 0.0], [0.0, 4.0]]), tf.constant([3, 3, 1]), [5, 2])
    opt.apply_gradients([(slices, table)])
    np.testing.assert_allclose(table.numpy(), [[1, 1], [1, -1], [1, 1], [-0.5, 1], [1, 1]])


@pytest.mark.parametrize("cls", [O.LazyAdam, O.LazyAdagrad])
def test_lazy_updates_of_two_models_under_a_strategy_touch_only_their_own_slots(cls):
    """Under a tf.distribute strategy the optimizers hand over distributed slot variables: the compiled update must
    not keep the first model's (a shared compiled function that captured them moved model A's slots on B's step)."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        tables = [tf.Variable(np.ones((6, 3), np.float32)) for _ in range(2)]
        optimizers = [cls(learning_rate=0.1) for _ in range(2)]
        for opt, table in zip(optimizers, tables):
            opt.build([table])
    gradient = tf.IndexedSlices(tf.constant(np.full((3, 3), 2.0, np.float32)), tf.constant([1, 1, 4]), [6, 3])

    def step(opt, table):
        strategy.run(tf.function(lambda: opt.apply_gradients([(gradient, table)])))

    step(optimizers[0], tables[0])
    slots_a = [v.numpy().copy() for v in optimizers[0].variables[1:]]
    step(optimizers[1], tables[1])
    for before, after in zip(slots_a, optimizers[0].variables[1:]):
        np.testing.assert_array_equal(after.numpy(), before)  # B's step left A's slots alone
    for a, b in zip(optimizers[0].variables[1:], optimizers[1].variables[1:]):
        np.testing.assert_allclose(b.numpy(), a.numpy())  # and moved B's own the same way
    np.testing.assert_allclose(tables[1].numpy(), tables[0].numpy())
