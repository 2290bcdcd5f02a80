"""The `Interactions` value: a binary user x item CSR matrix plus the original id maps.

Everything downstream of the raw-file loaders consumes this one value. It is saved to and loaded from an
``.npz`` file (read with ``allow_pickle=False``), so parsing a raw file happens once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile

import numpy as np
import scipy.sparse as sp

from cml_tf.io import save_npz_atomic


class DataError(ValueError):
    """Bad input data: the message names the file, line or flag and what was expected."""


def hash_ids(h, *ids: np.ndarray) -> None:
    """Adds id arrays to the hashlib object ``h`` as the bytes of their fixed-width unicode text (numpy ``str``)."""
    for arr in ids:
        h.update(np.ascontiguousarray(np.asarray(arr).astype(str)).tobytes())


def _text(ids: np.ndarray) -> np.ndarray:
    """The ids as unicode text of the narrowest width that holds them (int 7 and str "7" alike)."""
    text = ids.astype(str)
    width = int(np.char.str_len(text).max()) if text.size else 1
    return text.astype(f"<U{max(width, 1)}")


def _as_plain_array(ids, name: str) -> np.ndarray:
    """Returns ids as a numpy array of a non-object dtype (ints or unicode), so it saves without pickle."""
    arr = np.asarray(ids)
    if arr.dtype == object:
        arr = arr.astype(str)
    if arr.ndim != 1:
        raise DataError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


@dataclasses.dataclass(frozen=True, eq=False)
class Interactions:
    """Binary implicit feedback.

    Attributes:
        matrix: [n_users, n_items] scipy CSR, float32 ones, sorted indices, no duplicates.
        user_ids: [n_users] original user ids (int or str); row u is user ``user_ids[u]``.
        item_ids: [n_items] original item ids; column i is item ``item_ids[i]``.
    """

    matrix: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray

    def __post_init__(self):
        m = sp.csr_matrix(self.matrix, dtype=np.float32)
        m.sum_duplicates()
        m.sort_indices()
        m.data[:] = 1.0
        m.eliminate_zeros()
        object.__setattr__(self, "matrix", m)
        object.__setattr__(self, "user_ids", _as_plain_array(self.user_ids, "user_ids"))
        object.__setattr__(self, "item_ids", _as_plain_array(self.item_ids, "item_ids"))
        if len(self.user_ids) != m.shape[0]:
            raise DataError(f"{len(self.user_ids)} user ids for a matrix with {m.shape[0]} rows")
        if len(self.item_ids) != m.shape[1]:
            raise DataError(f"{len(self.item_ids)} item ids for a matrix with {m.shape[1]} columns")

    @classmethod
    def from_pairs(cls, users, items, n_users=None, n_items=None, user_ids=None, item_ids=None) -> Interactions:
        """Builds interactions from parallel arrays of integer user and item indices.

        Args:
            users: [nnz] int user indices in [0, n_users).
            items: [nnz] int item indices in [0, n_items).
            n_users, n_items: matrix shape; default max index + 1.
            user_ids, item_ids: original ids; default the indices themselves.
        """
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        if users.shape != items.shape:
            raise DataError(f"{users.size} user indices but {items.size} item indices")
        n_users = int(users.max()) + 1 if n_users is None else int(n_users)
        n_items = int(items.max()) + 1 if n_items is None else int(n_items)
        if users.size and (users.min() < 0 or users.max() >= n_users):
            raise DataError(f"user index out of range [0, {n_users}): min {users.min()}, max {users.max()}")
        if items.size and (items.min() < 0 or items.max() >= n_items):
            raise DataError(f"item index out of range [0, {n_items}): min {items.min()}, max {items.max()}")
        m = sp.csr_matrix((np.ones(users.size, np.float32), (users, items)), shape=(n_users, n_items))
        return cls(
            m,
            np.arange(n_users) if user_ids is None else user_ids,
            np.arange(n_items) if item_ids is None else item_ids,
        )

    @property
    def n_users(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_items(self) -> int:
        return self.matrix.shape[1]

    @property
    def nnz(self) -> int:
        return int(self.matrix.nnz)

    @property
    def density(self) -> float:
        return self.nnz / max(1, self.n_users * self.n_items)

    def item_counts(self) -> np.ndarray:
        """[n_items] int64 number of users per item."""
        return np.bincount(self.matrix.indices, minlength=self.n_items).astype(np.int64)

    def user_counts(self) -> np.ndarray:
        """[n_users] int64 number of items per user."""
        return np.diff(self.matrix.indptr).astype(np.int64)

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Returns ([nnz] int64 users, [nnz] int64 items), row-major."""
        users = np.repeat(np.arange(self.n_users, dtype=np.int64), self.user_counts())
        return users, self.matrix.indices.astype(np.int64)

    def fingerprint(self) -> str:
        """Hex SHA-256 of the content: the shape, the CSR's row pointers and column indices, and both id maps.

        Equal for equal interactions however they were read (raw file, cache, another path); any added, dropped or
        renumbered user, item or pair changes it. Hashes about 16 bytes per pair (well under a second for 10M pairs).
        """
        user_text, item_text = _text(self.user_ids), _text(self.item_ids)
        h = hashlib.sha256(
            json.dumps([list(self.matrix.shape), self.nnz, user_text.itemsize, item_text.itemsize]).encode()
        )
        h.update(self.matrix.indptr.astype(np.int64).tobytes())
        h.update(self.matrix.indices.astype(np.int64).tobytes())
        hash_ids(h, user_text, item_text)
        return h.hexdigest()

    def stats(self) -> dict:
        """One row of the paper's Table 1."""
        return {"users": self.n_users, "items": self.n_items, "interactions": self.nnz, "density": self.density}

    def save(self, path: str) -> None:
        """Writes an ``.npz`` file atomically (temp file + rename)."""
        save_npz_atomic(
            path,
            indptr=self.matrix.indptr,
            indices=self.matrix.indices,
            shape=np.asarray(self.matrix.shape, np.int64),
            user_ids=self.user_ids,
            item_ids=self.item_ids,
        )

    @classmethod
    def load(cls, path: str) -> Interactions:
        """Reads a file written by `save`, without unpickling anything."""
        try:
            with np.load(path, allow_pickle=False) as z:
                indptr, indices, shape = z["indptr"], z["indices"], tuple(z["shape"])
                m = sp.csr_matrix((np.ones(indices.size, np.float32), indices, indptr), shape=shape)
                return cls(m, z["user_ids"], z["item_ids"])
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"{path}: not a valid interactions cache ({e})") from e
