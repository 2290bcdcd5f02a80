"""The `Interactions` value: construction, counts, npz round trip without pickle."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cml_tf.data.interactions import DataError, Interactions


def test_from_pairs_dedupes_and_counts():
    x = Interactions.from_pairs([0, 0, 0, 2], [1, 1, 3, 0], n_users=3, n_items=4)
    assert x.matrix.shape == (3, 4) and x.nnz == 3
    assert x.matrix.dtype == np.float32 and np.all(x.matrix.data == 1)
    np.testing.assert_array_equal(x.user_counts(), [2, 0, 1])
    np.testing.assert_array_equal(x.item_counts(), [1, 1, 0, 1])
    users, items = x.pairs()
    np.testing.assert_array_equal(users, [0, 0, 2])
    np.testing.assert_array_equal(items, [1, 3, 0])
    assert x.stats() == {"users": 3, "items": 4, "interactions": 3, "density": 3 / 12}


def test_out_of_range_and_mismatched_ids():
    with pytest.raises(DataError, match="item index out of range"):
        Interactions.from_pairs([0], [5], n_users=1, n_items=3)
    with pytest.raises(DataError, match="user ids"):
        Interactions(sp.csr_matrix((2, 2)), np.arange(3), np.arange(2))


def test_save_load_round_trip_string_ids(tmp_path):
    x = Interactions.from_pairs([0, 1], [1, 0], user_ids=np.array(["a", "b"], dtype=object), item_ids=["x", "y"])
    path = str(tmp_path / "x.npz")
    x.save(path)
    with np.load(path, allow_pickle=False) as z:  # readable without pickle
        assert z["user_ids"].dtype.kind == "U"
    y = Interactions.load(path)
    assert (y.matrix != x.matrix).nnz == 0
    np.testing.assert_array_equal(y.user_ids, ["a", "b"])
    np.testing.assert_array_equal(y.item_ids, ["x", "y"])


def test_load_garbage_raises_data_error(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"not an npz at all")
    with pytest.raises(DataError, match="bad.npz"):
        Interactions.load(str(path))


def test_fingerprint_is_the_content_whatever_the_construction(tmp_path):
    base = Interactions.from_pairs([0, 0, 1, 2], [1, 2, 0, 2], user_ids=["a", "b", "c"], item_ids=[10, 11, 12])
    # the same pairs in another order, with a duplicate, through a dense matrix, and back from the cache file
    same = [
        Interactions.from_pairs([2, 1, 0, 0, 0], [2, 0, 2, 1, 1], user_ids=["a", "b", "c"], item_ids=[10, 11, 12]),
        Interactions(sp.csr_matrix(base.matrix.toarray()), np.array(["a", "b", "c"]), np.array(["10", "11", "12"])),
    ]
    base.save(str(tmp_path / "i.npz"))
    same.append(Interactions.load(str(tmp_path / "i.npz")))
    assert all(s.fingerprint() == base.fingerprint() for s in same)
    other = [
        Interactions.from_pairs(
            [0, 0, 1], [1, 2, 0], 3, 3, user_ids=["a", "b", "c"], item_ids=[10, 11, 12]
        ),  # a pair less
        Interactions.from_pairs([0, 0, 1, 2], [1, 2, 0, 1], user_ids=["a", "b", "c"], item_ids=[10, 11, 12]),  # moved
        Interactions.from_pairs([0, 0, 1, 2], [1, 2, 0, 2], user_ids=["a", "b", "d"], item_ids=[10, 11, 12]),  # renamed
        Interactions.from_pairs([0, 0, 1, 2], [1, 2, 0, 2], 4, user_ids=["a", "b", "c", "e"], item_ids=[10, 11, 12]),
    ]
    prints = {o.fingerprint() for o in other} | {base.fingerprint()}
    assert len(prints) == len(other) + 1
