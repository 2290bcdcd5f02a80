"""`python -m cml_tf.recommend`: formats, names, streaming every user, one-line errors; a real ml-100k run."""

from __future__ import annotations

import csv
import io
import json
import os

import fake_run
import numpy as np
import pytest
from helpers import ROOT, run_command

from cml_tf import training
from cml_tf.io import save_npy_atomic, write_json_atomic
from cml_tf.serving.recommender import Recommender
from cml_tf.training.config import Config
from cml_tf.training.data import load_data


def recommend_cli(*args, pythonpath: str | None = None, cwd: str = ROOT):
    return run_command("cml_tf.recommend", *args, cwd=cwd, pythonpath=pythonpath)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model_dir, config = fake_run.make_run(root)
    names = root / "names.tsv"
    names.write_text("i1\tOne\ni2\tTwo, with a comma\n", encoding="utf-8")
    return model_dir, config, str(names)


def test_table_csv_and_json_formats(run):
    model_dir, config, names = run
    r = recommend_cli(f"--model_dir={model_dir}", "--users=cy,ann", "--k=2", f"--item_names={names}")
    assert r.returncode == 0, r.stderr
    seen = fake_run.seen_items(config)
    assert r.stdout.splitlines()[:4] == [
        "user cy (1 seen items excluded)",
        "rank  item     score  name",
        "   1  i1     -0.1522  One",
        "   2  i2     -0.5858  Two, with a comma",
    ]
    assert f"user ann ({len(seen['ann'])} seen items excluded)" in r.stdout

    r = recommend_cli(f"--model_dir={model_dir}", "--users=cy", "--k=2", "--format=csv", f"--item_names={names}")
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows == [
        ["user", "rank", "item", "score", "name"],
        ["cy", "1", "i1", "-0.152241", "One"],
        ["cy", "2", "i2", "-0.585786", "Two, with a comma"],
    ]

    r = recommend_cli(f"--model_dir={model_dir}", "--similar_to=i2", "--k=3", "--format=json")
    (line,) = r.stdout.splitlines()
    assert json.loads(line) == {"item": "i2", "items": ["i1", "i3", "i0"], "scores": [-0.152241, -0.152241, -0.585786]}


def test_include_seen_and_users_file(run, tmp_path):
    model_dir, _, _ = run
    users = tmp_path / "users.txt"
    users.write_text("cy\n\nann\n", encoding="utf-8")
    r = recommend_cli(f"--model_dir={model_dir}", f"--users_file={users}", "--k=1", "--include_seen", "--format=csv")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1:] == ["cy,1,i0,0", "ann,1,i0,0"]


def test_all_users_streams_every_user_to_a_file(run, tmp_path):
    model_dir, _, _ = run
    out = tmp_path / "all.csv"
    r = recommend_cli(f"--model_dir={model_dir}", "--all_users", f"--output={out}", "--format=csv", "--k=3")
    assert r.returncode == 0, r.stderr
    assert "wrote the top 3 of 4 user(s)" in r.stderr
    rows = list(csv.DictReader(open(out, encoding="utf-8")))
    rec = Recommender.from_run(model_dir)
    for user in ("ann", "bob", "cy", "dee"):
        got = [(row["item"], float(row["score"])) for row in rows if row["user"] == user]
        (want,) = rec.recommend(user, k=3)
        assert [g[0] for g in got] == list(want.items)
        np.testing.assert_allclose([g[1] for g in got], want.scores, atol=1e-5)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".all.csv")]  # no temporary file left


