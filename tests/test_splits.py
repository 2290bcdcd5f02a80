"""Split properties: disjointness, coverage, determinism, fold partition, validation size, CollMetric parity."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.sparse as sp

from cml_tf.data import loaders
from cml_tf.data.interactions import DataError, Interactions
from cml_tf.data.splits import Split, kfold_split, make_split, original_split


def _pairs(m) -> set:
    m = m.tocoo()
    return set(zip(m.row.tolist(), m.col.tolist()))


def _random_matrix(n_users=60, n_items=80, seed=0):
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 30, n_users)
    counts[:4] = [0, 1, 3, 4]  # empty, and smaller than / equal to K=4
    users = np.repeat(np.arange(n_users), counts)
    items = np.concatenate([rng.choice(n_items, c, replace=False) for c in counts])
    return Interactions.from_pairs(users, items, n_users, n_items).matrix


def test_kfold_properties():
    m = _random_matrix()
    counts = np.diff(m.indptr)
    tests = []
    for fold in range(4):
        s = kfold_split(m, num_folds=4, fold=fold, valid_fraction=0.2, seed=7)
        summary = s.validate()
        assert summary["train_pairs"] + summary["valid_pairs"] + summary["test_pairs"] == m.nnz
        assert _pairs(s.train) | _pairs(s.valid) | _pairs(s.test) == _pairs(m)
        assert all(p.dtype == np.float32 and p.shape == m.shape for p in (s.train, s.valid, s.test))
        n_test = np.diff(s.test.indptr)
        big = counts >= 4
        # contiguous near-equal folds: fold f gets floor-ish n/K items
        expected = np.array([np.sum((np.arange(n) * 4 // n) == fold) if n else 0 for n in counts])
        np.testing.assert_array_equal(n_test[big], expected[big])
        # small users (< K items): everything in train, every fold
        np.testing.assert_array_equal(np.diff(s.train.indptr)[~big], counts[~big])
        assert n_test[~big].sum() == 0 and np.diff(s.valid.indptr)[~big].sum() == 0
        # validation: max(1, floor(0.2 * n_train)) of the training pool, at least one train item left
        pool = counts - n_test
        n_valid = np.diff(s.valid.indptr)
        want = np.where(pool >= 2, np.minimum(np.maximum(1, np.floor(0.2 * pool)), pool - 1), 0)
        np.testing.assert_array_equal(n_valid[big], want[big])
        again = kfold_split(m, num_folds=4, fold=fold, valid_fraction=0.2, seed=7)
        assert all(
            (a != b).nnz == 0 for a, b in zip((s.train, s.valid, s.test), (again.train, again.valid, again.test))
        )
        tests.append(_pairs(s.test))
    # the K test folds partition the items of every user with >= K items
    assert sum(len(t) for t in tests) == len(set().union(*tests))
    big_pairs = {(u, i) for u, i in _pairs(m) if counts[u] >= 4}
    assert set().union(*tests) == big_pairs
    other = kfold_split(m, num_folds=4, fold=0, valid_fraction=0.2, seed=8)
    assert _pairs(other.test) != tests[0]


def test_kfold_hand_example_and_no_validation():
    m = sp.csr_matrix(np.ones((1, 8), np.float32))
    s = kfold_split(m, num_folds=4, fold=1, valid_fraction=0.0, seed=0)
    assert (s.train.nnz, s.valid.nnz, s.test.nnz) == (6, 0, 2)
    s = kfold_split(m, num_folds=4, fold=1, valid_fraction=0.5, seed=0)
    assert (s.train.nnz, s.valid.nnz, s.test.nnz) == (3, 3, 2)


def test_kfold_bad_arguments():
    m = _random_matrix()
    with pytest.raises(DataError, match="--fold"):
        kfold_split(m, num_folds=4, fold=4)
    with pytest.raises(DataError, match="--num_folds"):
        kfold_split(m, num_folds=1)
    with pytest.raises(DataError, match="--valid_fraction"):
        kfold_split(m, valid_fraction=1.0)


def test_shuffle_list_and_array_same_permutation():
    for seed in range(5):
        for n in (1, 2, 5, 13, 64):
            a = list(range(n))
            b = np.arange(n, dtype=np.int32)
            ra, rb = np.random.RandomState(seed), np.random.RandomState(seed)
            ra.shuffle(a)
            rb.shuffle(b[:])  # a view, as original_split shuffles slices in place
            assert a == b.tolist()
            assert ra.randint(1 << 30) == rb.randint(1 << 30)  # same number of draws consumed


def _collmetric_split_data(user_item_matrix, split_ratio=(3, 1, 1), seed=1):
    """Plain-Python transcription of CollMetric utils.split_data (dok matrices replaced by pair sets)."""
    np.random.seed(seed)  # noqa: NPY002 - the original uses the legacy global RNG
    train, validation, test = set(), set(), set()
    user_item_matrix = sp.lil_matrix(user_item_matrix)
    for user in range(user_item_matrix.shape[0]):
        items = list(user_item_matrix.rows[user])
        if len(items) >= 5:
            np.random.shuffle(items)  # noqa: NPY002
            train_count = int(len(items) * split_ratio[0] / sum(split_ratio))
            valid_count = int(len(items) * split_ratio[1] / sum(split_ratio))
            for i in items[0:train_count]:
                train.add((user, i))
            for i in items[train_count : train_count + valid_count]:
                validation.add((user, i))
            for i in items[train_count + valid_count :]:
                test.add((user, i))
    return train, validation, test


def test_original_split_equals_collmetric_on_ml100k(shared_data):
    x = loaders.load("movielens", os.path.join(shared_data, "ml-100k"), use_cache=False)
    s = original_split(x)
    s.validate()
    ref = _collmetric_split_data(x.matrix)
    assert (_pairs(s.train), _pairs(s.valid), _pairs(s.test)) == ref


def test_original_split_small_users_left_out():
    m = _random_matrix(seed=3)
    s = original_split(m)
    counts = np.diff(m.indptr)
    kept = np.diff(s.train.indptr) + np.diff(s.valid.indptr) + np.diff(s.test.indptr)
    np.testing.assert_array_equal(kept, np.where(counts >= 5, counts, 0))
    n = counts[counts >= 5]
    np.testing.assert_array_equal(np.diff(s.train.indptr)[counts >= 5], (n * 3 / 5).astype(int))
    assert (_pairs(s.train), _pairs(s.valid), _pairs(s.test)) == _collmetric_split_data(m)


def test_make_split_and_validate():
    m = _random_matrix()
    assert make_split(m, "kfold", fold=2).validate()["test_pairs"] > 0
    assert make_split(m, "original", seed=1).train.nnz == original_split(m).train.nnz
    with pytest.raises(DataError, match="--split='loo'.*kfold, original"):
        make_split(m, "loo")
    bad = Split(m, m, sp.csr_matrix(m.shape, dtype=np.float32))
    with pytest.raises(DataError, match="share"):
        bad.validate()


def test_fo_split_draws_interactions_at_random_in_the_reference_proportions():
    from cml_tf.data.splits import fo_split

    rng = np.random.default_rng(3)
    m = sp.csr_matrix((rng.random((50, 40)) < 0.3).astype(np.float32))
    split = fo_split(m, test_fraction=0.2, valid_fraction=0.1, seed=7)
    split.validate()  # disjoint, binary, same shape
    total = split.train + split.valid + split.test
    assert (total != m).nnz == 0  # every interaction in exactly one part
    assert split.test.nnz == round(0.2 * m.nnz)
    assert split.valid.nnz == round(0.1 * (m.nnz - split.test.nnz))
    again = fo_split(m, seed=7)
    assert (again.test != split.test).nnz == 0
    assert (fo_split(m, seed=8).test != split.test).nnz > 0
