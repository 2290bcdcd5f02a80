"""Loaders: real-data counts against independent pandas references, bad input, cache, filters, synthetic."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from cml_tf.data import loaders
from cml_tf.data.interactions import DataError
from cml_tf.data.loaders import csv as csv_loader
from cml_tf.data.loaders import filters, movielens, synthetic


def _pair_set(x):
    users, items = x.pairs()
    return set(zip(x.user_ids[users].tolist(), x.item_ids[items].tolist()))


def _reference_filter(df, value_col, min_value, user_min, item_min, iterative=False):
    """Plain pandas: row threshold, dedupe, users >= user_min, items >= item_min (once or to a fixed point)."""
    df = df[df[value_col] >= min_value][["u", "i"]].drop_duplicates()
    while True:
        n = len(df)
        df = df[df.groupby("u")["i"].transform("size") >= user_min]
        df = df[df.groupby("i")["u"].transform("size") >= item_min]
        if not iterative or len(df) == n:
            return df


# ---------------------------------------------------------------- real data


def test_citeulike_counts_and_ids(shared_data):
    path = os.path.join(shared_data, "citeulike-t")
    x = loaders.load("citeulike-t", path, use_cache=False)
    assert x.stats()["users"] == 7947 and x.n_items == 25975 and x.nnz == 134860
    with open(os.path.join(path, "users.dat")) as f:
        first = [int(t) for t in f.readline().split()]
    np.testing.assert_array_equal(x.matrix[0].indices, sorted(set(first[1:])))  # ids kept as they are
    np.testing.assert_array_equal(x.user_ids[:3], [0, 1, 2])


def test_movielens_100k(shared_data):
    path = os.path.join(shared_data, "ml-100k")
    x = loaders.load("movielens", path, use_cache=False)
    assert (x.n_users, x.n_items, x.nnz) == (943, 1682, 100000)
    assert x.user_ids[0] == 1 and x.item_ids[-1] == 1682
    df = pd.read_csv(os.path.join(path, "u.data"), sep="\t", header=None, names=["u", "i", "r", "t"])
    y = loaders.load("movielens", path, use_cache=False, min_rating=4, min_user_interactions=10)
    ref = _reference_filter(df, "r", 4, 10, 0)
    assert y.nnz == len(ref) and y.n_users == ref.u.nunique() and y.n_items == ref.i.nunique()
    assert _pair_set(y) == set(zip(ref.u, ref.i))


@pytest.mark.parametrize("iterative", [False, True])
def test_echonest_sample_matches_pandas(shared_data, iterative):
    """Paper filters applied once; iterated to a fixed point they empty this small sample, so lower them."""
    path = os.path.join(shared_data, "echonest", "train_triplets_sample.txt")
    df = pd.read_csv(path, sep="\t", header=None, names=["u", "i", "c"])
    raw = loaders.load("echonest", path, use_cache=False, min_playcount=0, min_user_interactions=0, min_item_users=0)
    assert (raw.n_users, raw.n_items, raw.nnz) == (df.u.nunique(), df.i.nunique(), len(df.drop_duplicates(["u", "i"])))
    if iterative:
        x = loaders.load(
            "echonest", path, use_cache=False, iterative_core=True, min_playcount=1, min_user_interactions=10
        )
        ref = _reference_filter(df, "c", 1, 10, 5, iterative=True)
        assert len(ref) < len(_reference_filter(df, "c", 1, 10, 5))  # iterating changes something here
    else:
        x = loaders.load("echonest", path, use_cache=False)  # paper defaults
        ref = _reference_filter(df, "c", 5, 21, 5)
    assert len(ref) > 0
    assert (x.n_users, x.n_items, x.nnz) == (ref.u.nunique(), ref.i.nunique(), len(ref))
    assert _pair_set(x) == set(zip(ref.u, ref.i))
    lower = loaders.load("echonest", path, use_cache=False, min_playcount=2, min_user_interactions=5)
    ref = _reference_filter(df, "c", 2, 5, 5)
    assert _pair_set(lower) == set(zip(ref.u, ref.i))


def test_book_crossing_latin1_and_filters(shared_data):
    path = os.path.join(shared_data, "book-crossing")
    raw = loaders.load("book_crossing", path, use_cache=False, min_rating=0, min_user_interactions=0)
    assert (raw.n_users, raw.n_items, raw.nnz) == (10355, 68057, 108600)
    df = pd.read_csv(
        os.path.join(path, "BX-Book-Ratings.partial.csv"), sep=";", encoding="latin-1", dtype={"ISBN": str}
    )
    df.columns = ["u", "i", "r"]
    x = loaders.load("book_crossing", path, use_cache=False)
    ref = _reference_filter(df, "r", 5, 11, 0)
    assert _pair_set(x) == set(zip(ref.u, ref.i))


def test_amazon_fixture(shared_data):
    path = os.path.join(shared_data, "amazon-movies")
    x = loaders.load("amazon_movies", path, use_cache=False, min_rating=0, min_user_interactions=0)
    assert (x.n_users, x.n_items, x.nnz) == (934, 11, 999)
    with pytest.raises(DataError, match="no interactions left"):  # paper filters leave nobody in 999 lines
        loaders.load("amazon", path, use_cache=False)


# ---------------------------------------------------------------- small hand-made files


def test_book_crossing_latin1_bytes(tmp_path):
    p = tmp_path / "BX-Book-Ratings.csv"
    p.write_bytes(b'"User-ID";"ISBN";"Book-Rating"\r\n"7";"034\xe9X";"8"\r\n"7";"0001";"0"\r\n"9";"0001";"6"\r\n')
    x = loaders.load("book_crossing", str(tmp_path), use_cache=False, min_user_interactions=0)
    assert _pair_set(x) == {(7, "034éX"), (9, "0001")}


def test_amazon_json_and_csv(tmp_path):
    rows = [("A", "i1", 5.0), ("A", "i2", 4.0), ("B", "i1", 5.0), ("B", "i3", 5.0), ("A", "i3", 5.0)]
    p = tmp_path / "reviews.json"
    p.write_text("".join(json.dumps({"reviewerID": u, "asin": i, "overall": r, "x": [1]}) + "\n" for u, i, r in rows))
    x = loaders.load("amazon_movies", str(p), use_cache=False, min_user_interactions=2)
    assert _pair_set(x) == {("A", "i1"), ("A", "i3"), ("B", "i1"), ("B", "i3")}
    c = tmp_path / "ratings.csv"
    c.write_text("".join(f"{u},{i},{r},123\n" for u, i, r in rows))
    assert _pair_set(loaders.load("amazon", str(c), use_cache=False, min_user_interactions=2)) == _pair_set(x)


def test_amazon_bad_json_line(tmp_path):
    p = tmp_path / "r.json"
    p.write_text('{"reviewerID": "A", "asin": "x", "overall": 5.0}\n{"reviewerID": "B", "asin": \n')
    with pytest.raises(DataError, match=r"r\.json: line 2"):
        loaders.load("amazon", str(p), use_cache=False)
    p.write_text('{"reviewerID": "A", "asin": "x", "overall": 5.0}\n{"reviewerID": "B", "overall": 5.0}\n')
    with pytest.raises(DataError, match=r"line 2: field 'asin'"):
        loaders.load("amazon", str(p), use_cache=False)


def test_malformed_line_names_file_and_line(tmp_path):
    p = tmp_path / "triplets.txt"
    p.write_text("u1\ts1\t5\nu1\ts2\t6\nu2\ts1\nu2\ts3\t7\n")
    with pytest.raises(DataError, match=r"triplets\.txt: line 3: expected 3 fields"):
        loaders.load("echonest", str(p), use_cache=False)


def test_non_numeric_values_and_ids(tmp_path):
    p = tmp_path / "triplets.txt"
    p.write_text("u1\ts1\t5\nu1\ts2\tlots\n")
    with pytest.raises(DataError, match=r"line 2: playcount 'lots' \(field 3\) is not a number"):
        loaders.load("echonest", str(p), use_cache=False)
    m = tmp_path / "u.data"
    m.write_text("1\t10\t5\t0\n2\t11\t4\t0\nx7\t12\t3\t0\n")
    with pytest.raises(DataError, match=r"u\.data: line 3: user id 'x7' \(field 1\) is not an integer"):
        loaders.load("movielens", str(m), use_cache=False)


def test_citeulike_bad_lines(tmp_path):
    p = tmp_path / "users.dat"
    p.write_text("2 0 3\n3 1 2\n1 4\n")
    with pytest.raises(DataError, match=r"users\.dat: line 2: declares 3 items but lists 2"):
        loaders.load("citeulike", str(tmp_path), use_cache=False)
    p.write_text("2 0 3\n1 x\n")
    with pytest.raises(DataError, match=r"line 2: 'x' is not a non-negative integer"):
        loaders.load("citeulike", str(tmp_path), use_cache=False)
    p.write_text("2 0 3\n1 7\n\n")  # trailing blank lines are fine; width = max id + 1
    x = loaders.load("citeulike", str(tmp_path), use_cache=False)
    assert (x.n_users, x.n_items, x.nnz) == (2, 8, 3)


def test_missing_file_and_directory_candidates(tmp_path):
    with pytest.raises(DataError, match="nope.txt: no such file or directory"):
        loaders.load("echonest", str(tmp_path / "nope.txt"), use_cache=False)
    (tmp_path / "a.txt").write_text("u\ts\t9\n")
    (tmp_path / "b.txt").write_text("u\ts\t9\n")
    with pytest.raises(DataError, match=r"candidates: a\.txt, b\.txt"):
        loaders.load("echonest", str(tmp_path), use_cache=False)
    with pytest.raises(DataError, match="--data_path"):
        loaders.load("movielens", None)


def test_empty_after_filter(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("u1\ts1\t5\nu1\ts2\t1\n")
    with pytest.raises(DataError, match=r"t\.txt: no interactions left after filtering.*playcount >= 5: 1 rows"):
        loaders.load("echonest", str(p), use_cache=False)


def test_unknown_dataset_and_bad_options():
    with pytest.raises(DataError, match=r"--dataset='nope'.*echonest.*synthetic"):
        loaders.load("nope")
    with pytest.raises(DataError, match="min_rating must be >= 0"):
        loaders.load("movielens", "x", min_rating=-1)
    with pytest.raises(DataError, match="min_playcount does not apply to --dataset=movielens"):
        loaders.load("movielens", "x", min_playcount=3)
    with pytest.raises(DataError, match="data_path does not apply"):
        loaders.load("synthetic", "somewhere")
    assert set(loaders.available()) >= {"echonest", "amazon_movies", "book_crossing", "citeulike", "movielens"}
    assert loaders.options("echonest") == {
        "min_playcount": 5,
        "min_user_interactions": 21,
        "min_item_users": 5,
        "iterative_core": False,
    }


def test_filters_once_versus_iterative(tmp_path):
    # u1:{a,b} u2:{a,b} u3:{a,c} u4:{d}; users >= 2 then items >= 2:
    # once: drops u4, then c -> u3 keeps only a (5 pairs); iterated: u3 goes too (4 pairs).
    p = tmp_path / "pairs.csv"
    p.write_text("u1,a\nu1,b\nu2,a\nu2,b\nu3,a\nu3,c\nu4,d\nu1,a\n")  # duplicate u1,a counts once
    kw = dict(use_cache=False, min_user_interactions=2, min_item_users=2)
    once = loaders.load("csv", str(p), **kw)
    assert _pair_set(once) == {("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u3", "a")}
    core = loaders.load("csv", str(p), iterative_core=True, **kw)
    assert _pair_set(core) == {("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b")}


def test_csv_options(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_text("when\titem\tuser\tw\n1\t10\t3\t0.5\n1\t11\t3\t2\n1\t10\t4\t3\n")
    x = loaders.load(
        "csv", str(p), use_cache=False, sep="\t", header=True, user_col="user", item_col=1, weight_col="w", min_weight=1
    )
    assert _pair_set(x) == {(3, 11), (4, 10)}  # integer ids detected, sorted
    with pytest.raises(DataError, match="needs a weight column"):
        loaders.load("csv", str(p), use_cache=False, sep="\t", header=True, min_weight=1)
    with pytest.raises(DataError, match="'nope' is not a column"):
        loaders.load("csv", str(p), use_cache=False, sep="\t", header=True, user_col="nope")


def test_csv_wrong_separator_names_the_flag_the_file_and_what_was_found(tmp_path):
    p = tmp_path / "d.txt"
    p.write_text("u1\ti1\t1\nu2\ti1\t1\n")
    with pytest.raises(DataError) as e:
        loaders.load("csv", str(p), use_cache=False)
    message = str(e.value)
    assert message.startswith(f"{p}: --csv_item_col=1 is past the end of line 1, which has 1 field(s) with --csv_sep=")
    assert "'u1\\ti1\\t1'" in message and "try --csv_sep=tab" in message
    assert "utf-8" not in message and "f1" not in message.replace("field(s)", "")


def test_csv_column_past_the_end_names_the_flag(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("u1,i1,1\nu2,i1,1\n")
    with pytest.raises(DataError, match=r"--csv_item_col=7 is past the end of line 1, which has 3 field\(s\)"):
        loaders.load("csv", str(p), use_cache=False, item_col=7)
    with pytest.raises(DataError, match=r"--csv_weight_col=3 is past the end"):
        loaders.load("csv", str(p), use_cache=False, weight_col=3, min_weight=1)


def test_csv_column_name_without_header_names_the_flag(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("user,item\nu1,i1\n")
    with pytest.raises(DataError) as e:
        loaders.load("csv", str(p), use_cache=False, user_col="user")
    assert str(e.value) == (
        f"{p}: --csv_user_col='user' is a column name, but --csv_header is not set (line 1 is 'user,item'); "
        "give --csv_header or a 0-based column number"
    )
    with pytest.raises(DataError, match="--csv_encoding='nope' is not a known text encoding"):
        loaders.load("csv", str(p), use_cache=False, encoding="nope")


def test_csv_label_column_without_weight_filter_gives_one_notice(tmp_path, caplog):
    p = tmp_path / "d.csv"
    p.write_text("u1,i1,1\nu1,i2,0\nu2,i1,1\n")
    with caplog.at_level("WARNING", logger="cml_tf.data.loaders"):
        x = loaders.load("csv", str(p), use_cache=False)
    assert x.nnz == 3  # the file's rows, as asked
    assert [r.getMessage() for r in caplog.records] == [
        f"{p}: column 2 holds only 0 and 1 in the first 3 rows, like a label, but no --csv_weight_col is given: "
        "every row counts as a positive; to keep only the 1 rows: --csv_weight_col=2 --min_weight=1"
    ]
    caplog.clear()
    with caplog.at_level("WARNING", logger="cml_tf.data.loaders"):
        loaders.load("csv", str(p), use_cache=False, weight_col=2)
    assert len(caplog.records) == 1 and "--csv_weight_col=2 holds only 0 and 1" in caplog.records[0].getMessage()
    assert "--min_weight=1" in caplog.records[0].getMessage()
    caplog.clear()
    with caplog.at_level("WARNING", logger="cml_tf.data.loaders"):
        assert loaders.load("csv", str(p), use_cache=False, weight_col=2, min_weight=1).nnz == 2
        p.write_text("u1,i1,3\nu1,i2,1\n")  # counts, not a label: no notice
        loaders.load("csv", str(p), use_cache=False)
    assert caplog.records == []


def test_movielens_dat_and_csv_formats(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::10::5::9\n1::11::3::9\n2::10::4::9\n")
    x = loaders.load("movielens", str(tmp_path / "ratings.dat"), use_cache=False, min_rating=4)
    assert _pair_set(x) == {(1, 10), (2, 10)}
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,10,5.0,9\n1,11,3.5,9\n2,10,4.0,9\n")
    y = loaders.load("movielens", str(tmp_path), use_cache=False, min_rating=4)  # ratings.csv preferred
    assert _pair_set(y) == {(1, 10), (2, 10)}


# ---------------------------------------------------------------- cache


def test_cache_hit_invalidation_and_corruption(tmp_path, monkeypatch):
    data = tmp_path / "u.data"
    data.write_text("1\t10\t5\t0\n1\t11\t3\t0\n2\t10\t4\t0\n")
    cache = tmp_path / "cache"
    first = loaders.load("movielens", str(data), cache_dir=str(cache))
    files = os.listdir(cache)
    assert len(files) == 1 and files[0].startswith("movielens-") and files[0].endswith(".npz")
    calls = []
    real_read = movielens.read
    monkeypatch.setattr(movielens, "read", lambda *a, **k: calls.append(1) or real_read(*a, **k))
    second = loaders.load("movielens", str(tmp_path), cache_dir=str(cache))  # directory -> same file, cache hit
    assert calls == [] and _pair_set(second) == _pair_set(first)
    third = loaders.load("movielens", str(data), cache_dir=str(cache), min_rating=4)  # new filter -> re-parse
    assert calls == [1] and third.nnz == 2 and len(os.listdir(cache)) == 2
    (cache / files[0]).write_bytes(b"PK\x03\x04 truncated")  # corrupted cache -> rebuilt
    again = loaders.load("movielens", str(data), cache_dir=str(cache))
    assert calls == [1, 1] and _pair_set(again) == _pair_set(first)
    loaders.load("movielens", str(data), cache_dir=str(cache))
    assert calls == [1, 1]
    loaders.load("movielens", str(data), cache_dir=str(cache), use_cache=False)
    assert calls == [1, 1, 1]
    os.utime(data, ns=(1, 1))  # mtime changes the key
    loaders.load("movielens", str(data), cache_dir=str(cache))
    assert calls == [1, 1, 1, 1]


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CML_TF_CACHE", str(tmp_path / "env_cache"))
    data = tmp_path / "raw"
    data.mkdir()
    (data / "u.data").write_text("1\t10\t5\t0\n")
    loaders.load("movielens", str(data))
    assert len(os.listdir(tmp_path / "env_cache")) == 1 and os.listdir(data) == ["u.data"]


# ---------------------------------------------------------------- synthetic and internals


def test_synthetic_is_seeded_skewed_and_exact():
    a = loaders.load("synthetic")
    assert (a.n_users, a.n_items, a.nnz) == (2000, 4000, 80000)
    b = loaders.load("synthetic", num_users=300, num_items=500, num_interactions=6000, seed=3)
    c = synthetic.generate(300, 500, 6000, 3)
    assert (b.matrix != c.matrix).nnz == 0 and b.nnz == 6000
    d = synthetic.generate(300, 500, 6000, 4)
    assert (b.matrix != d.matrix).nnz > 0
    counts = np.sort(a.item_counts())[::-1]
    assert counts[: a.n_items // 10].sum() > 0.3 * a.nnz  # popularity skew
    assert a.user_counts().min() >= 3
    with pytest.raises(DataError, match="num_users must be >= 1"):
        loaders.load("synthetic", num_users=0)


def test_synthetic_cluster_structure():
    x = synthetic.generate(400, 600, 12000, 0)
    dense = x.matrix.toarray()
    # users sharing a primary cluster overlap far more than random pairs: co-occurrence is block structured
    co = dense @ dense.T
    np.fill_diagonal(co, 0)
    top = np.sort(co, axis=1)[:, -5:].mean()
    assert top > 3 * co.mean()


def test_dedupe_and_compact():
    u, i = filters.dedupe_pairs(np.array([2, 0, 2, 0]), np.array([1, 3, 1, 0]), 4)
    np.testing.assert_array_equal(u, [0, 0, 2])
    np.testing.assert_array_equal(i, [0, 3, 1])
    new, old = filters.compact(np.array([5, 2, 5]), 7)
    np.testing.assert_array_equal(new, [1, 0, 1])
    np.testing.assert_array_equal(old, [2, 5])


def test_csv_scan_only_on_error(tmp_path):
    p = tmp_path / "ok.csv"
    p.write_text("a,b\nc,d\n")
    assert (
        csv_loader.scan_for_error(
            str(p),
            sep=",",
            header=False,
            encoding="utf-8",
            quoted=True,
            int_fields={},
            num_fields={},
            nonempty_fields={},
        )
        is None
    )


def test_directory_without_a_unique_file_says_what_it_holds(tmp_path):
    for name in ("a.csv", "b.csv", "c.csv"):
        (tmp_path / name).write_text("1,2\n")
    with pytest.raises(DataError) as e:
        loaders.load("csv", str(tmp_path), use_cache=False)
    assert str(e.value) == (
        f"{tmp_path}: directory holds 3 files matching *.csv / *.tsv / *.txt (candidates: a.csv, b.csv, c.csv), "
        "not one; expected a delimited user,item[,weight] file. Pass the file itself as --data_path"
    )
    for name in ("a.csv", "b.csv", "c.csv"):
        (tmp_path / name).unlink()
    with pytest.raises(DataError, match=r"directory holds no files matching \*\.csv / \*\.tsv / \*\.txt; expected"):
        loaders.load("csv", str(tmp_path), use_cache=False)
    # a data set with a conventional file name names it
    (tmp_path / "a.txt").write_text("u\ts\t9\n")
    (tmp_path / "b.txt").write_text("u\ts\t9\n")
    with pytest.raises(DataError, match=r"holds no train_triplets\.txt and 2 files matching \*\.txt \(candidates: "):
        loaders.load("echonest", str(tmp_path), use_cache=False)


def test_echonest_without_a_path_says_where_the_file_comes_from_and_points_at_the_sample(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.chdir(repo)
    with pytest.raises(DataError) as e:
        loaders.load("echonest", None)
    message = str(e.value)
    assert "needs --data_path" in message and "http://millionsongdataset.com/tasteprofile/" in message
    assert "sample" not in message  # no ../shared/data here: no command that would fail
    sample = tmp_path / "shared" / "data" / "echonest" / "train_triplets_sample.txt"
    sample.parent.mkdir(parents=True)
    sample.write_text("u\ts\t9\n")
    with pytest.raises(DataError) as e:
        loaders.load("echonest", None)
    assert str(e.value).endswith(
        "; or train on the shipped sample: python -m cml_tf.train --dataset=echonest "
        "--data_path=../shared/data/echonest/train_triplets_sample.txt --min_playcount=1 --sampler=2stage"
    )