@pytest.mark.parametrize(
    "args, message",
    [
        (["--users=ann,zed"], "unknown user id 'zed' (--users): not among the run's 4 users"),
        (["--similar_to=i99"], "unknown item id 'i99' (--similar_to)"),
        (["--users=ann", "--k=0"], "--k must be a positive integer, got 0"),
        (["--users=ann", "--k=9"], "--k=9 exceeds the catalogue (8 items)"),
        (["--similar_to=i1", "--k=8"], "--k=8 exceeds the catalogue less the item itself (7 items)"),
        ([], "give exactly one of --users, --users_file, --all_users, --similar_to (got none)"),
        (["--users=ann", "--all_users"], "(got --users and --all_users)"),
        (["--users_file=/nonexistent/users.txt"], "--users_file=/nonexistent/users.txt: cannot read"),
        (["--users=ann", "--index=hnsw"], "faiss is not installed; install the extra: pip install 'cml_tf[ann]'"),
        (["--users=ann", "--format=xml"], "--format"),
    ],
)
def test_bad_input_is_one_line_naming_it(run, tmp_path, args, message):
    model_dir, _, _ = run
    no_faiss = tmp_path / "no_faiss"
    no_faiss.mkdir()
    (no_faiss / "faiss.py").write_text("raise ImportError('faiss hidden by the test')\n")
    r = recommend_cli(f"--model_dir={model_dir}", *args, pythonpath=str(no_faiss))
    assert r.returncode == 1, r.stdout
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_unfinished_run_is_refused(tmp_path):
    unfinished, _ = fake_run.make_run(tmp_path, "unfinished", finished=False)
    r = recommend_cli(f"--model_dir={unfinished}", "--users=ann")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (
        f"error: --model_dir={unfinished} holds no finished model: training has not finished (no results.json); "
        "run the same python -m cml_tf.train command again to finish it"
    )


# ------------------------------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def ml100k_run(shared_data, tmp_path_factory):
    """A run directory over the real ml-100k (untrained, random unit vectors: ids, seen items and titles are real)."""
    config = Config(dataset="movielens", data_path=os.path.join(shared_data, "ml-100k", "u.data")).resolved()
    interactions, split = load_data(config)
    model_dir = str(tmp_path_factory.mktemp("ml100k"))
    rng = np.random.default_rng(0)
    for name, n in (("user", interactions.n_users), ("item", interactions.n_items)):
        v = rng.normal(size=(n, 16)).astype(np.float32)
        save_npy_atomic(
            os.path.join(model_dir, "embeddings", f"{name}_embeddings.npy"), v / np.linalg.norm(v, axis=1)[:, None]
        )
    save_npy_atomic(os.path.join(model_dir, "embeddings", "user_ids.npy"), interactions.user_ids)
    save_npy_atomic(os.path.join(model_dir, "embeddings", "item_ids.npy"), interactions.item_ids)
    write_json_atomic(os.path.join(model_dir, "config.json"), config.to_dict())
    write_json_atomic(os.path.join(model_dir, "results.json"), {})
    return model_dir, split


def test_ml100k_titles_and_seen_counts(ml100k_run):
    model_dir, split = ml100k_run
    r = recommend_cli(f"--model_dir={model_dir}", "--users=42", "--k=3")
    assert r.returncode == 0, r.stderr
    n_seen = (split.train + split.valid).tocsr()[41].nnz  # user id 42 is row 41 (ids 1..943 in order)
    assert r.stdout.splitlines()[0] == f"user 42 ({n_seen} seen items excluded)"
    r = recommend_cli(f"--model_dir={model_dir}", "--similar_to=50", "--k=3")
    assert r.stdout.splitlines()[0] == "items nearest to item 50 (Star Wars (1977))"
    rec = Recommender.from_run(model_dir)
    assert rec.names[rec.items.row("1")] == "Toy Story (1995)"
    seen = set(rec.seen[rec.users.row("42")].indices)
    (top,) = rec.recommend("42", k=1682 - len(seen))
    assert len(top.items) == 1682 - len(seen)
    assert not {rec.items.row(i) for i in top.items} & seen


@pytest.mark.slow
@pytest.mark.parametrize("dataset, path", [("movielens", "ml-100k/u.data"), ("citeulike", "citeulike-t")])
def test_trained_run_end_to_end(shared_data, tmp_path, dataset, path):
    config = Config(
        dataset=dataset,
        data_path=os.path.join(shared_data, path),
        sampler="uniform",
        max_steps=200,
        eval_every=100,
        embedding_dim=32,
    )
    training.train(config, str(tmp_path / "run"), verbose=0)
    rec = Recommender.from_run(str(tmp_path / "run"))
    user = rec.users.strings[0]
    (ranked,) = rec.recommend(user, k=10)
    assert len(ranked.items) == 10 and not {rec.items.row(i) for i in ranked.items} & set(rec.seen[0].indices)
    r = recommend_cli(f"--model_dir={tmp_path / 'run'}", f"--users={user}", "--k=10", "--format=json")
    assert json.loads(r.stdout)["items"] == list(ranked.items)
