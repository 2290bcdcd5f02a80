"""CML+F: citeulike-t tag features against a plain-Python reference of CollMetric's utils.citeulike, and the
feature projection (shape, scale-then-clip, gradient scale, dropout, item initialisation)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.sparse as sp

from cml_tf.data.interactions import DataError
from cml_tf.data.loaders.citeulike import load_tag_features

N_ITEMS_CITEULIKE_T = 25975


def _reference_tags(path, threshold, original=True):
    """Plain Python, as utils.citeulike: (item, tag) flags of every line with enough tokens."""
    flags, n_tags = set(), 0
    with open(path) as f:
        for line in f.readlines():
            items = line.strip().split(" ") if original else line.split()[1:]
            if len(items) >= threshold:
                for i in items:
                    flags.add((int(i), n_tags))
                n_tags += 1
    return flags, n_tags


def _flags(m):
    coo = m.tocoo()
    return set(zip(coo.row.tolist(), coo.col.tolist()))


@pytest.mark.parametrize("threshold", [5, 10])
def test_tag_features_match_the_original_on_citeulike_t(shared_data, threshold):
    directory = os.path.join(shared_data, "citeulike-t")
    m = load_tag_features(directory, N_ITEMS_CITEULIKE_T, min_count=threshold)
    flags, n_tags = _reference_tags(os.path.join(directory, "tag-item.dat"), threshold)
    assert isinstance(m, sp.csr_matrix) and m.dtype == np.float32
    assert m.shape == (N_ITEMS_CITEULIKE_T, n_tags)
    assert np.all(m.data == 1)
    assert _flags(m) == flags
    if threshold == 5:
        assert n_tags == 10403  # what CML.py prints: "10403 features over tag_occurence_thres (5)"


def test_tag_features_intended_reading_skips_the_count(shared_data):
    directory = os.path.join(shared_data, "citeulike-t")
    m = load_tag_features(os.path.join(directory, "users.dat"), N_ITEMS_CITEULIKE_T, min_count=5, original=False)
    flags, n_tags = _reference_tags(os.path.join(directory, "tag-item.dat"), 5, original=False)
    assert m.shape == (N_ITEMS_CITEULIKE_T, n_tags) and _flags(m) == flags


def test_tag_features_quirk_and_errors(tmp_path):
    (tmp_path / "users.dat").write_text("1 0\n1 5\n")
    (tmp_path / "tag-item.dat").write_text("3 0 1 5\n1 2\n2 3 4\n")
    m = load_tag_features(str(tmp_path), 6, min_count=3)  # tokens incl. the count: 4, 2, 3 -> tags 0 and 2 kept
    assert m.shape == (6, 2)
    assert _flags(m) == {(3, 0), (0, 0), (1, 0), (5, 0), (2, 1), (3, 1), (4, 1)}
    m = load_tag_features(str(tmp_path), 6, min_count=3, original=False)
    assert m.shape == (6, 1) and _flags(m) == {(0, 0), (1, 0), (5, 0)}
    with pytest.raises(DataError, match="outside the 5-item catalog"):
        load_tag_features(str(tmp_path), 5, min_count=3)
    os.unlink(tmp_path / "tag-item.dat")
    with pytest.raises(DataError, match="tag-item.dat"):
        load_tag_features(str(tmp_path), 6)


# ---------------------------------------------------------------------------------------------- projection
def _features(n_items=40, n_features=30, seed=0):
    return sp.random(n_items, n_features, density=0.2, format="csr", random_state=seed, dtype=np.float32)


def _numpy_projection(layer, x, scale, clip):
    h = np.maximum(x @ layer.hidden.kernel.numpy() + layer.hidden.bias.numpy(), 0)
    y = (h @ layer.out.kernel.numpy() + layer.out.bias.numpy()) * scale
    norms = np.linalg.norm(y, axis=1, keepdims=True)
    return y * np.minimum(1.0, clip / np.maximum(norms, 1e-12))


@pytest.mark.parametrize("scale, clip", [(1.0, 1.1), (5.0, 1.0), (1e-3, 1.0)])
def test_projection_scales_then_clips(scale, clip):
    from cml_tf.models.features import ItemFeatureProjection

    x = _features()
    layer = ItemFeatureProjection(x, 8, hidden_dim=16, dropout=0.3, scale=scale, clip_norm=clip, seed=3)
    y = layer(training=False).numpy()
    assert y.shape == (40, 8)
    np.testing.assert_allclose(y, _numpy_projection(layer, x.toarray(), scale, clip), rtol=1e-4, atol=1e-6)
    norms = np.linalg.norm(y, axis=1)
    assert np.all(norms <= clip * (1 + 1e-5))
    if scale == 5.0:
        np.testing.assert_allclose(norms[norms > 1e-3], clip, rtol=1e-5)  # large outputs land on the bound


def test_projection_gradient_scale_and_dropout():
    import tensorflow as tf

    from cml_tf.models.features import ItemFeatureProjection

    x = _features()
    target = tf.constant(np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32))
    grads = {}
    for g in (None, 1.0):
        layer = ItemFeatureProjection(x, 8, hidden_dim=16, dropout=0.0, scale=1.0, gradient_scale=g, seed=3)
        with tf.GradientTape() as tape:
            y = layer(training=True)
            loss = tf.reduce_sum(tf.square(y - target))
        grads[g] = [t.numpy() for t in tape.gradient(loss, layer.trainable_variables)]
        assert layer.gradient_scale == (1.0 / 40 if g is None else 1.0)
    for scaled, full in zip(grads[None], grads[1.0]):
        np.testing.assert_allclose(scaled, full / 40, rtol=1e-4, atol=1e-8)
    layer = ItemFeatureProjection(x, 8, hidden_dim=16, dropout=0.5, seed=3)
    # no dropout at inference: exactly the projection computed without it
    np.testing.assert_allclose(
        layer(training=False).numpy(), _numpy_projection(layer, x.toarray(), 1.0, 1.0), rtol=1e-4, atol=1e-6
    )
    assert not np.allclose(layer(training=True).numpy(), layer(training=False).numpy())
    with pytest.raises(ValueError, match="dropout"):
        ItemFeatureProjection(x, 8, dropout=1.0)


def test_items_initialised_from_projection():
    from cml_tf.models import CML
    from cml_tf.models.features import initialise_items_from_features

    x = _features()
    model = CML(10, 40, embedding_dim=8, geometry="ball", item_features=x, feature_hidden_dim=16)
    initialise_items_from_features(model)
    np.testing.assert_allclose(
        model.item_embedding.embeddings.numpy(), model.feature_projection(training=False).numpy(), rtol=1e-6
    )
