"""Side information: MovieLens u.user / u.item / timestamps and citeulike-t tags, aligned to the interactions,
cached without pickle; malformed files named with their line."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from cml_tf.data import loaders
from cml_tf.data.interactions import DataError
from cml_tf.data.loaders import movielens
from cml_tf.data.side_info import SideInfo

GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama"]
GENRES += ["Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def _flags(*on):
    return "|".join("1" if g in on else "0" for g in range(19))


def write_ml(tmp_path, users=None, items=None, data=None):
    """A 3-user, 3-item MovieLens 100K directory; items 10, 20, 30 (ids out of order in u.item)."""
    d = tmp_path / "ml"
    d.mkdir(exist_ok=True)
    rows = data or ["1\t20\t5\t300", "1\t10\t4\t100", "1\t20\t3\t50", "2\t30\t5\t10", "3\t10\t1\t7", "3\t30\t2\t8"]
    (d / "u.data").write_text("\n".join(rows) + "\n")
    users = users or ["1|24|M|technician|85711", "3|61|F|writer|T8H1N", "2|17|F|student|02139"]
    (d / "u.user").write_text("\n".join(users) + "\n")
    url = "http://x"
    items = items or [
        f"30|Thirty (1990)|01-Jan-1990||{url}|{_flags(8)}",
        f"10|Ten (1995)|01-Jan-1995||{url}|{_flags(1, 15)}",
        f"20|Twenty (1999)|01-Jan-1999||{url}|{_flags(3, 4, 5)}",
    ]
    (d / "u.item").write_text("\n".join(items) + "\n")
    (d / "u.genre").write_text("\n".join(f"{g}|{i}" for i, g in enumerate(GENRES)) + "\n\n")
    (d / "u.occupation").write_text("student\ntechnician\nwriter\n")
    return str(d)


def test_movielens_side_info_is_aligned(tmp_path):
    path = write_ml(tmp_path)
    x = loaders.load("movielens", path, use_cache=False)
    s = loaders.load_side_info("movielens", path, x, use_cache=False)
    np.testing.assert_array_equal(x.item_ids, [10, 20, 30])
    np.testing.assert_array_equal(
        s.item_groups.toarray()[:, [1, 3, 4, 5, 8, 15]], [[1, 0, 0, 0, 0, 1], [0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 0]]
    )
    assert s.item_groups.nnz == 6 and s.group_kind == "genre" and s.group_names[4] == "Children's"
    np.testing.assert_array_equal(s.item_titles, ["Ten (1995)", "Twenty (1999)", "Thirty (1990)"])
    np.testing.assert_array_equal(s.first_group(), [1, 3, 8])  # the documented rule: lowest genre index
    f = dict(zip(s.user_feature_names, s.user_features.T))
    np.testing.assert_allclose(f["age/100"], [0.24, 0.17, 0.61])  # users 1, 2, 3 in row order
    np.testing.assert_array_equal(f["age_18_24"], [1, 0, 0])
    np.testing.assert_array_equal(f["age_0_17"], [0, 1, 0])
    np.testing.assert_array_equal(f["age_56_199"], [0, 0, 1])
    np.testing.assert_array_equal(f["gender_F"], [0, 1, 1])
    np.testing.assert_array_equal(f["occupation_student"], [0, 1, 0])
    np.testing.assert_array_equal(f["zip_8"], [1, 0, 0])
    np.testing.assert_array_equal(f["zip_0"], [0, 1, 0])
    np.testing.assert_array_equal(f["zip_other"], [0, 0, 1])  # a Canadian code
    assert s.user_features.sum(1).tolist() == pytest.approx([4.24, 4.17, 4.61])  # one of each one-hot block


def test_timestamps_are_the_earliest_rating_of_each_pair(tmp_path):
    path = write_ml(tmp_path)
    x = loaders.load("movielens", path, use_cache=False)
    t = movielens.read_timestamps(movielens.resolve_path(path), x)
    # CSR order: user 1: items 10, 20; user 2: 30; user 3: 10, 30. Pair (1, 20) was rated twice: 300 and 50
    np.testing.assert_array_equal(t, [100, 50, 10, 7, 8])
    y = loaders.load("movielens", path, use_cache=False, min_rating=4)
    np.testing.assert_array_equal(
        movielens.read_timestamps(movielens.resolve_path(path), y, min_rating=4), [100, 300, 10]
    )


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"users": ["1|24|M|technician", "2|1|F|student|1", "3|1|F|writer|1"]},
            r"u\.user: line 1 has 4 '\|'-separated fields",
        ),
        ({"users": ["1|24|M|technician|1", "2|x|F|student|1", "3|1|F|writer|1"]}, r"u\.user: line 2: age 'x'"),
        ({"users": ["1|24|M|technician|1", "2|1|F|student|1", "3|1|Q|writer|1"]}, r"u\.user: line 3: gender 'Q'"),
        ({"users": ["1|24|M|technician|1", "2|1|F|student|1"]}, r"u\.user: no line for user 3"),
        ({"users": ["1|24|M|technician|1", "2|1|F|pilot|1", "3|1|F|writer|1"]}, r"line 2: occupation 'pilot'"),
        ({"items": [f"10|T||u|{_flags(1)}", f"20|T||u|{_flags(1)}"]}, r"u\.item: line 1 has 23"),
        ({"items": [f"10|T|d||u|{_flags(1)}", f"30|T|d||u|{_flags(1)}"]}, r"u\.item: no line for item 20"),
        ({"items": [f"10|T|d||u|{_flags(1)}", f"20|T|d||u|{_flags(1)}".replace("|1|", "|2|")]}, r"line 2: genre flag"),
    ],
)
def test_malformed_feature_files_name_file_and_line(tmp_path, change, message):
    path = write_ml(tmp_path, **change)
    x = loaders.load("movielens", path, use_cache=False)
    with pytest.raises(DataError, match=message):
        loaders.load_side_info("movielens", path, x, use_cache=False)


def test_missing_item_file_and_datasets_without_side_info(tmp_path):
    path = write_ml(tmp_path)
    x = loaders.load("movielens", path, use_cache=False)
    os.unlink(os.path.join(path, "u.item"))
    with pytest.raises(DataError, match=r"u\.item: no such file"):
        loaders.load_side_info("movielens", path, x, use_cache=False)
    with pytest.raises(DataError, match=r"--dataset=synthetic has no side information"):
        loaders.load_side_info("synthetic", None, x)


def test_cache_round_trip_and_invalidation(tmp_path):
    path = write_ml(tmp_path)
    cache = str(tmp_path / "cache")
    x = loaders.load("movielens", path, cache_dir=cache)
    a = loaders.load_side_info("movielens", path, x, cache_dir=cache)
    files = [f for f in os.listdir(cache) if "-side-" in f]
    assert len(files) == 1
    with np.load(os.path.join(cache, files[0]), allow_pickle=False) as z:  # no object arrays
        assert z["group_names"].dtype.kind == "U"
    b = loaders.load_side_info("movielens", path, x, cache_dir=cache)
    assert (a.item_groups != b.item_groups).nnz == 0
    np.testing.assert_array_equal(a.user_features, b.user_features)
    np.testing.assert_array_equal(a.item_titles, b.item_titles)
    # a changed feature file is a new cache entry, with the new content
    items = [f"10|A|d||u|{_flags(2)}", f"20|B|d||u|{_flags(2)}", f"30|C|d||u|{_flags(2)}"]
    (tmp_path / "ml" / "u.item").write_text("\n".join(items) + "\n")
    c = loaders.load_side_info("movielens", path, x, cache_dir=cache)
    np.testing.assert_array_equal(c.first_group(), [2, 2, 2])
    # a corrupted cache file is rebuilt
    for f in os.listdir(cache):
        if "-side-" in f:
            (tmp_path / "cache" / f).write_bytes(b"garbage")
    d = loaders.load_side_info("movielens", path, x, cache_dir=cache)
    np.testing.assert_array_equal(d.first_group(), [2, 2, 2])


def test_side_info_without_parts_round_trips(tmp_path):
    s = SideInfo(np.eye(3, 2), ["a", "b"], "tag")
    s.save(str(tmp_path / "s.npz"))
    t = SideInfo.load(str(tmp_path / "s.npz"))
    assert t.item_titles is None and t.user_features is None and t.group_kind == "tag"
    np.testing.assert_array_equal(t.first_group(), [0, 1, -1])


def test_citeulike_tags(tmp_path):
    d = tmp_path / "cu"
    d.mkdir()
    (d / "users.dat").write_text("2 0 1\n2 2 3\n1 5\n")
    # tag 1 has 5 items (kept), tag 2 has 4 (left out), tag 3 has 6 (kept)
    (d / "tag-item.dat").write_text("5 0 1 2 3 4\n4 0 1 2 3\n6 0 1 2 3 4 5\n")
    x = loaders.load("citeulike", str(d), use_cache=False)
    s = loaders.load_side_info("citeulike", str(d), x, use_cache=False)
    assert s.group_kind == "tag" and s.user_features is None
    np.testing.assert_array_equal(s.group_names, ["tag1", "tag3"])
    np.testing.assert_array_equal(s.item_groups.toarray(), [[1, 1]] * 5 + [[0, 1]])
    (d / "tag-item.dat").write_text("5 0 1 2 x 4\n")
    with pytest.raises(DataError, match=r"tag-item\.dat: line 1"):
        loaders.load_side_info("citeulike", str(d), x, use_cache=False)


def test_real_movielens_100k(shared_data):
    path = os.path.join(shared_data, "ml-100k")
    x = loaders.load("movielens", path, use_cache=False)
    s = loaders.load_side_info("movielens", path, x, use_cache=False)
    assert s.item_groups.shape == (1682, 19) and s.user_features.shape[0] == 943
    assert s.item_groups.nnz == 2893  # genre flags set in u.item
    assert s.item_titles[0] == "Toy Story (1995)" and s.first_group()[0] == 3  # Animation
    t = movielens.read_timestamps(movielens.resolve_path(path), x)
    assert t.shape == (100000,) and t.min() == 874724710 and t.max() == 893286638


def test_genres_feed_cml_f(tmp_path):
    from cml_tf.training.config import Config
    from cml_tf.training.data import item_features

    path = write_ml(tmp_path)
    config = Config(dataset="movielens", data_path=path, features="genres")
    config.validate()
    x = loaders.load("movielens", path, use_cache=False)
    features = item_features(config, x)
    assert features.shape == (3, 19) and features.nnz == 6
    with pytest.raises(ValueError, match="^features=genres needs dataset=movielens"):
        Config(dataset="citeulike", features="genres").validate()


def test_side_info_sampler_needs_a_data_set_with_side_info():
    from cml_tf.training.config import Config

    Config(dataset="movielens", sampler="side_info").validate()
    Config(dataset="citeulike-t", sampler="side_info").validate()
    with pytest.raises(ValueError, match="^sampler=side_info needs item side information"):
        Config(dataset="synthetic", sampler="side_info").validate()


def test_side_info_sampler_trains_end_to_end(tmp_path, monkeypatch):
    from cml_tf import training
    from cml_tf.training.config import Config

    monkeypatch.setenv("CML_TF_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    rows = [f"{u}\t{i}\t4\t{t}" for u in range(1, 41) for t, i in enumerate(rng.choice(30, 8, replace=False) + 1)]
    items = [f"{i}|T{i}|d||u|{_flags(i % 19, (i + 3) % 19)}" for i in range(1, 31)]
    users = [f"{u}|30|M|writer|1" for u in range(1, 41)]
    path = write_ml(tmp_path, users=users, items=items, data=rows)
    config = Config(
        dataset="movielens",
        data_path=path,
        sampler="side_info",
        batch_size=32,
        embedding_dim=8,
        max_steps=20,
        eval_every=10,
        learning_rate=0.01,
    )
    results = training.train(config, str(tmp_path / "run"), verbose=0)
    assert np.isfinite(results["ndcg@50"]) and results["steps"] == 20
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["sampler"] == "side_info"
