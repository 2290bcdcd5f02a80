"""`cml_tf.recommender`: seen items excluded, original ids in and out, similar items, streaming, names, errors.

The run is built by hand (tests/fake_run.py): string ids, items on the unit circle, so rankings and scores are
hand-computable.
"""

from __future__ import annotations

import dataclasses
import json
import os

import fake_run
import numpy as np
import pytest

from cml_tf.serving import runs
from cml_tf.serving.recommender import Recommender
from cml_tf.serving.runs import RecommendError


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return fake_run.make_run(tmp_path_factory.mktemp("rec"))


@pytest.fixture(scope="module")
def rec(run):
    return Recommender.from_run(run[0])


def _pairs(ranked):
    return [(i, round(float(s), 5)) for i, s in zip(ranked.items, ranked.scores)]


def _expected(user, exclude, k):
    return [(i, round(s, 5)) for i, s in fake_run.expected_ranking(user, exclude)[:k]]


def test_seen_items_are_excluded_and_kept_with_include_seen(rec, run):
    seen = fake_run.seen_items(run[1])
    assert seen["cy"] == {"i0"}  # a single item: training only
    (cy,) = rec.recommend("cy", k=3)
    assert _pairs(cy) == [("i1", -0.15224), ("i2", -0.58579), ("i3", -1.23463)]  # 2 - 2 cos(n pi / 8)
    (cy,) = rec.recommend("cy", k=3, include_seen=True)
    assert _pairs(cy) == [("i0", 0.0), ("i1", -0.15224), ("i2", -0.58579)]
    for user in ("ann", "bob", "dee"):
        (r,) = rec.recommend(user, k=8)
        assert not set(r.items) & seen[user]
        assert _pairs(r) == _expected(user, seen[user], 8)  # every unseen item, in distance order


def test_seen_all_also_excludes_the_test_fold(run):
    rec = Recommender.from_run(run[0], seen="all")
    everything = fake_run.seen_items(run[1], "all")
    (ann,) = rec.recommend("ann", k=4)
    assert _pairs(ann) == _expected("ann", everything["ann"], 4)
    assert not set(ann.items) & everything["ann"]


def test_original_ids_in_original_ids_out(rec):
    # item rows are in first-appearance order (i0 i1 i2 i5 i3 ...): ids, not rows, must come back
    assert rec.items.strings.tolist()[:4] == ["i0", "i1", "i2", "i5"]
    out = rec.recommend(["dee", "bob"], k=2, include_seen=True)
    assert [r.query for r in out] == ["dee", "bob"]  # in the order asked
    assert _pairs(out[0]) == [("i4", -0.02462), ("i3", -0.05526)]
    assert _pairs(out[1]) == [("i7", -0.15224), ("i6", -0.58579)]
    assert all(isinstance(i, str) for r in out for i in r.items)


def test_integer_ids_match_by_value(tmp_path):
    users = np.array([7, 42])
    rec = Recommender(fake_run.circle([0, 0]), fake_run.circle([0.1, 1.0]), users, np.array([5, 9]))
    assert rec.recommend(42, k=1)[0].items == ("5",)
    assert rec.recommend("042", k=1)[0].query == "42"


def test_similar_items_exclude_the_item_itself(rec):
    r = rec.similar_items("i2", k=3)
    assert r.query == "i2"
    # i1 and i3 are both pi/8 away: the tie goes to the lower row (i1 is row 1, i3 row 4)
    assert _pairs(r) == [("i1", -0.15224), ("i3", -0.15224), ("i0", -0.58579)]


def test_recommend_all_streams_what_recommend_returns(rec):
    blocks = list(rec.recommend_all(k=3, users_per_block=3))
    assert [len(b[0]) for b in blocks] == [3, 1]
    for users, items, scores in blocks:
        for user, row, row_scores in zip(users, items, scores):
            (one,) = rec.recommend(str(user), k=3)
            kept = row[row != ""]
            assert tuple(kept) == one.items
            np.testing.assert_allclose(row_scores[: len(kept)], one.scores)


