"""The CML model on tiny tables: geometry, lazy-update sparsity, stage 2 on current embeddings, loss assembly, fit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

from cml_tf.models import CML
from cml_tf.sampling.pipeline import SamplerSpec, TrainingStream
from cml_tf.training.config import Config
from cml_tf.training.optimizers import make_optimizer
from cml_tf.training.run import build_model

N_USERS, N_ITEMS, DIM = 10, 16, 8


def _model(optimizer="adam", lr=1e-2, max_row_norm=None, **kw):
    kw.setdefault("embedding_dim", DIM)
    model = CML(kw.pop("n_users", N_USERS), kw.pop("n_items", N_ITEMS), **kw)
    model.compile(optimizer=make_optimizer(optimizer, lr, max_row_norm=max_row_norm))
    model.optimizer.build(model.trainable_variables)
    return model


def _batch(users, positives, negatives):
    return {
        "users": tf.constant(users, tf.int32),
        "positives": tf.constant(positives, tf.int32),
        "negatives": tf.constant(negatives, tf.int32),
    }


def _tiny_train(seed=0):
    """Two clusters of users and items: users 0-4 like items 0-7, users 5-9 like items 8-15 (about half each)."""
    rng = np.random.default_rng(seed)
    dense = np.zeros((N_USERS, N_ITEMS), np.float32)
    for u in range(N_USERS):
        block = np.arange(8) if u < 5 else np.arange(8, 16)
        dense[u, rng.choice(block, size=4, replace=False)] = 1
    return sp.csr_matrix(dense)


# ----------------------------------------------------------------------------------------- geometry
def test_sphere_vectors_are_unit_norm_and_call_scores():
    model = _model(geometry="sphere", init_stddev=3.0)
    u = model.user_vectors(tf.constant([0, 3, 3]))
    v = model.item_vectors(tf.constant([[1, 2], [5, 15], [0, 0]]))
    np.testing.assert_allclose(np.linalg.norm(u.numpy(), axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(v.numpy(), axis=-1), 1.0, rtol=1e-5)
    all_u, all_v = model.embeddings()
    np.testing.assert_allclose(np.linalg.norm(all_u.numpy(), axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(all_v.numpy(), axis=-1), 1.0, rtol=1e-5)
    scores = model({"users": tf.constant([0, 3]), "items": tf.constant([1, 5])}).numpy()
    ref = -np.sum((all_u.numpy()[[0, 3]] - all_v.numpy()[[1, 5]]) ** 2, axis=-1)
    np.testing.assert_allclose(scores, ref, rtol=1e-5)


def test_unknown_geometry_names_the_flag():
    with pytest.raises(ValueError, match="--geometry"):
        CML(3, 4, embedding_dim=2, geometry="torus")


def test_ball_geometry_with_lazy_max_norm_keeps_touched_rows_in_ball():
    config = Config(
        geometry="ball", embedding_dim=DIM, init_stddev=1.0, learning_rate=0.05, sampler="uniform", gor_weight=0.0
    )
    model = build_model(config, N_USERS, N_ITEMS + 4)  # items 16-19 are never in a batch
    assert model.optimizer.max_row_norm == 1.0
    # the model starts inside the ball; push every row out to see that exactly the touched rows are clipped back
    assert np.linalg.norm(model.item_embedding.embeddings.numpy(), axis=1).max() <= 1.0 + 1e-6
    rng = np.random.default_rng(0)
    for layer in (model.user_embedding, model.item_embedding):
        layer.embeddings.assign(rng.normal(size=layer.embeddings.shape).astype(np.float32) * 2)
    before = model.item_embedding.embeddings.numpy().copy()
    assert (np.linalg.norm(before, axis=1) > 1.0).all()
    stream = TrainingStream(_tiny_train(), SamplerSpec("uniform", batch_size=8, num_negatives=2), seed=0)
    ds = stream.dataset(0, 10)
    model.fit(stream.dataset(0), epochs=1, steps_per_epoch=10, verbose=0, shuffle=False)
    users = model.user_embedding.embeddings.numpy()
    items = model.item_embedding.embeddings.numpy()
    touched_items = set()
    touched_users = set()
    for e in ds:
        touched_users |= set(e["users"].numpy().tolist())
        touched_items |= set(e["positives"].numpy().tolist()) | set(e["negatives"].numpy().ravel().tolist())
    touched_items = sorted(touched_items)
    untouched_items = sorted(set(range(N_ITEMS + 4)) - set(touched_items))
    assert len(untouched_items) >= 4
    assert (np.linalg.norm(items[touched_items], axis=1) <= 1.0 + 1e-5).all()
    assert (np.linalg.norm(users[sorted(touched_users)], axis=1) <= 1.0 + 1e-5).all()
    np.testing.assert_array_equal(items[untouched_items], before[untouched_items])


# ----------------------------------------------------------------------------------------- sparsity
def test_gradients_are_indexed_slices_on_batch_rows_only():
    model = _model(geometry="sphere", gor_weight=0.1)
    users, pos, neg = [1, 4, 4], [2, 7, 3], [[9, 11], [12, 2], [5, 5]]
    with tf.GradientTape() as tape:
        terms = model.compute_losses(tf.constant(users), tf.constant(pos), tf.constant(neg))
    variables = model.trainable_variables
    grads = tape.gradient(terms["total"], variables)
    by_name = {v.path: g for v, g in zip(variables, grads)}
    g_user = next(g for k, g in by_name.items() if "user_embedding" in k)
    g_item = next(g for k, g in by_name.items() if "item_embedding" in k)
    assert isinstance(g_user, tf.IndexedSlices) and isinstance(g_item, tf.IndexedSlices)
    assert set(g_user.indices.numpy().tolist()) <= set(users)
    assert set(g_item.indices.numpy().tolist()) <= set(pos) | set(np.ravel(neg).tolist())


def test_train_step_leaves_rows_outside_the_batch_bit_identical():
    model = _model(geometry="sphere", gor_weight=0.1, margin=2.0)  # margin 2 on the sphere: hinge always active
    users_before = model.user_embedding.embeddings.numpy().copy()
    items_before = model.item_embedding.embeddings.numpy().copy()
    model.train_step(_batch([1, 4], [2, 7], [[9, 11], [12, 2]]))
    users_after = model.user_embedding.embeddings.numpy()
    items_after = model.item_embedding.embeddings.numpy()
    in_users, in_items = [1, 4], [2, 7, 9, 11, 12]
    out_users = [u for u in range(N_USERS) if u not in in_users]
    out_items = [i for i in range(N_ITEMS) if i not in in_items]
    np.testing.assert_array_equal(users_after[out_users], users_before[out_users])
    np.testing.assert_array_equal(items_after[out_items], items_before[out_items])
    assert not np.allclose(users_after[in_users], users_before[in_users])
    assert not np.allclose(items_after[in_items], items_before[in_items])
    assert int(model.optimizer.iterations) == 1


# ----------------------------------------------------------------------------------------- stage 2
def _set_items(model, table):
    model.item_embedding.embeddings.assign(np.asarray(table, np.float32))


def _stage2_table(best, d=32, n=N_ITEMS):
    """Item 0 = e1; item ``best`` has s = 0.99 with it; every other item has s = 0.05."""
    table = np.zeros((n, d))
    table[:, 0] = 0.05
    table[:, 1] = np.sqrt(1 - 0.05**2)
    table[0] = 0.0
    table[0, 0] = 1.0
    table[best] = 0.0
    table[best, 0] = 0.99
    table[best, 2] = np.sqrt(1 - 0.99**2)
    return table


def test_stage2_negatives_follow_current_embeddings():
    model = _model(geometry="sphere", embedding_dim=32, num_negatives=1)
    candidates = tf.constant([0, 3, 5, 9, 12], tf.int32)
    data = {
        "users": tf.constant([2, 2], tf.int32),
        "positives": tf.constant([0, 0], tf.int32),
        "candidates": candidates,
        "candidate_is_positive": tf.constant([[True, False, False, False, False]] * 2),
    }
    select = tf.function(model.select_negatives)  # a traced step must not freeze the table
    _set_items(model, _stage2_table(best=5))
    np.testing.assert_array_equal(select(data).numpy(), [[5], [5]])
    np.testing.assert_array_equal(model.select_negatives(data).numpy(), [[5], [5]])
    _set_items(model, _stage2_table(best=12))
    np.testing.assert_array_equal(select(data).numpy(), [[12], [12]])
    # the closest candidate marked positive for the user is never picked
    data_masked = dict(data, candidate_is_positive=tf.constant([[True, False, False, False, True]] * 2))
    assert not np.isin(select(data_masked).numpy(), [0, 12]).any()


def test_train_step_with_candidates_uses_stage2_on_current_vectors():
    model = _model(geometry="sphere", embedding_dim=32, num_negatives=1, margin=2.0)
    _set_items(model, _stage2_table(best=9))
    items_before = model.item_embedding.embeddings.numpy().copy()
    data = {
        "users": tf.constant([2], tf.int32),
        "positives": tf.constant([0], tf.int32),
        "candidates": tf.constant([3, 5, 9, 12], tf.int32),
        "candidate_is_positive": tf.constant([[False] * 4]),
    }
    model.train_step(data)
    moved = np.where(np.any(model.item_embedding.embeddings.numpy() != items_before, axis=1))[0]
    np.testing.assert_array_equal(moved, [0, 9])  # the positive and the stage-2 pick, nothing else


# ----------------------------------------------------------------------------------------- loss assembly
def _hand_setup(model):
    users = np.array([[1.0, 0.0], [0.0, 1.0]])
    items = np.array([[0.8, 0.6], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8], [0.0, -1.0]])
    model.user_embedding.embeddings.assign(users.astype(np.float32))
    model.item_embedding.embeddings.assign(items.astype(np.float32))
    return users, items


def test_compute_losses_total_is_hinge_plus_weighted_gor_hand():
    model = _model(n_users=2, n_items=5, embedding_dim=2, geometry="ball", margin=1.0, gor_weight=0.5)
    _hand_setup(model)
    # pairs: (u0, pos 0, neg {1, 2}), (u1, pos 1, neg {3, 4})
    # u0=(1,0): D²(pos0)=0.04+0.36=0.4, D²(i1)=2, D²(i2)=4 -> [0.4 - 2 + 1]_+ = 0
    # u1=(0,1): D²(pos1)=0, D²(i3)=0.36+0.04=0.4, D²(i4)=4 -> [0 - 0.4 + 1]_+ = 0.6
    # GOR dots: v0·v1=0.6, v0·v2=-0.8, v1·v3=0.8, v1·v4=-1 -> m1=-0.1, m2=(0.36+0.64+0.64+1)/4=0.66
    #   L = 0.01 + (0.66 - 0.5) = 0.17
    terms = model.compute_losses(tf.constant([0, 1]), tf.constant([0, 1]), tf.constant([[1, 2], [3, 4]]))
    assert float(terms["hinge"]) == pytest.approx(0.6, rel=1e-5)
    assert float(terms["gor"]) == pytest.approx(0.17, rel=1e-5)
    assert float(terms["total"]) == pytest.approx(0.6 + 0.5 * 0.17, rel=1e-5)


def test_rank_weight_option_changes_hinge_as_defined():
    kw = dict(n_users=2, n_items=5, embedding_dim=2, geometry="ball", margin=1.0)
    plain, warp = _model(**kw), _model(use_rank_weight=True, **kw)
    _hand_setup(plain)
    _hand_setup(warp)
    args = (tf.constant([0, 1]), tf.constant([0, 1]), tf.constant([[1, 2], [3, 4]]))
    # pair 1: impostors 0 - 0.4 + 1 > 0 yes, 0 - 4 + 1 no -> rank = 5 * 1/2 -> weight log(3.5)
    assert float(plain.compute_losses(*args)["hinge"]) == pytest.approx(0.6, rel=1e-5)
    assert float(warp.compute_losses(*args)["hinge"]) == pytest.approx(0.6 * np.log(3.5), rel=1e-5)


def test_covariance_option_adds_the_covariance_of_all_rows():
    kw = dict(n_users=2, n_items=5, embedding_dim=2, geometry="ball", margin=1.0)
    plain, cov = _model(**kw), _model(cov_loss_weight=2.0, **kw)
    users, items = _hand_setup(plain)
    _hand_setup(cov)
    args = (tf.constant([0, 1]), tf.constant([0, 1]), tf.constant([[1, 2], [3, 4]]))
    y = np.concatenate([items, users])
    c = np.cov(y, rowvar=False, bias=True)
    ref = (c[0, 1] ** 2 + c[1, 0] ** 2) / len(y)
    assert ref > 0
    extra = float(cov.compute_losses(*args)["total"]) - float(plain.compute_losses(*args)["total"])
    assert extra == pytest.approx(2.0 * ref, rel=1e-4)
    # the covariance term reads the whole tables: a step now moves rows outside the batch too
    before = cov.user_embedding.embeddings.numpy().copy()
    cov.train_step(_batch([0], [0], [[1, 2]]))
    assert not np.allclose(cov.user_embedding.embeddings.numpy()[1], before[1])


# ----------------------------------------------------------------------------------------- fit
@pytest.mark.parametrize(
    "sampler, extra",
    [
        ("2stage", dict(gor_weight=0.01)),
        ("uniform", dict(use_rank_weight=True, cov_loss_weight=0.1)),
    ],
)
def test_short_fit_decreases_loss(sampler, extra):
    model = _model(geometry="sphere", lr=0.05, num_negatives=2, margin=0.5, seed=1, **extra)
    spec = SamplerSpec(sampler, batch_size=8, num_negatives=2, num_candidates=8)
    stream = TrainingStream(_tiny_train(), spec, seed=0)
    first = model.evaluate(stream.dataset(0), steps=5, verbose=0, return_dict=True)["loss"]
    history = model.fit(stream.dataset(0), epochs=3, steps_per_epoch=20, verbose=0, shuffle=False).history["loss"]
    last = model.evaluate(stream.dataset(0), steps=5, verbose=0, return_dict=True)["loss"]
    assert np.isfinite(history).all()
    assert last < 0.7 * first, (first, history, last)


def test_dense_optimizer_first_step_matches_lazy_and_clips_whole_table():
    config = Config(geometry="ball", embedding_dim=DIM, init_stddev=1.0, learning_rate=0.05, gor_weight=0.0)
    lazy = build_model(config, N_USERS, N_ITEMS)
    dense = build_model(dataclasses.replace(config, sparse_updates=False), N_USERS, N_ITEMS)
    assert not hasattr(dense.optimizer, "max_row_norm")
    init = lazy.item_embedding.embeddings.numpy().copy()
    np.testing.assert_array_equal(dense.item_embedding.embeddings.numpy(), init)  # same seeded initialiser
    assert np.linalg.norm(init, axis=1).max() <= 1.0 + 1e-6  # both start inside the ball
    # push every row outside the ball, identically in both models
    init = (np.random.default_rng(0).normal(size=init.shape) * 2).astype(np.float32)
    for model in (lazy, dense):
        model.item_embedding.embeddings.assign(init)
    batch = _batch([1, 4], [2, 7], [[9, 11], [12, 2]])
    lazy.train_step(batch)
    dense.train_step(batch)
    a, b = lazy.item_embedding.embeddings.numpy(), dense.item_embedding.embeddings.numpy()
    rows = [2, 7, 9, 11, 12]
    np.testing.assert_allclose(a[rows], b[rows], rtol=1e-5, atol=1e-5)  # both clipped to the ball
    np.testing.assert_allclose(np.linalg.norm(a[rows], axis=1), 1.0, rtol=1e-5)
    # MaxNorm constrains the whole table with the dense optimizer; the lazy one left the other rows alone
    others = [i for i in range(N_ITEMS) if i not in rows]
    np.testing.assert_array_equal(a[others], init[others])
    assert (np.linalg.norm(b, axis=1) <= 1.0 + 1e-5).all()


def test_stage2_seed_changes_with_the_step():
    model = _model(geometry="sphere", embedding_dim=DIM, num_negatives=1, seed=3)
    cands = tf.range(N_ITEMS, dtype=tf.int32)
    data = {
        "users": tf.zeros([64], tf.int32),
        "positives": tf.zeros([64], tf.int32),
        "candidates": cands,
        # the positive itself (s = 1) is marked, as the pipeline's mask always does
        "candidate_is_positive": tf.tile(tf.range(N_ITEMS)[None, :] == 0, [64, 1]),
    }
    first = model.select_negatives(data).numpy()
    np.testing.assert_array_equal(first, model.select_negatives(data).numpy())  # same step, same draws
    model.optimizer.iterations.assign(1)
    assert not np.array_equal(first, model.select_negatives(data).numpy())


def _stage2_picks(model, rows=400):
    """Stage 2's first pick per row for positive item 0 over candidates 1..N_ITEMS-1 (uncapped: the hardest
    candidate wins)."""
    data = {
        "users": tf.zeros([rows], tf.int32),
        "positives": tf.zeros([rows], tf.int32),
        "candidates": tf.range(1, N_ITEMS, dtype=tf.int32),
        "candidate_is_positive": tf.zeros([rows, N_ITEMS - 1], tf.bool),
    }
    return model.select_negatives(data).numpy()[:, 0]


def _copy_item_zero_into(model, row):
    """Makes item ``row`` (almost) the positive item 0 in the CURRENT table: the hardest candidate by far."""
    table = model.item_embedding.embeddings.numpy()
    table[row] = table[0] + 1e-4
    model.item_embedding.embeddings.assign(table)


@pytest.mark.parametrize("num", [1, 5])
@pytest.mark.parametrize("refresh", [0, -1, 5])
def test_stage2_reads_current_or_snapshot_table(refresh, num):
    model = _model(embedding_dim=64, num_negatives=num, stage2_weight_cap=None, stage2_refresh_every=refresh, seed=4)
    initial = model.item_embedding.embeddings.numpy().copy()
    before = _stage2_picks(model)
    assert np.mean(before == 7) < 0.5  # at initialisation item 7 is not the hardest candidate
    _copy_item_zero_into(model, 7)
    model.optimizer.iterations.assign(3)
    picks = _stage2_picks(model)
    if refresh == 0:
        # the default reads the current table at every step: the new hardest candidate, always
        assert model.stage2_snapshot is None
        assert (picks == 7).all()
    else:
        # a snapshot mode reads the stale copy made at initialisation (step 3 is no refresh step for K = 5)
        np.testing.assert_array_equal(model.stage2_snapshot.numpy(), initial)
        assert np.mean(picks == 7) < 0.5
        np.testing.assert_array_equal(picks, _stage2_picks(model))
    model.optimizer.iterations.assign(5)
    picks = _stage2_picks(model)
    if refresh == 5:  # step 5 refreshes the copy before reading it
        np.testing.assert_array_equal(model.stage2_snapshot.numpy(), model.item_embedding.embeddings.numpy())
        assert (picks == 7).all()
    elif refresh == -1:  # never refreshed
        np.testing.assert_array_equal(model.stage2_snapshot.numpy(), initial)
        assert np.mean(picks == 7) < 0.5


def test_stage2_snapshot_is_checkpointed(tmp_path):
    model = _model(num_negatives=1, stage2_refresh_every=-1, seed=2)
    saved = model.stage2_snapshot.numpy().copy()
    checkpoint = tf.train.Checkpoint(model=model)
    path = checkpoint.save(str(tmp_path / "ckpt"))
    model.stage2_snapshot.assign(np.zeros_like(saved))
    checkpoint.restore(path).assert_existing_objects_matched()
    np.testing.assert_array_equal(model.stage2_snapshot.numpy(), saved)
    assert model.get_config()["stage2_refresh_every"] == -1


# ------------------------------------------------------------------------------------ sampled softmax and DNS
def _softmax_reference(U, V, users, positives, pool, excluded, log_q_pos, log_q_pool, tau):
    """Loss and dL/dU, dL/dV of the sampled softmax written from its definition with plain numpy (raw rows)."""
    loss, gU, gV = 0.0, np.zeros_like(U), np.zeros_like(V)
    for b, (user, pos) in enumerate(zip(users, positives)):
        items = [pos] + [j for m, j in enumerate(pool) if not excluded[b, m]]
        lq = [log_q_pos[b]] + [log_q_pool[m] for m in range(len(pool)) if not excluded[b, m]]
        z = np.array([-((U[user] - V[j]) ** 2).sum() / tau - q for j, q in zip(items, lq)])
        soft = np.exp(z - z.max())
        soft /= soft.sum()
        loss += np.log(np.exp(z - z.max()).sum()) + z.max() - z[0]
        for k, j in enumerate(items):
            coef = soft[k] - (1.0 if k == 0 else 0.0)  # dL/dz_k
            # z_k = -|u - v_j|² / τ: dz/du = -2 (u - v_j) / τ, dz/dv_j = 2 (u - v_j) / τ
            gU[user] += coef * -2 * (U[user] - V[j]) / tau
            gV[j] += coef * 2 * (U[user] - V[j]) / tau
    return loss, gU, gV


def _softmax_data(users, positives, candidates, cand_pos, batch_pos, lq_items):
    data = {
        "users": tf.constant(users, tf.int32),
        "positives": tf.constant(positives, tf.int32),
        "candidates": tf.constant(candidates, tf.int32),
        "candidate_is_positive": tf.constant(cand_pos),
        "candidate_log_q": tf.constant(lq_items[candidates], tf.float32),
        "positive_log_q": tf.constant(lq_items[positives], tf.float32),
    }
    if batch_pos is not None:
        data["batch_is_positive"] = tf.constant(batch_pos)
        data["batch_log_q"] = tf.constant(np.broadcast_to(lq_items[positives], batch_pos.shape), tf.float32)
    return data


def test_softmax_loss_and_gradients_against_the_definition():
    model = _model(geometry="ball", loss="softmax", temperature=0.7, init_stddev=0.5, seed=3)
    users, positives = np.array([0, 1, 1]), np.array([2, 3, 5])
    candidates = np.array([1, 3, 4, 7, 9])
    cand_pos = np.array([[0, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 1, 0, 0, 1]], bool)  # user 1 holds 3 (and 9, say)
    batch_pos = np.array([[1, 0, 0], [0, 1, 1], [0, 1, 1]], bool)  # rows 1, 2 share their user: 3 and 5 are hers
    lq_items = np.linspace(-2.0, -0.5, N_ITEMS)
    data = _softmax_data(users, positives, candidates, cand_pos, batch_pos, lq_items)
    variables = [model.user_embedding.embeddings, model.item_embedding.embeddings]
    with tf.GradientTape() as tape:
        terms = model.compute_softmax_losses(data)
    gU, gV = (tf.convert_to_tensor(g).numpy() for g in tape.gradient(terms["total"], variables))
    U, V = (v.numpy().astype(np.float64) for v in variables)
    pool = np.concatenate([candidates, positives])
    excluded = np.concatenate([cand_pos, batch_pos], axis=1)
    ref_loss, ref_gU, ref_gV = _softmax_reference(
        U, V, users, positives, pool, excluded, lq_items[positives], lq_items[pool], 0.7
    )
    assert terms["total"].numpy() == pytest.approx(ref_loss, rel=1e-5)
    np.testing.assert_allclose(gU, ref_gU, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gV, ref_gV, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("geometry", ["sphere", "ball"])
@pytest.mark.parametrize("in_batch", [False, True])
def test_fused_softmax_step_against_the_definition(geometry, in_batch):
    """The XLA-compiled softmax on looked-up rows (`_fused_softmax_gradients`): the definition's loss and gradients,
    with repeated positives, a positive among the candidates, and masked candidates."""
    model = _model(geometry=geometry, loss="softmax", temperature=0.7, init_stddev=0.5, seed=3)
    users, positives = np.array([0, 1, 1, 4]), np.array([2, 3, 5, 3])  # item 3 twice, and a candidate
    candidates = np.array([1, 3, 4, 7, 9])
    cand_pos = np.array([[0, 0, 0, 0, 0], [0, 1, 0, 0, 1], [0, 1, 0, 0, 1], [0, 1, 0, 0, 0]], bool)
    batch_pos = np.array([[1, 0, 0, 0], [0, 1, 1, 1], [0, 1, 1, 1], [0, 1, 0, 1]], bool) if in_batch else None
    lq_items = np.linspace(-2.0, -0.5, N_ITEMS)
    data = _softmax_data(users, positives, candidates, cand_pos, batch_pos, lq_items)
    assert model._fused_softmax(data)
    gradients, terms = model._fused_softmax_gradients(data)
    assert all(isinstance(g, tf.IndexedSlices) for g in gradients)  # row slices: the lazy optimizer's O(batch) path
    gU, gV = (tf.convert_to_tensor(g).numpy() for g in gradients)
    U, V = (v.numpy().astype(np.float64) for v in model.trainable_variables)
    pool, excluded = candidates, cand_pos
    if in_batch:
        pool, excluded = np.concatenate([candidates, positives]), np.concatenate([cand_pos, batch_pos], axis=1)
    if geometry == "sphere":  # the definition on the unit vectors, chained through the normalisation by hand
        nu, nv = np.linalg.norm(U, axis=1, keepdims=True), np.linalg.norm(V, axis=1, keepdims=True)
        ref_loss, gu, gv = _softmax_reference(
            U / nu, V / nv, users, positives, pool, excluded, lq_items[positives], lq_items[pool], 0.7
        )
        ref_gU = (gu - (U / nu) * np.sum(gu * U / nu, axis=1, keepdims=True)) / nu
        ref_gV = (gv - (V / nv) * np.sum(gv * V / nv, axis=1, keepdims=True)) / nv
    else:
        ref_loss, ref_gU, ref_gV = _softmax_reference(
            U, V, users, positives, pool, excluded, lq_items[positives], lq_items[pool], 0.7
        )
    assert terms["total"].numpy() == pytest.approx(ref_loss, rel=1e-5)
    np.testing.assert_allclose(gU, ref_gU, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gV, ref_gV, rtol=1e-4, atol=1e-6)


def test_train_step_takes_the_fused_softmax_only_where_it_is_exact():
    lq = np.zeros(N_ITEMS)
    data = _softmax_data([0, 1], [2, 3], [4, 5, 6], np.zeros((2, 3), bool), None, lq)
    fused = _model(loss="softmax", seed=1)
    fused.train_step(data)
    assert fused._softmax_on_rows_fn is not None  # the step went through the compiled function
    for kw in ({"gor_weight": 0.1}, {"cov_loss_weight": 0.1}):
        model = _model(loss="softmax", seed=1, **kw)
        assert not model._fused_softmax(data), kw
        model.train_step(data)
        assert model._softmax_on_rows_fn is None, kw
    with_negatives = {**data, "negatives": tf.constant([[7], [8]]), "negative_log_q": tf.zeros([2, 1])}
    assert not fused._fused_softmax(with_negatives)
    assert not _model(loss="hinge")._fused_softmax(data)
    # one step of each path from the same weights moves them the same way
    generic = _model(loss="softmax", seed=1, gor_weight=1e-12)  # any GOR weight: the generic path
    twin = _model(loss="softmax", seed=1)
    generic.train_step(data)
    twin.train_step(data)
    for a, b in zip(generic.trainable_variables, twin.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def _fused_like_generic(model, data) -> list:
    """Asserts that the fused softmax step of ``model`` on ``data`` gives the generic taped path's loss and gradients
    (every trainable variable); returns the fused gradients."""
    assert model._fused_softmax(data)
    gradients, terms = model._fused_softmax_gradients(data)
    with tf.GradientTape() as tape:
        generic = model.compute_softmax_losses(data)["total"]
    expected = tape.gradient(generic, model.trainable_variables)
    assert terms["total"].numpy() == pytest.approx(generic.numpy(), rel=1e-5)
    for got, want in zip(gradients, expected, strict=True):
        np.testing.assert_allclose(
            tf.convert_to_tensor(got).numpy(), tf.convert_to_tensor(want).numpy(), rtol=1e-4, atol=1e-6
        )
    return gradients


def test_fused_softmax_learns_the_temperature_like_the_generic_path():
    lq = np.linspace(-2.0, -0.5, N_ITEMS)
    data = _softmax_data(
        [0, 1, 1], [2, 3, 5], [1, 3, 4, 7], np.array([[0] * 4, [0, 1, 0, 0], [0, 1, 0, 0]], bool), None, lq
    )
    fused = _model(loss="softmax", temperature=0.3, learn_temperature=True, lr=0.1, seed=1)
    gradients = _fused_like_generic(fused, data)
    index = [id(v) for v in fused.trainable_variables].index(id(fused.log_temperature))
    assert abs(float(gradients[index])) > 0  # the comparison above is not vacuous for log τ


def test_learned_temperature_is_trained():
    model = _model(loss="softmax", temperature=0.2, learn_temperature=True, lr=0.1, seed=1)
    assert model.log_temperature is not None and model.log_temperature in model.trainable_variables
    data = {
        "users": tf.constant([0, 1], tf.int32),
        "positives": tf.constant([2, 3], tf.int32),
        "candidates": tf.constant([4, 5, 6], tf.int32),
        "candidate_is_positive": tf.zeros([2, 3], tf.bool),
        "candidate_log_q": tf.zeros([3]),
        "positive_log_q": tf.zeros([2]),
    }
    before = float(model.log_temperature.numpy())
    model.train_step(data)
    assert float(model.log_temperature.numpy()) != pytest.approx(before)
    assert model.get_config()["loss"] == "softmax" and model.get_config()["learn_temperature"]


def test_dns_keeps_the_closest_of_each_pool():
    model = _model(seed=5)
    users = tf.constant([0, 1], tf.int32)
    pool = tf.constant([[[3, 4, 5], [6, 7, 8]], [[9, 10, 11], [12, 13, 14]]], tf.int32)  # [B=2, N=2, k=3]
    picked = model._hardest_of_pools(users, tf.constant([1, 2], tf.int32), pool).numpy()
    u, v = (t.numpy() for t in model.embeddings())
    for b in range(2):
        for n in range(2):
            d = ((u[b] - v[pool.numpy()[b, n]]) ** 2).sum(-1)
            assert picked[b, n] == pool.numpy()[b, n, np.argmin(d)]
    assert np.array_equal(model.select_negatives({"users": users, "positives": users, "negative_pool": pool}), picked)


# ----------------------------------------------------------------------------------------- the user tower
@pytest.mark.parametrize("geometry", ["sphere", "ball"])
def test_user_tower_against_the_definition(geometry):
    """A user is geometry((1 − g)·geometry(u) + g·mean_j geometry(v_j)) over a seeded sample of at most P of its
    training items, in training (user_vectors) and in ranking (embeddings) alike; a user without items is its row."""
    train = _tiny_train().tolil()
    train[9, :] = 0  # user 9 has no training item
    train = train.tocsr()
    model = _model(geometry=geometry, init_stddev=0.5, seed=3, user_history=train, user_history_weight=0.3)
    model_p3 = _model(
        geometry=geometry, init_stddev=0.5, seed=3, user_history=train, user_history_weight=0.3, user_history_size=3
    )
    U, V = (v.numpy().astype(np.float64) for v in model.trainable_variables)
    geo = (lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)) if geometry == "sphere" else (lambda x: x)
    for m, size in ((model, 50), (model_p3, 3)):
        ids, valid = m.history_ids.numpy(), m.history_valid.numpy()
        want = np.empty_like(U)
        for u in range(N_USERS):
            history = ids[u][valid[u]]
            assert set(history) <= set(train[u].indices) and len(history) == min(size, train[u].nnz)
            mean = geo(V[history]).mean(axis=0) if len(history) else np.zeros(DIM)
            want[u] = geo(0.7 * geo(U[u]) + 0.3 * mean) if len(history) else geo(0.7 * geo(U[u]))
        got = m.user_vectors(tf.range(N_USERS)).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(m.embeddings()[0].numpy(), want, rtol=1e-5, atol=1e-6)
    assert model_p3.history_valid.numpy().sum(axis=1).max() == 3  # the sample is cut at P
    np.testing.assert_allclose(want[9], geo(0.7 * geo(U[9])), rtol=1e-5)


def test_user_tower_fused_softmax_step_matches_the_generic_path():
    lq = np.linspace(-2.0, -0.5, N_ITEMS)
    data = _softmax_data(
        [0, 1, 1, 6],
        [2, 3, 5, 9],
        [1, 3, 4, 7, 12],
        np.array([[0] * 5, [0, 1, 0, 0, 0], [0, 1, 0, 0, 0], [0] * 5], bool),
        None,
        lq,
    )
    model = _model(
        loss="softmax", temperature=0.5, init_stddev=0.5, seed=1, user_history=_tiny_train(), user_history_weight=0.5
    )
    gradients = _fused_like_generic(model, data)
    # the history items get gradient: item rows outside the batch's positives and pool move too
    g_items = tf.convert_to_tensor(gradients[1]).numpy()
    ids, valid = model.history_ids.numpy()[[0, 1, 6]], model.history_valid.numpy()[[0, 1, 6]]
    history_only = set(ids[valid]) - {2, 3, 5, 9, 1, 4, 7, 12}
    assert history_only and all(np.abs(g_items[j]).sum() > 0 for j in history_only)
