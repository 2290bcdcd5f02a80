"""The relational models (`cml_tf.models`): relations and attention against slow references written from the
definitions, TransCF's neighbourhood means, chunked ranking, planted structure, the command line per model."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf
from helpers import ROOT, kill_training, run_command, synthetic_config

from cml_tf import training
from cml_tf.evaluation.evaluator import Evaluator
from cml_tf.evaluation.scores import block_scores
from cml_tf.models import HLR, MODELS, TransCF
from cml_tf.models import relations as R
from cml_tf.training.config import Config
from cml_tf.training.outputs import RunError, check_same_run, read_metrics_csv

RELATIONAL = ("lrml", "transcf", "attcml", "hlr")


def softmax(x):
    e = np.exp(x - np.max(x))
    return e / e.sum()


def small_train(n_users=7, n_items=9, seed=0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    m = (rng.random((n_users, n_items)) < 0.4).astype(np.float32)
    m[0] = 0  # a user without training items
    m[1, :] = 1  # a user with every item
    return sp.csr_matrix(m)


def make(name, train, d=4, **kw):
    extra = {} if name == "cml" else {"train": train}
    if name in ("attcml", "hlr"):
        extra["max_num_prefs"] = kw.pop("max_num_prefs", 3)
    if name in ("lrml", "hlr"):
        extra["num_memories"] = kw.pop("num_memories", 5)
    return MODELS[name](*train.shape, embedding_dim=d, geometry="ball", seed=3, **extra, **kw)


# ------------------------------------------------------------------------------------------ neighbourhood tables
def test_reference_items_are_a_seeded_sample_of_each_users_items_padded_and_masked():
    train = small_train()
    items, mask = R.reference_items(train, 3, seed=5)
    assert items.shape == mask.shape == (7, 3)
    for u in range(7):
        row = set(train[u].indices)
        got = items[u][mask[u]]
        assert len(got) == min(3, len(row)) and len(set(got)) == len(got)
        assert set(got) <= row
        assert np.all(items[u][~mask[u]] == 0)
    again, _ = R.reference_items(train, 3, seed=5)
    np.testing.assert_array_equal(items, again)
    other, _ = R.reference_items(train, 3, seed=6)
    assert not np.array_equal(items[1], other[1])  # user 1 has 9 items: another seed, another sample


def test_mean_operator_gives_each_rows_neighbour_mean():
    train = small_train()
    x = np.random.default_rng(1).normal(size=(9, 4)).astype(np.float32)
    got = tf.sparse.sparse_dense_matmul(R.mean_operator(train), x).numpy()
    for u in range(7):
        cols = train[u].indices
        want = x[cols].mean(0) if len(cols) else np.zeros(4)
        np.testing.assert_allclose(got[u], want, rtol=1e-5, atol=1e-6)


def test_transcf_neighbour_means_from_the_current_tables():
    train = small_train()
    model = make("transcf", train)
    users, items = (t.numpy() for t in model.embeddings())
    user_means, item_means = (t.numpy() for t in model.neighbour_means())
    for u in range(7):
        cols = train[u].indices
        np.testing.assert_allclose(user_means[u], items[cols].mean(0) if len(cols) else 0, atol=1e-6)
    csc = train.tocsc()
    for i in range(9):
        rows = csc[:, i].indices
        np.testing.assert_allclose(item_means[i], users[rows].mean(0) if len(rows) else 0, atol=1e-6)
    # the relation of a pair is the product of the two means
    r = model.relation(tf.constant([2]), None, tf.constant([[4, 5]]), None).numpy()
    np.testing.assert_allclose(r[0], user_means[2] * item_means[[4, 5]], atol=1e-6)


def test_transcf_regularisers_by_hand():
    train = small_train()
    model = make("transcf", train, neighbour_weight=0.3, distance_weight=0.7)
    users, pos, neg = tf.constant([2, 3]), tf.constant([1, 4]), tf.constant([[5], [6]])
    u, p, n = model.user_vectors(users), model.item_vectors(pos), model.item_vectors(neg)
    um, im = (t.numpy() for t in model.neighbour_means())
    u_, p_, n_ = u.numpy(), p.numpy(), n.numpy()
    nbr = ((u_ - um[[2, 3]]) ** 2).sum() + ((p_ - im[[1, 4]]) ** 2).sum() + ((n_ - im[[[5], [6]]]) ** 2).sum()
    dist = ((u_ + um[[2, 3]] * im[[1, 4]] - p_) ** 2).sum()
    got = float(model.extra_loss(users, u, pos, p, neg, n))
    assert got == pytest.approx(0.3 * nbr + 0.7 * dist, rel=1e-5)


# ------------------------------------------------------------------------------------------ relations, attention
def test_lram_against_the_definition():
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(2, 4)), rng.normal(size=(2, 3, 4))
    keys, memories = rng.normal(size=(4, 5)), rng.normal(size=(5, 4))
    r, att = (t.numpy() for t in R.lram(*(tf.constant(x, tf.float32) for x in (u, v, keys, memories))))
    for b in range(2):
        for j in range(3):
            a = softmax((u[b] * v[b, j]) @ keys)
            np.testing.assert_allclose(att[b, j], a, rtol=1e-5)
            np.testing.assert_allclose(r[b, j], a @ memories, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(att.sum(-1), 1.0, rtol=1e-6)


def test_preference_attention_by_hand():
    # one user, two valid references (1, 0) and (0, 1), one padded; target v = (ln 3, 0): weights 3/4, 1/4
    prefs = tf.constant([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]]])
    mask = tf.constant([[True, True, False]])
    v = tf.constant([[[np.log(3.0), 0.0]]], tf.float32)
    r, w = R.preference_attention(v, prefs, mask)
    np.testing.assert_allclose(w.numpy()[0, 0], [0.75, 0.25, 0.0], rtol=1e-6)
    np.testing.assert_allclose(r.numpy()[0, 0], [0.75, 0.25], rtol=1e-6)
    # a user without a valid reference gets no translation
    r0, w0 = R.preference_attention(v, prefs, tf.zeros_like(mask))
    assert not np.any(r0.numpy()) and not np.any(w0.numpy())


def slow_hlr(u, v, refs, mask, keys, memories):
    """HLR-E's relation of one pair, from the definition: a relation per reference, attended by the user."""
    rel = np.stack([softmax((v * x) @ keys) @ memories for x in refs])  # [P, d]
    logits = rel @ u
    a = np.where(mask, np.exp(logits - logits[mask].max()), 0.0)
    a /= a.sum()
    return a @ rel, a