def test_fewer_unseen_items_than_k_gives_them_all(rec, run):
    seen = fake_run.seen_items(run[1])
    (cy,) = rec.recommend("cy", k=8)
    assert len(cy.items) == 8 - len(seen["cy"])
    users, items, scores = next(rec.recommend_all(k=8, users_per_block=4))
    row = list(users).index("cy")
    assert items[row, -1] == "" and np.isneginf(scores[row, -1])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda r: r.recommend("zed", k=2), r"unknown user id 'zed'.*4 users"),
        (lambda r: r.recommend(["ann", "x1", "x2"], k=2), r"unknown user ids 'x1', 'x2'"),
        (lambda r: r.similar_items("i99", k=2), r"unknown item id 'i99'.*8 items"),
        (lambda r: r.recommend("ann", k=0), r"^k must be a positive integer, got 0"),
        (lambda r: r.recommend("ann", k=-3), r"^k must be a positive integer, got -3"),
        (lambda r: r.recommend("ann", k=9), r"^k=9 exceeds the catalogue \(8 items\)"),
        (lambda r: r.similar_items("i0", k=8), r"^k=8 exceeds the catalogue less the item itself \(7 items\)"),
        (lambda r: next(r.recommend_all(k=0)), r"^k must be a positive integer"),
    ],
)
def test_bad_input_is_one_clear_line(rec, call, message):
    with pytest.raises(RecommendError, match=message) as e:
        call(rec)
    assert "\n" not in str(e.value)


