"""Train / validation / test splits of a binary user x item matrix.

* `kfold_split`: the paper's protocol, per-user K-fold cross-validation (vectorised);
* `original_split`: bit-exact reproduction of CollMetric's ``utils.split_data`` (3:1:1 per user, seed 1);
* `fo_split`: the HLR reference code's ``fo`` split (deezer/recsys21-hlr): a random split of the interactions;
* `make_split`: dispatch by name (``--split=kfold|original|fo``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

from cml_tf.data.interactions import DataError, Interactions

SPLIT_KINDS = ("kfold", "original", "fo")


def _as_csr(matrix) -> sp.csr_matrix:
    """Canonical binary float32 CSR (sorted indices, no duplicates) of a matrix or `Interactions`."""
    if isinstance(matrix, Interactions):
        return matrix.matrix
    m = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    m.sum_duplicates()
    m.eliminate_zeros()
    m.sort_indices()
    m.data[:] = 1.0
    return m


def _csr_from_mask(m: sp.csr_matrix, mask: np.ndarray) -> sp.csr_matrix:
    """The entries of canonical CSR ``m`` where ``mask[nnz]`` is true, as a float32-ones CSR of the same shape."""
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))[mask]
    indptr = np.zeros(m.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=m.shape[0]), out=indptr[1:])
    out = sp.csr_matrix((np.ones(rows.size, np.float32), m.indices[mask], indptr), shape=m.shape)
    out.has_sorted_indices = True
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """Disjoint train / validation / test interactions.

    Attributes:
        train: [n_users, n_items] CSR float32 ones.
        valid: [n_users, n_items] CSR float32 ones (may be empty).
        test: [n_users, n_items] CSR float32 ones.
    """

    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix

    def validate(self) -> dict:
        """Checks shapes, binary values and pairwise disjointness.

        Returns:
            The `summary` dict.

        Raises:
            DataError: with the offending counts.
        """
        shapes = {self.train.shape, self.valid.shape, self.test.shape}
        if len(shapes) != 1:
            raise DataError(
                f"split parts differ in shape: train {self.train.shape}, valid {self.valid.shape}, test "
                f"{self.test.shape}"
            )
        for name, part in (("train", self.train), ("valid", self.valid), ("test", self.test)):
            if part.nnz and not np.all(part.data == 1):
                raise DataError(f"{name}: {np.count_nonzero(part.data != 1)} of {part.nnz} stored values are not 1")
        for (a, pa), (b, pb) in (
            (("train", self.train), ("valid", self.valid)),
            (("train", self.train), ("test", self.test)),
            (("valid", self.valid), ("test", self.test)),
        ):
            overlap = int(pa.multiply(pb).nnz)
            if overlap:
                raise DataError(f"{a} ({pa.nnz} pairs) and {b} ({pb.nnz} pairs) share {overlap} pairs")
        return self.summary()

    def summary(self) -> dict:
        """Counts: shape, pairs per part, users with at least one pair per part."""
        out = {"users": int(self.train.shape[0]), "items": int(self.train.shape[1])}
        for name, part in (("train", self.train), ("valid", self.valid), ("test", self.test)):
            out[f"{name}_pairs"] = int(part.nnz)
            out[f"{name}_users"] = int(np.count_nonzero(np.diff(part.indptr)))
        return out


def kfold_split(matrix, num_folds: int = 4, fold: int = 0, valid_fraction: float = 0.1, seed: int = 0) -> Split:
    """Per-user K-fold split (the paper's protocol), vectorised.

    Each user's items are ordered by random keys (``numpy.random.default_rng(seed)``, one key per pair, drawn for
    the whole matrix, so every ``fold`` sees the same order) and cut into ``num_folds`` contiguous, near-equal
    folds: the item of rank r among n goes to fold ``r * K // n``. Fold ``fold`` is the test set, the rest is
    training. Over ``fold = 0..K-1`` the K test sets partition each user's items.

    Validation is carved from each user's training items with a second, independent key per pair:
    ``n_valid = max(1, floor(valid_fraction * n_train))``, capped at ``n_train - 1`` (a user keeps at least one
    training item), and 0 when ``valid_fraction == 0`` or ``n_train < 2``.

    Small users: a user with fewer than ``num_folds`` items cannot appear in every test fold, so ALL their items
    are in train for every fold (never in test or validation); they still shape the training data. Users with
    no items are simply empty rows.

    Args:
        matrix: [n_users, n_items] sparse matrix or `Interactions` (non-zeros are the positives).
        num_folds: K >= 2.
        fold: test fold, 0 <= fold < K.
        valid_fraction: in [0, 1).
        seed: the fold assignment depends only on (matrix, seed).

    Returns:
        `Split` with identical shapes.
    """
    if int(num_folds) != num_folds or num_folds < 2:
        raise DataError(f"--num_folds must be an integer >= 2, got {num_folds}")
    if int(fold) != fold or not 0 <= fold < num_folds:
        raise DataError(f"--fold must be in [0, {num_folds}), got {fold}")
    if not 0 <= valid_fraction < 1:
        raise DataError(f"--valid_fraction must be in [0, 1), got {valid_fraction}")
    m = _as_csr(matrix)
    counts = np.diff(m.indptr)
    rows = np.repeat(np.arange(m.shape[0]), counts)
    rng = np.random.default_rng(seed)
    fold_key = rng.random(m.nnz)
    valid_key = rng.random(m.nnz)

    def rank_within_rows(key: np.ndarray, subset: np.ndarray) -> np.ndarray:
        """[nnz] rank of each entry among the entries of its row in ``subset``, ordered by key (-1 outside)."""
        idx = np.flatnonzero(subset)
        order = idx[np.lexsort((key[idx], rows[idx]))]
        sub_counts = np.bincount(rows[idx], minlength=m.shape[0])
        starts = np.concatenate(([0], np.cumsum(sub_counts)[:-1]))
        rank = np.full(m.nnz, -1, dtype=np.int64)
        rank[order] = np.arange(order.size) - starts[rows[order]]
        return rank

    n = counts[rows]
    small = n < num_folds
    fold_of = rank_within_rows(fold_key, np.ones(m.nnz, bool)) * num_folds // np.maximum(n, 1)
    test = (fold_of == fold) & ~small
    train_pool = ~test
    n_train = np.bincount(rows[train_pool], minlength=m.shape[0])
    if valid_fraction > 0:
        n_valid = np.maximum(1, np.floor(valid_fraction * n_train).astype(np.int64))
        n_valid = np.where(n_train >= 2, np.minimum(n_valid, n_train - 1), 0)
        n_valid[counts < num_folds] = 0
    else:
        n_valid = np.zeros(m.shape[0], np.int64)
    valid = train_pool & (rank_within_rows(valid_key, train_pool) < n_valid[rows])
    train = train_pool & ~valid
    return Split(_csr_from_mask(m, train), _csr_from_mask(m, valid), _csr_from_mask(m, test))


def original_split(matrix, ratios=(3, 1, 1), seed: int = 1, min_items: int = 5) -> Split:
    """Bit-exact reproduction of CollMetric's ``utils.split_data(user_item_matrix, split_ratio=(3, 1, 1))``.

    The original seeds the global legacy RNG (``np.random.seed(1)``) and, for each user in row order whose sorted
    item list (``lil_matrix.rows[user]``) has at least 5 items, shuffles it with ``np.random.shuffle``, then puts
    the first ``int(n * 3 / 5)`` items in train, the next ``int(n * 1 / 5)`` in validation and the rest in test.
    Users with fewer than 5 items are left out entirely (in no part) and consume no random numbers.
    ``np.random.RandomState(seed)`` gives the same stream as the seeded global RNG, and shuffling a numpy array
    gives the same permutation as shuffling the list (checked in tests/test_splits.py).

    Args:
        matrix: [n_users, n_items] sparse matrix or `Interactions`.
        ratios: (train, valid, test) proportions.
        seed: RandomState seed.
        min_items: users with fewer items are dropped.

    Returns:
        `Split` with identical shapes.
    """
    if len(ratios) != 3 or min(ratios) < 0 or sum(ratios) <= 0:
        raise DataError(f"split ratios must be three non-negative numbers with a positive sum, got {ratios}")
    m = _as_csr(matrix)
    rs = np.random.RandomState(seed)
    indptr, total = m.indptr, sum(ratios)
    shuffled = m.indices.copy()
    part = np.full(m.nnz, -1, dtype=np.int8)  # 0 train, 1 valid, 2 test, -1 left out
    # A per-user Python loop, on purpose: bit-exact reproduction of the original's RNG stream needs one
    # RandomState.shuffle call per eligible user, in user order. Everything else is numpy slicing.
    for user in np.flatnonzero(np.diff(indptr) >= min_items):
        s, e = indptr[user], indptr[user + 1]
        items = shuffled[s:e]  # a view: shuffled in place
        rs.shuffle(items)
        n = int(e - s)
        train_count = int(n * ratios[0] / total)
        valid_count = int(n * ratios[1] / total)
        part[s : s + train_count] = 0
        part[s + train_count : s + train_count + valid_count] = 1
        part[s + train_count + valid_count : e] = 2
    rows = np.repeat(np.arange(m.shape[0]), np.diff(indptr))
    parts = []
    for k in range(3):
        sel = part == k
        parts.append(sp.csr_matrix((np.ones(int(sel.sum()), np.float32), (rows[sel], shuffled[sel])), shape=m.shape))
    for p in parts:
        p.sort_indices()
    return Split(*parts)


def fo_split(matrix, test_fraction: float = 0.2, valid_fraction: float = 0.1, seed: int = 0) -> Split:
    """The HLR reference code's ``fo`` split: interactions (not users) drawn at random.

    ``round(test_fraction * nnz)`` interactions, drawn uniformly without replacement, are the test set; then
    ``round(valid_fraction * rest)`` of the rest are the validation set (the reference splits twice with
    scikit-learn's ``train_test_split``, test 0.2 then validation 0.1 of what is left). Its n-core filter is a
    loader option (``--min_user_interactions=10 --min_item_users=10 --iterative_core``), applied before the split.
    A user may end up with no training item, or no test item (then it is not evaluated).

    Args:
        matrix: [n_users, n_items] sparse matrix or `Interactions`.
        test_fraction: share of the interactions in test.
        valid_fraction: share of the remaining interactions in validation.
        seed: seed of the permutation.

    Returns:
        `Split` with identical shapes.
    """
    if not (0 < test_fraction < 1 and 0 <= valid_fraction < 1):
        raise DataError(f"fo split: fractions must be in (0, 1), got test {test_fraction}, valid {valid_fraction}")
    m = _as_csr(matrix)
    order = np.random.default_rng(seed).permutation(m.nnz)
    n_test = int(round(test_fraction * m.nnz))
    n_valid = int(round(valid_fraction * (m.nnz - n_test)))
    part = np.zeros(m.nnz, np.int8)
    part[order[:n_test]] = 2
    part[order[n_test : n_test + n_valid]] = 1
    return Split(*(_csr_from_mask(m, part == k) for k in range(3)))


def make_split(matrix, kind: str, **kw) -> Split:
    """``kind='kfold'`` -> `kfold_split`, ``'original'`` -> `original_split`, ``'fo'`` -> `fo_split`; ``kw`` passed
    through."""
    if kind == "kfold":
        return kfold_split(matrix, **kw)
    if kind == "original":
        return original_split(matrix, **kw)
    if kind == "fo":
        return fo_split(matrix, **kw)
    raise DataError(f"--split={kind!r} is not a known split; expected one of: {', '.join(SPLIT_KINDS)}")