def test_hierarchical_relation_against_the_definition_and_block_form():
    rng = np.random.default_rng(2)
    b, n, p, d, m = 2, 3, 4, 5, 6
    u, v, refs = rng.normal(size=(b, d)), rng.normal(size=(b, n, d)), rng.normal(size=(b, p, d))
    mask = np.array([[True, True, False, True], [True, False, False, False]])
    keys, memories = rng.normal(size=(d, m)), rng.normal(size=(m, d))
    c = [tf.constant(x, tf.float32) for x in (u, v, refs)]
    r, w = R.hierarchical_relation(
        *c, tf.constant(mask), tf.constant(keys, tf.float32), tf.constant(memories, tf.float32)
    )
    r, w = r.numpy(), w.numpy()
    for i in range(b):
        for j in range(n):
            want_r, want_a = slow_hlr(u[i], v[i, j], refs[i], mask[i], keys, memories)
            np.testing.assert_allclose(r[i, j], want_r, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(w[i, j], want_a, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
    assert np.all(w[~np.broadcast_to(mask[:, None, :], w.shape)] == 0)
    # ranking form: the same items for every user, keys folded once
    items = rng.normal(size=(n, d))
    folded = R.reference_keys(c[2], tf.constant(keys, tf.float32))
    block = R.hierarchical_block_relation(
        c[0], tf.constant(items, tf.float32), folded, tf.constant(mask), tf.constant(memories, tf.float32)
    ).numpy()
    pairwise, _ = R.hierarchical_relation(
        c[0], tf.constant(np.broadcast_to(items, (b, n, d)), tf.float32), c[2], tf.constant(mask),
        tf.constant(keys, tf.float32), tf.constant(memories, tf.float32),
    )  # fmt: skip
    np.testing.assert_allclose(block, pairwise.numpy(), rtol=1e-4, atol=1e-5)


def test_hlr_references_are_the_user_then_its_items_without_the_positive():
    train = small_train()
    model = make("hlr", train, max_num_prefs=9)
    users = tf.constant([1, 0])
    u = model.user_vectors(users)
    refs, mask = model.reference_vectors(users, u, exclude=tf.constant([4, 0]))
    np.testing.assert_allclose(refs.numpy()[:, 0], u.numpy())
    ids = model.reference_ids.numpy()[1]
    assert mask.numpy()[0, 0] and mask.numpy()[0, 1:].sum() == 8  # user 1: every item but the positive 4
    assert not mask.numpy()[0, 1:][ids == 4].any()
    assert mask.numpy()[1].tolist() == [True] + [False] * 9  # user 0 has no item: itself only


@pytest.mark.parametrize("name", ["cml", *RELATIONAL])
def test_pair_scores_are_minus_the_translated_distance(name):
    train = small_train()
    model = make(name, train)
    users, items = tf.constant([1, 2, 3]), tf.constant([[0, 4], [5, 6], [7, 8]])
    u, v = model.user_vectors(users), model.item_vectors(items)
    r = model.relation(users, u, items, v).numpy()
    if name == "cml":
        assert not r.any()
    else:
        assert np.abs(r).sum() > 0
    want = -(((u.numpy()[:, None] + r - v.numpy()) ** 2).sum(-1))
    np.testing.assert_allclose(model({"users": users, "items": items}).numpy(), want, rtol=1e-5, atol=1e-6)
    # a block of users x items scores each pair as the batch form does
    block = model.score_block(users, tf.constant([0, 4, 8])).numpy()
    np.testing.assert_allclose(block[:, 1], model({"users": users, "items": tf.constant([4, 4, 4])}).numpy(), 1e-5)


# ------------------------------------------------------------------------------------------ chunked ranking
@pytest.mark.parametrize("name", RELATIONAL)
def test_chunked_ranking_equals_unchunked(name):
    train = small_train(12, 11, seed=4)
    test = small_train(12, 11, seed=5) - train.multiply(small_train(12, 11, seed=5))
    test = sp.csr_matrix(test.maximum(0))
    model = make(name, train)
    ev = Evaluator(train, test, k=4, batch_size=5)
    full = model.score_block(tf.range(12, dtype=tf.int32), tf.range(11, dtype=tf.int32)).numpy()
    want = ev.evaluate_scores_per_user(lambda users: full[users])
    for chunk in (1, 3, 11):
        got = ev.evaluate_blocks_per_user(model.state_scores, chunk=chunk, prepare=model.user_state, batch_size=5)
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6, err_msg=f"{key}, chunk {chunk}")
    scores = block_scores(model.score_block, tf.range(12, dtype=tf.int32), 11, 4).numpy()
    np.testing.assert_allclose(scores, full, rtol=1e-5, atol=1e-6)
    assert ev.evaluate_model(model)["users"] == len(ev.users)


@pytest.mark.parametrize("name", ["cml", *RELATIONAL])
def test_shared_pool_distances_are_the_pairs_distances_and_the_softmax_trains(name):
    train = small_train(12, 11, seed=4)
    model = make(name, train)
    users = tf.constant([0, 3, 5], tf.int32)
    positives = tf.constant([1, 2, 3], tf.int32)
    pool = tf.constant([4, 6, 9, 10], tf.int32)
    u = model.user_vectors(users)
    grid = tf.broadcast_to(pool[None], [3, 4])
    want = model.pair_distances(users, u, grid, model.item_vectors(grid), exclude=positives).numpy()
    got = model.shared_distances(users, u, pool, exclude=positives).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    data = {
        "users": users,
        "positives": positives,
        "candidates": pool,
        "candidate_is_positive": tf.constant(train[[0, 3, 5]][:, [4, 6, 9, 10]].toarray() > 0),
        "candidate_log_q": tf.zeros([4]),
        "positive_log_q": tf.zeros([3]),
    }
    model.loss = "softmax"
    with tf.GradientTape() as tape:
        terms = model.compute_softmax_losses(data)
    grads = tape.gradient(terms["total"], model.trainable_variables)
    assert np.isfinite(terms["total"].numpy()) and terms["total"].numpy() > 0
    assert any(g is not None for g in grads)


# ------------------------------------------------------------------------------------------ learning
def planted(n_groups=4, users_per_group=20, items_per_group=12, seed=0):
    """Users in groups, each group likes its own block of items; every item equally popular (popularity is
    blind to the structure). Returns a Split: 2 test items and 1 validation item per user."""
    rng = np.random.default_rng(seed)
    n_users, n_items = n_groups * users_per_group, n_groups * items_per_group
    parts = [[], [], []]
    for u in range(n_users):
        g = u // users_per_group
        liked = g * items_per_group + rng.choice(items_per_group, 9, replace=False)
        for part, items in zip(parts, (liked[:6], liked[6:7], liked[7:])):
            part += [(u, i) for i in items]
    mats = [sp.csr_matrix((np.ones(len(p), np.float32), tuple(np.array(p).T)), shape=(n_users, n_items)) for p in parts]
    from cml_tf.data.splits import Split

    return Split(*mats)


@pytest.mark.parametrize("name", ["cml", *RELATIONAL])
def test_each_model_learns_planted_structure_above_popularity(name, tmp_path):
    from cml_tf.data.interactions import Interactions

    split = planted()
    interactions = Interactions.from_pairs(*(split.train + split.valid + split.test).nonzero())
    config = Config(
        model=name,
        sampler="uniform",
        split="fo",
        embedding_dim=16,
        batch_size=64,
        learning_rate=0.02,
        margin=0.5,
        geometry="ball",
        gor_weight=0.0,
        max_steps=150,
        eval_every=150,
        max_num_prefs=6,
        num_memories=4,
        k=5,
        seed=1,
    )
    results = training.train(config, str(tmp_path / name), data=(interactions, split), verbose=0)
    seen = split.train + split.valid
    popularity = np.asarray(split.train.sum(0)).ravel().astype(np.float32)
    pop = Evaluator(seen, split.test, k=5).evaluate_scores(lambda users: popularity)
    # random ranking within a group's 12 items gives ndcg@5 ~ 0.2 at best; popularity is near 0.1
    assert results["ndcg@5"] > 0.4 and results["ndcg@5"] > 2 * pop["ndcg@5"], (results["ndcg@5"], pop["ndcg@5"])


# ------------------------------------------------------------------------------------------ runs
@pytest.mark.parametrize("name", RELATIONAL)
def test_resume_equals_uninterrupted_run(name, tmp_path):
    config = synthetic_config(
        120,
        150,
        2400,
        model=name,
        sampler="2stage",
        num_candidates=100,
        batch_size=64,
        embedding_dim=8,
        max_num_prefs=5,
        num_memories=3,
        max_steps=30,
        eval_every=10,
        steps_per_execution=5,
        learning_rate=1e-2,
        k=10,
    )
    full = training.train(config, str(tmp_path / "full"), verbose=0)
    part = str(tmp_path / "part")
    training.train(dataclasses.replace(config, max_steps=20), part, verbose=0)
    os.unlink(os.path.join(part, "results.json"))
    with open(os.path.join(part, "config.json"), "w") as f:
        json.dump(config.resolved().to_dict(), f)
    resumed = training.train(config, part, verbose=0)
    assert [int(r["step"]) for r in read_metrics_csv(os.path.join(part, "metrics.csv"))] == [10, 20, 30]
    for key in ("ndcg@10", "mrr@10", "map@10"):
        assert resumed[key] == pytest.approx(full[key], rel=1e-4, abs=1e-6), key
    assert os.path.exists(os.path.join(part, "recommendations.npz"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cml", *RELATIONAL])
def test_cli_trains_each_model_resumes_after_kill(name, tmp_path):
    model_dir = str(tmp_path / name)
    args = [
        f"--model={name}",
        "--num_users=200",
        "--num_items=300",
        "--num_interactions=4000",
        "--batch_size=64",
        "--sampler=uniform",
        "--embedding_dim=16",
        "--max_steps=200",
        "--eval_every=20",
        "--steps_per_execution=1",
        "--eval_users=50",
        "--k=10",
        f"--model_dir={model_dir}",
        "--verbose=0",
    ]
    killed = kill_training(args, model_dir)
    assert killed, "the first run ended before it could be killed"
    out = run_command("cml_tf.train", *args, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"{model_dir}: resuming from step" in out.stderr
    results = json.loads(out.stdout[out.stdout.index("{") :])
    assert results["steps"] == 200 and "mrr@10" in results
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        assert json.load(f)["model"] == name
    assert {"checkpoints", "best", "embeddings", "recommendations.npz", "results.json"} <= set(os.listdir(model_dir))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--model=bpr"], "error: --model: unknown model 'bpr'; expected one of cml, lrml, transcf, attcml, hlr"),
        (["--num_memories=4"], "error: --num_memories does not apply to --model=cml (only --model=lrml and"),
        (["--model=lrml", "--max_num_prefs=4"], "error: --max_num_prefs does not apply to --model=lrml"),
        (["--model=hlr", "--features=tags"], "error: --features applies only to --model=cml, not --model=hlr"),
        (["--test_fraction=0.3"], "error: --test_fraction does not apply to --split=kfold (only fo)"),
        (["--split=fo", "--fold=1"], "error: --fold does not apply to --split=fo"),
    ],
)
def test_cli_model_flags_fail_with_one_line_naming_the_flag(flags, message):
    code = "import sys; from cml_tf import train; sys.argv = ['train', *sys.argv[1:]]; train.run()"
    out = subprocess.run([sys.executable, "-c", code, *flags], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_model_flags_map_to_config_and_default_dir():
    # cml_tf.train in a fresh process: experiments.table2, imported by other tests, defines flags of the same names
    code = (
        "from cml_tf.training.config import Config; from cml_tf.train import default_model_dir as d; "
        "print(d(Config())); print(d(Config(model='hlr', split='fo')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == [
        os.path.join("runs", "synthetic-2stage-b256-n1-kfold0"),
        os.path.join("runs", "synthetic-hlr-2stage-b256-n1-fo"),
    ], out.stderr[-1000:]
    assert Config(model="hlr").model_options() == {"num_memories": 20, "max_num_prefs": 50}
    assert Config(model="cml").model_options() == {}


def test_a_cml_run_saved_before_the_model_flag_resumes(tmp_path):
    # config.json of older runs has no "model" (nor the other new fields): they read as their defaults
    config = Config(dataset="synthetic", dataset_options={"num_users": 100, "num_items": 120}).resolved()
    os.makedirs(tmp_path / "old" / "checkpoints")
    old = {k: v for k, v in config.to_dict().items() if k not in ("model", "num_memories", "test_fraction")}
    with open(tmp_path / "old" / "config.json", "w") as f:
        json.dump(old, f)
    with open(tmp_path / "old" / "results.json", "w") as f:
        json.dump({"ndcg@50": 0.5}, f)
    data = {"data_path": None, "fingerprint": "f", "users": 100, "items": 120, "pairs": 1}  # no data.json: path only
    check_same_run(config, str(tmp_path / "old"), data)  # not refused
    with pytest.raises(RunError, match="differs in: model"):
        check_same_run(dataclasses.replace(config, model="lrml"), str(tmp_path / "old"), data)


def test_hlr_and_transcf_need_the_training_matrix():
    for cls in (HLR, TransCF):
        with pytest.raises(ValueError, match="training interactions"):
            cls(3, 4, embedding_dim=2)


def test_recommend_refuses_a_relational_run_with_one_line(tmp_path):
    from cml_tf.serving.runs import RecommendError, check_run

    run = tmp_path / "run"
    (run / "embeddings").mkdir(parents=True)
    for name in ("user_embeddings.npy", "item_embeddings.npy", "user_ids.npy", "item_ids.npy"):
        np.save(run / "embeddings" / name, np.zeros(2))
    (run / "results.json").write_text("{}")
    (run / "config.json").write_text(json.dumps(Config(model="hlr").to_dict()))
    with pytest.raises(RecommendError, match="holds a model=hlr run"):
        check_run(str(run))
    (run / "config.json").write_text(json.dumps(Config().to_dict()))
    check_run(str(run))


@pytest.mark.parametrize("name", RELATIONAL)
def test_relational_softmax_steps_take_the_generic_path(name):
    """The fused softmax step recomputes plain CML distances from rows: a model with a relation must not take it."""
    model = make(name, small_train(), loss="softmax")
    data = {
        "users": tf.constant([2, 3], tf.int32),
        "positives": tf.constant([1, 2], tf.int32),
        "candidates": tf.constant([4, 5, 6], tf.int32),
        "candidate_is_positive": tf.zeros([2, 3], tf.bool),
        "candidate_log_q": tf.zeros([3]),
        "positive_log_q": tf.zeros([2]),
    }
    assert not model._plain_scores() and not model._fused_softmax(data)
    assert MODELS["cml"](7, 9, embedding_dim=4, loss="softmax")._plain_scores()  # the control
