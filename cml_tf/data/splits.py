"""Train / validation / test splits of a binary user x item matrix.

* `kfold_split`: the paper's protocol, per-user K-fold cross-validation (vectorised);
* `original_split`: bit-exact reproduction of CollMetric's ``utils.split_data`` (3:1:1 per user, seed 1);
* `fo_split`: the HLR reference code's ``fo`` split (deezer/recsys21-hlr): a random split of the interactions;
* `given_split`: a split read from files (``--split=given``: LightGCN's train.txt / valid.txt / test.txt, RecBole's
  atomic files, or any loader's files), checked for overlaps and test users without training items;
* `make_split`: dispatch by name (``--split=kfold|original|fo``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

from cml_tf.data.interactions import DataError, Interactions

SPLIT_KINDS = ("kfold", "original", "fo")
PROTOCOLS = ("cml", "reference")


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


def _rank_within_rows(rows: np.ndarray, n_rows: int, key: np.ndarray, subset: np.ndarray) -> np.ndarray:
    """[nnz] rank of each entry among the entries of its row in ``subset``, ordered by ``key`` (-1 outside).

    Args:
        rows: [nnz] row of each entry.
        n_rows: number of rows.
        key: [nnz] float sort key.
        subset: [nnz] bool, the entries ranked.
    """
    idx = np.flatnonzero(subset)
    order = idx[np.lexsort((key[idx], rows[idx]))]
    sub_counts = np.bincount(rows[idx], minlength=n_rows)
    starts = np.concatenate(([0], np.cumsum(sub_counts)[:-1]))
    rank = np.full(rows.size, -1, dtype=np.int64)
    rank[order] = np.arange(order.size) - starts[rows[order]]
    return rank


def _valid_counts(n_train: np.ndarray, valid_fraction: float) -> np.ndarray:
    """[n_users] validation items carved from each user's ``n_train`` training items: ``max(1, floor(f * n))``,
    capped at ``n - 1`` (a user keeps a training item), 0 when ``f == 0`` or ``n < 2``."""
    if not valid_fraction > 0:
        return np.zeros(n_train.shape[0], np.int64)
    n_valid = np.maximum(1, np.floor(valid_fraction * n_train).astype(np.int64))
    return np.where(n_train >= 2, np.minimum(n_valid, n_train - 1), 0)


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """Disjoint train / validation / test interactions.

    Attributes:
        train: [n_users, n_items] CSR float32 ones.
        valid: [n_users, n_items] CSR float32 ones (may be empty).
        test: [n_users, n_items] CSR float32 ones.
        valid_from_train: the validation pairs were carved out of a given training file (`given_split` without a
            validation file), so at test time they count as training items under the reference protocol.
    """

    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    valid_from_train: bool = False

    def excluded_at_test(self, protocol: str = "cml") -> sp.csr_matrix:
        """The items masked from each user's test ranking (and what the serving layer calls seen).

        Args:
            protocol: "cml": training + validation items (cml_tf's own protocol); "reference": the items of the
                training file only (LightGCN's and its successors' code), i.e. ``train``, plus ``valid`` when it was
                carved out of the training file; validation items from their own file stay rankable.

        Returns:
            [n_users, n_items] CSR float32 ones, sorted indices.
        """
        if protocol not in PROTOCOLS:
            raise ValueError(f"--protocol: unknown {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
        if protocol == "reference" and not self.valid_from_train:
            return self.train
        out = (self.train + self.valid).tocsr()
        out.sort_indices()
        return out

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

    n = counts[rows]
    small = n < num_folds
    fold_of = _rank_within_rows(rows, m.shape[0], fold_key, np.ones(m.nnz, bool)) * num_folds // np.maximum(n, 1)
    test = (fold_of == fold) & ~small
    train_pool = ~test
    n_train = np.bincount(rows[train_pool], minlength=m.shape[0])
    n_valid = _valid_counts(n_train, valid_fraction)
    n_valid[counts < num_folds] = 0
    valid = train_pool & (_rank_within_rows(rows, m.shape[0], valid_key, train_pool) < n_valid[rows])
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


def _first(part, mask: np.ndarray) -> int:
    """Index of the pair of ``part`` selected by ``mask`` that comes first in its file."""
    idx = np.flatnonzero(mask)
    return int(idx[0] if part.lines is None else idx[np.argmin(part.lines[idx])])


def _at(part, index: int) -> str:
    """``FILE: line N`` of pair ``index`` of ``part`` (``FILE`` alone without line numbers)."""
    return part.file if part.lines is None else f"{part.file}: line {int(part.lines[index])}"


def given_split(interactions: Interactions, parts: dict, valid_fraction: float = 0.1, seed: int = 0) -> Split:
    """The split given by files, checked; validation carved from training when no validation file is given.

    Args:
        interactions: the union of the parts (its shape and id maps; ids appear in the messages).
        parts: {"train", "test", "valid" (may be None)} -> a part with attributes ``file`` (path, for messages),
            ``users`` / ``items`` ([n] int64 row / column indices into ``interactions``) and ``lines`` ([n] int64
            1-based line of each pair in ``file``, or None), as `cml_tf.data.loaders.load_given` returns them.
        valid_fraction: without a validation part, the share of each user's training items held out for
            validation (the count rule of `kfold_split`: ``max(1, floor(f * n))``, at most ``n - 1``, 0 when
            ``n < 2``), drawn with ``numpy.random.default_rng(seed)``; 0: no validation.
        seed: the split seed.

    Returns:
        `Split` (``valid_from_train`` when validation was carved out of training).

    Raises:
        DataError: naming the file and line: a pair in two parts, a test user with no training item, an empty part.
    """
    n_users, n_items = interactions.n_users, interactions.n_items
    given = {name: parts.get(name) for name in ("train", "valid", "test")}
    keys = {}
    for name, part in given.items():
        if part is None:
            continue
        if not len(part.users):
            raise DataError(f"{part.file}: no (user, item) pair: the {name} part of a given split cannot be empty")
        keys[name] = np.asarray(part.users, np.int64) * n_items + np.asarray(part.items, np.int64)
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        if a not in keys or b not in keys:
            continue
        shared = np.isin(keys[b], keys[a])
        if shared.any():
            first = _first(given[b], shared)
            key = keys[b][first]
            u, i = int(key // n_items), int(key % n_items)
            raise DataError(
                f"{_at(given[b], first)}: user {interactions.user_ids[u]} item {interactions.item_ids[i]} is also in "
                f"{_at(given[a], _first(given[a], keys[a] == key))}: the parts of a given split must be disjoint"
            )
    has_train = np.zeros(n_users, bool)
    has_train[given["train"].users] = True
    orphan = ~has_train[given["test"].users]
    if orphan.any():
        first = _first(given["test"], orphan)
        raise DataError(
            f"{_at(given['test'], first)}: user {interactions.user_ids[int(given['test'].users[first])]} has test "
            f"items but no training item in {given['train'].file}"
        )

    def csr(part_keys: np.ndarray) -> sp.csr_matrix:
        """[n_users, n_items] canonical CSR of the distinct keys ``user * n_items + item``."""
        k = np.unique(part_keys)
        m = sp.csr_matrix((np.ones(k.size, np.float32), (k // n_items, k % n_items)), shape=(n_users, n_items))
        m.sort_indices()
        return m

    train, test = csr(keys["train"]), csr(keys["test"])
    if "valid" in keys:
        return Split(train, csr(keys["valid"]), test)
    if not valid_fraction > 0:
        return Split(train, csr(np.zeros(0, np.int64)), test)
    if not 0 < valid_fraction < 1:
        raise DataError(f"--valid_fraction must be in [0, 1), got {valid_fraction}")
    rows = np.repeat(np.arange(n_users), np.diff(train.indptr))
    key = np.random.default_rng(seed).random(train.nnz)
    n_valid = _valid_counts(np.diff(train.indptr), valid_fraction)
    valid = _rank_within_rows(rows, n_users, key, np.ones(train.nnz, bool)) < n_valid[rows]
    return Split(_csr_from_mask(train, ~valid), _csr_from_mask(train, valid), test, valid_from_train=True)


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