def test_unfinished_or_missing_runs_are_refused(tmp_path):
    unfinished, _ = fake_run.make_run(tmp_path, "unfinished", finished=False)
    with pytest.raises(RecommendError, match="holds no finished model: training has not finished"):
        Recommender.from_run(unfinished)
    with pytest.raises(RecommendError, match="no such directory"):
        Recommender.from_run(str(tmp_path / "absent"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(RecommendError, match="not a cml_tf run directory"):
        Recommender.from_run(str(tmp_path / "empty"))
    finished, _ = fake_run.make_run(tmp_path, "no-items")
    os.unlink(os.path.join(finished, "embeddings", "item_ids.npy"))
    with pytest.raises(RecommendError, match="embeddings/item_ids.npy is missing"):
        Recommender.from_run(finished)


def test_seen_items_are_cached_and_survive_the_data_moving(tmp_path):
    model_dir, config = fake_run.make_run(tmp_path, "cached")
    first = Recommender.from_run(model_dir).recommend("ann", k=5)[0]
    assert os.path.isfile(os.path.join(model_dir, "embeddings", "seen.npz"))
    os.rename(config.data_path, config.data_path + ".moved")
    again = Recommender.from_run(model_dir).recommend("ann", k=5)[0]
    assert again.items == first.items
    # a cache that no longer matches the config is not trusted: rebuilding then needs the data
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        saved = json.load(f)
    saved["valid_fraction"] = 0.2
    with open(os.path.join(model_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(saved, f)
    with pytest.raises(RecommendError, match="cannot rebuild the seen items"):
        Recommender.from_run(model_dir).recommend("ann", k=2)
    assert Recommender.from_run(model_dir).recommend("ann", k=2, include_seen=True)[0].items == ("i0", "i1")
    rec = Recommender.from_run(model_dir, data_path=config.data_path + ".moved")
    assert rec.recommend("ann", k=1)[0].items


def test_data_that_no_longer_matches_the_run_is_refused(tmp_path):
    model_dir, config = fake_run.make_run(tmp_path, "changed")
    with open(config.data_path, "a", encoding="utf-8") as f:
        f.write("eve,i0\n")  # one more user: the ids differ from the run's
    with pytest.raises(RecommendError, match="no longer matches the run.*user ids"):
        Recommender.from_run(model_dir).recommend("ann", k=2)


def test_a_split_that_does_not_reproduce_the_runs_test_metrics_is_refused(tmp_path):
    model_dir, _ = fake_run.make_run(tmp_path, "drift")
    path = os.path.join(model_dir, "results.json")
    with open(path, encoding="utf-8") as f:
        results = json.load(f)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({**results, "ndcg@50": results["ndcg@50"] + 0.01}, f)  # as if the split code had changed
    with pytest.raises(RecommendError, match=r"does not reproduce the run's test NDCG@50"):
        Recommender.from_run(model_dir).recommend("ann", k=2)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(results, f)
    assert Recommender.from_run(model_dir).recommend("ann", k=2)[0].items


def test_config_keys_of_another_version_are_ignored(tmp_path):
    model_dir, _ = fake_run.make_run(tmp_path, "older")
    path = os.path.join(model_dir, "config.json")
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({**saved, "stage2_max_logit": None}, f)  # a key an earlier cml_tf wrote
    assert Recommender.from_run(model_dir).recommend("cy", k=1)[0].items == ("i1",)


def test_relative_data_path_is_found_from_above_the_run_directory(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "runs").mkdir(parents=True)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "u.data").write_text("1\t1\t5\t0\n")
    assert runs.resolve_data_path("../data/u.data", str(project / "runs" / "x")) == str(tmp_path / "data" / "u.data")
    monkeypatch.chdir(tmp_path)
    assert runs.resolve_data_path("data/u.data", "anywhere") == "data/u.data"  # as given when it exists here
    assert runs.resolve_data_path("nowhere/u.data", str(project / "runs" / "x")) == "nowhere/u.data"


def test_movielens_titles_from_u_item_latin1(tmp_path):
    (tmp_path / "u.data").write_text("1\t10\t5\t0\n1\t20\t4\t0\n2\t10\t3\t0\n")
    (tmp_path / "u.item").write_bytes("10|Café (1995)|01-Jan-1995||url|0\n20|Heat (1995)|x||y|0\n".encode("latin-1"))
    assert runs.movielens_titles(str(tmp_path / "u.data")) == {"10": "Café (1995)", "20": "Heat (1995)"}
    from cml_tf.training.config import Config

    config = Config(dataset="movielens", data_path=str(tmp_path))
    assert runs.item_names_for_run(config, str(tmp_path))["20"] == "Heat (1995)"
    assert runs.item_names_for_run(dataclasses.replace(config, dataset="citeulike"), str(tmp_path)) is None
    (tmp_path / "u.item").unlink()
    assert runs.item_names_for_run(config, str(tmp_path)) is None


def test_names_shown_with_recommendations_and_names_file_errors(run, tmp_path):
    names = tmp_path / "names.tsv"
    names.write_text("i1\tOne\ni3\tThree\n", encoding="utf-8")
    rec = Recommender.from_run(run[0], item_names=str(names))
    (cy,) = rec.recommend("cy", k=3)
    assert cy.names == ("One", None, "Three")
    assert cy.rows()[0] == {"rank": 1, "item": "i1", "score": pytest.approx(-0.15224, abs=1e-5), "name": "One"}
    assert Recommender.from_run(run[0]).names is None  # a CSV data set has no names
    bad = tmp_path / "bad.tsv"
    bad.write_text("i1 One\n", encoding="utf-8")
    with pytest.raises(Exception, match=r"bad.tsv: line 1 has no tab"):
        Recommender.from_run(run[0], item_names=str(bad))


def test_index_choice_and_unknown_index(run):
    with pytest.raises(RecommendError, match="^index: unknown 'annoy'"):
        Recommender.from_run(run[0], index="annoy")
    with pytest.raises(RecommendError, match="^seen: unknown 'test'"):
        Recommender.from_run(run[0], seen="test")
    pytest.importorskip("faiss")
    exact = Recommender.from_run(run[0])
    ivf = Recommender.from_run(run[0], index="ivf", index_params={"nlist": 1})
    hnsw = Recommender.from_run(run[0], index="hnsw")
    for user in ("ann", "bob", "cy", "dee"):
        want = _pairs(exact.recommend(user, k=4)[0])
        assert _pairs(ivf.recommend(user, k=4)[0]) == want
        assert _pairs(hnsw.recommend(user, k=4)[0]) == want
    assert any(f.startswith("index-ivf-nlist1") for f in os.listdir(os.path.join(run[0], "embeddings")))
