"""Given splits: the lightgcn and recbole loaders, any loader's files, `given_split`'s checks, a run end to end."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from helpers import run_command

from cml_tf.data import loaders
from cml_tf.data.interactions import DataError
from cml_tf.data.splits import given_split


def write(directory, **files):
    os.makedirs(directory, exist_ok=True)
    for name, text in files.items():
        (directory / name.replace("_", ".")).write_text(text, encoding="utf-8")
    return str(directory)


def load_split(name, path=None, valid_fraction=0.1, **kw):
    interactions, parts = loaders.load_given(name, path, **kw)
    return interactions, given_split(interactions, parts, valid_fraction=valid_fraction, seed=0)


def dense(m):
    return m.toarray().astype(int).tolist()


def test_lightgcn_ids_kept_and_parts_exact(tmp_path):
    d = write(tmp_path, train_txt="0 1 2\n2 0\n\n", valid_txt="0 3\n", test_txt="0 4\n2 1 3\n")
    inter, split = load_split("lightgcn", d)
    # user 1 appears nowhere: an empty row (ids kept); 5 items (max id 4 + 1)
    assert inter.matrix.shape == (3, 5) and inter.user_ids.tolist() == [0, 1, 2]
    assert dense(split.train) == [[0, 1, 1, 0, 0], [0] * 5, [1, 0, 0, 0, 0]]
    assert dense(split.valid) == [[0, 0, 0, 1, 0], [0] * 5, [0] * 5]
    assert dense(split.test) == [[0, 0, 0, 0, 1], [0] * 5, [0, 1, 0, 1, 0]]
    assert not split.valid_from_train
    # the reference protocol masks train only: the valid item 3 of user 0 stays rankable
    assert dense(split.excluded_at_test("reference")) == dense(split.train)


def test_lightgcn_without_valid_file_carves_a_seeded_share_of_train(tmp_path):
    d = write(tmp_path, train_txt="0 " + " ".join(map(str, range(1, 21))) + "\n1 5\n", test_txt="0 30\n1 31\n")
    inter, a = load_split("lightgcn", d, valid_fraction=0.1)
    _, b = load_split("lightgcn", d, valid_fraction=0.1)
    assert a.valid_from_train and a.valid.nnz == 2  # floor(0.1 * 20) for user 0; user 1 keeps its only item
    assert (a.valid != b.valid).nnz == 0  # seeded
    assert a.train.nnz + a.valid.nnz == 21 and a.train.multiply(a.valid).nnz == 0
    # at test time the carved items are training-file items: masked under the reference protocol too
    assert a.excluded_at_test("reference").nnz == 21
    _, none = load_split("lightgcn", d, valid_fraction=0.0)
    assert none.valid.nnz == 0 and none.train.nnz == 21


OK = "0 1 2\n1 3\n"


@pytest.mark.parametrize(
    "files, message",
    [
        ({"train_txt": OK, "test_txt": "0 4\n1 x3\n"}, r"test\.txt: line 2: 'x3' is not a non-negative integer id"),
        ({"train_txt": OK, "test_txt": "0 4\n-1 3\n"}, r"test\.txt: line 2: '-1' is not"),
        ({"train_txt": OK, "test_txt": "0 4\n1 2.5\n"}, r"test\.txt: line 2: '2\.5'"),
        ({"train_txt": OK, "test_txt": "\n\n"}, r"test\.txt: empty file"),
        ({"train_txt": "", "test_txt": "0 4\n"}, r"train\.txt: empty file"),
        (
            {"train_txt": OK, "valid_txt": "0 4\n1 3 5\n", "test_txt": "0 6\n"},
            r"valid\.txt: line 2: user 1 item 3 is also in .*train\.txt: line 2: the parts of a given split must be",
        ),
        (
            {"train_txt": OK, "test_txt": "0 5\n1 6\n0 2\n"},
            r"test\.txt: line 3: user 0 item 2 is also in .*train\.txt: line 1:",
        ),
        (
            {"train_txt": OK, "valid_txt": "0 5\n", "test_txt": "0 6\n1 7 5\n0 5\n"},
            r"test\.txt: line 3: user 0 item 5 is also in .*valid\.txt: line 1:",
        ),
        (
            {"train_txt": OK, "test_txt": "0 6\n2 7\n"},
            r"test\.txt: line 2: user 2 has test items but no training item in",
        ),
        ({"train_txt": OK}, r"test\.txt: no such file \(the test file"),
        ({"test_txt": "0 1\n"}, r"train\.txt: no such file \(the train file"),
        ({"train_txt": "0 1\n", "test_txt": "0\n"}, r"test\.txt: no \(user, item\) pair"),
    ],
)
def test_lightgcn_bad_files_are_one_line_naming_file_and_line(tmp_path, files, message):
    d = write(tmp_path, **files)
    with pytest.raises(DataError, match=message) as e:
        load_split("lightgcn", d)
    assert "\n" not in str(e.value)


RECBOLE_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def test_recbole_tokens_mapped_consistently_across_files(tmp_path):
    d = write(
        tmp_path,
        ml_train_inter=RECBOLE_HEADER + "u7\tm1\t5\t1\nu3\tm2\t4\t2\nu7\tm9\t3\t3\n",
        ml_valid_inter=RECBOLE_HEADER + "u3\tm1\t4\t4\n",
        ml_test_inter=RECBOLE_HEADER + "u7\tm5\t4\t5\n\nu3\tm9\t1\t6\n",
    )
    inter, split = load_split("recbole", d)
    assert inter.user_ids.tolist() == ["u7", "u3"]  # order of first appearance over train, valid, test
    assert inter.item_ids.tolist() == ["m1", "m2", "m9", "m5"]
    assert dense(split.train) == [[1, 0, 1, 0], [0, 1, 0, 0]]
    assert dense(split.valid) == [[0, 0, 0, 0], [1, 0, 0, 0]]
    assert dense(split.test) == [[0, 0, 0, 1], [0, 0, 1, 0]]
    # the prefix and a file of the benchmark resolve to the same files
    assert loaders.load_given("recbole", os.path.join(d, "ml.test.inter"))[0].nnz == 6
    bad = write(
        tmp_path / "bad",
        x_train_inter=RECBOLE_HEADER + "u1\tm1\t5\t1\n",
        x_test_inter=RECBOLE_HEADER + "u1\tm1\t5\t1\n",
    )
    with pytest.raises(
        DataError, match=r"x\.test\.inter: line 2: user u1 item m1 is also in .*x\.train\.inter: line 2"
    ):
        load_split("recbole", bad)
    nohead = write(tmp_path / "nohead", y_train_inter="uid:token\titem_id:token\nu1\tm1\n", y_test_inter=RECBOLE_HEADER)
    with pytest.raises(DataError, match=r"y\.train\.inter: line 1: no user_id field in the header"):
        load_split("recbole", nohead)


def test_other_loaders_take_a_given_split_from_their_own_files(tmp_path):
    # MovieLens u.data format (user<TAB>item<TAB>rating<TAB>time); count filters are off for given files
    d = write(tmp_path, tr_data="1\t10\t5\t0\n2\t10\t3\t0\n2\t20\t4\t0\n", te_data="1\t20\t5\t0\n2\t30\t1\t0\n")
    inter, split = load_split(
        "movielens", None, train_path=os.path.join(d, "tr.data"), test_path=os.path.join(d, "te.data")
    )
    assert inter.user_ids.tolist() == [1, 2] and inter.item_ids.tolist() == [10, 20, 30]
    assert dense(split.train + split.valid) == [[1, 0, 0], [1, 1, 0]] and dense(split.test) == [[0, 1, 0], [0, 0, 1]]
    with pytest.raises(DataError, match="--split=given needs --train_path and --test_path"):
        loaders.load_given("movielens", None, train_path=os.path.join(d, "tr.data"))
    with pytest.raises(DataError, match=r"tr\.data: user 1 item 10 is also in .*tr\.data: the parts"):
        load_split("movielens", None, train_path=os.path.join(d, "tr.data"), test_path=os.path.join(d, "tr.data"))


def test_ml1m_lightgcn_counts(shared_data):
    path = os.path.join(shared_data, "ml-1m-lightgcn")
    if not os.path.isfile(os.path.join(path, "train.txt")):
        pytest.skip(f"{path}/train.txt not found")
    inter, split = load_split("lightgcn", path)
    assert (inter.n_users, inter.n_items) == (6039, 3628)
    assert (split.train.nnz, split.valid.nnz, split.test.nnz) == (590_733, 80_897, 164_848)
    assert inter.nnz == 590_733 + 80_897 + 164_848
    assert not split.valid_from_train


def tiny_lightgcn_dir(directory) -> str:
    """30 users x 40 items: 8 train, 1 valid, 3 test items per user."""
    rng = np.random.default_rng(0)
    lines = {"train": [], "valid": [], "test": []}
    for u in range(30):
        items = rng.choice(40, 12, replace=False)
        for part, chunk in zip(lines, (items[:8], items[8:9], items[9:])):
            lines[part].append(" ".join(map(str, [u, *chunk])))
    return write(directory, **{f"{p}_txt": "\n".join(v) + "\n" for p, v in lines.items()})


def check_reference_results(run: str, d: str) -> None:
    """results.json's test metrics are the reference protocol's (train masked, valid rankable), recommend works."""
    from cml_tf.evaluation.evaluator import Evaluator
    from cml_tf.serving.recommender import Recommender

    with open(os.path.join(run, "results.json")) as f:
        results = json.load(f)
    with open(os.path.join(run, "config.json")) as f:
        config = json.load(f)
    assert config["split"] == "given" and config["protocol"] == "reference"
    _, split = load_split("lightgcn", d)
    u, v = (np.load(os.path.join(run, "embeddings", f"{w}_embeddings.npy")) for w in ("user", "item"))
    want = Evaluator(split.train, split.test, k=20).evaluate(u, v)
    assert results["recall@20"] == pytest.approx(want["recall@20"], rel=1e-5)
    assert results["ndcg@20"] == pytest.approx(want["ndcg@20"], rel=1e-5)
    (ranked,) = Recommender.from_run(run, cache=False).recommend(["3"], k=5)
    assert len(ranked.items) == 5 and not set(split.train[3].indices.tolist()) & {int(i) for i in ranked.items}


def test_serving_a_given_split_run_reloads_its_data_without_the_training_line(tmp_path):
    """Rebuilding a run's seen items reloads the split quietly; training says how the model is chosen."""
    import logging

    from cml_tf.serving.runs import load_seen
    from cml_tf.training.config import Config
    from cml_tf.training.data import load_data

    d = tiny_lightgcn_dir(tmp_path / "data")
    config = Config(dataset="lightgcn", data_path=d, split="given", k=20)
    interactions, _ = load_data(config, announce=False)
    run = tmp_path / "run"
    (run / "embeddings").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("cml_tf")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        seen = load_seen(str(run), interactions.user_ids, interactions.item_ids, cache=False)
        assert seen["train"].nnz > 0 and not any("given split" in line for line in lines)
        load_data(config)  # the training path: the line is there
        assert any("given split: the model is chosen on" in line for line in lines)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_train_a_few_steps_on_a_lightgcn_directory_then_recommend(tmp_path):
    from cml_tf import training
    from cml_tf.training.config import Config

    d = tiny_lightgcn_dir(tmp_path / "data")
    config = Config(
        dataset="lightgcn",
        data_path=d,
        split="given",
        k=20,
        batch_size=32,
        max_steps=4,
        eval_every=2,
        num_candidates=30,
    )
    run = str(tmp_path / "run")
    training.train(config, run, verbose=0)
    check_reference_results(run, d)


@pytest.mark.slow
def test_train_command_on_a_lightgcn_directory_then_recommend_command(tmp_path):
    d = tiny_lightgcn_dir(tmp_path / "data")
    run = str(tmp_path / "run")
    flags = ["--dataset=lightgcn", f"--data_path={d}", "--k=20", "--batch_size=32", "--max_steps=6"]
    r = run_command("cml_tf.train", *flags, "--eval_every=3", "--num_candidates=30", f"--model_dir={run}")
    assert r.returncode == 0, r.stderr
    assert "given split: the model is chosen on" in r.stderr
    check_reference_results(run, d)
    r = run_command("cml_tf.recommend", f"--model_dir={run}", "--users=3", "--k=5", "--format=json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["items"]) == 5
