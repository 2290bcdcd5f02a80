"""Side information of users and items, aligned to an `Interactions` value's id maps.

`SideInfo` holds what the loaders read beside the interactions:

* ``item_groups``: [n_items, G] CSR of 0/1 flags, the items' metadata groups — MovieLens genres (``u.item``'s 19
  flags, named by ``u.genre``) or citeulike-t tags (``tag-item.dat``). The side-information sampler draws
  negatives that share a group with the positive; the clustering evaluation scores item embeddings against them.
* ``item_titles``: [n_items] str (MovieLens) or None.
* ``user_features``: [n_users, F] float32 encoded registration features (MovieLens ``u.user``: age, gender,
  occupation, zip region; see `cml_tf.data.loaders.movielens.encode_users`) or None, with ``user_feature_names`` [F].

Rows follow the interactions' rows and columns: row u is user ``interactions.user_ids[u]``, row i is item
``interactions.item_ids[i]``. `SideInfo` saves to and loads from ``.npz`` without pickle, as `Interactions` does;
`cml_tf.data.loaders.load_side_info` caches it keyed by the feature files and the id maps.

**One label per item** (`first_group`): where an item needs a single genre (clustering ARI / AMI, kNN accuracy),
it is its FIRST group in file order (``u.genre``'s order: unknown, Action, Adventure, Animation, ...); items
without a group get -1 and are left out of those metrics.
"""

from __future__ import annotations

import dataclasses
import zipfile

import numpy as np
import scipy.sparse as sp

from cml_tf.data.interactions import DataError
from cml_tf.io import save_npz_atomic


@dataclasses.dataclass(frozen=True, eq=False)
class SideInfo:
    """Item groups (genres / tags), item titles and encoded user features; see the module docstring.

    Attributes:
        item_groups: [n_items, G] float32 CSR of 0/1 flags, sorted indices.
        group_names: [G] str.
        group_kind: what a group is: "genre" or "tag".
        item_titles: [n_items] str, or None.
        user_features: [n_users, F] float32, or None.
        user_feature_names: [F] str, or None (set together with ``user_features``).
    """

    item_groups: sp.csr_matrix
    group_names: np.ndarray
    group_kind: str
    item_titles: np.ndarray | None = None
    user_features: np.ndarray | None = None
    user_feature_names: np.ndarray | None = None

    def __post_init__(self):
        m = sp.csr_matrix(self.item_groups, dtype=np.float32)
        m.sum_duplicates()
        m.eliminate_zeros()
        m.data[:] = 1.0
        m.sort_indices()
        object.__setattr__(self, "item_groups", m)
        object.__setattr__(self, "group_names", np.asarray(self.group_names).astype(str))
        if self.group_names.shape != (m.shape[1],):
            raise DataError(f"{self.group_names.size} group names for {m.shape[1]} item groups")
        if self.item_titles is not None:
            object.__setattr__(self, "item_titles", np.asarray(self.item_titles).astype(str))
            if self.item_titles.shape != (m.shape[0],):
                raise DataError(f"{self.item_titles.size} item titles for {m.shape[0]} items")
        if (self.user_features is None) != (self.user_feature_names is None):
            raise DataError("user_features and user_feature_names go together")
        if self.user_features is not None:
            features = np.asarray(self.user_features, np.float32)
            names = np.asarray(self.user_feature_names).astype(str)
            if features.ndim != 2 or names.shape != (features.shape[1],):
                raise DataError(f"user features of shape {features.shape} with {names.size} names")
            object.__setattr__(self, "user_features", features)
            object.__setattr__(self, "user_feature_names", names)

    @property
    def n_items(self) -> int:
        return self.item_groups.shape[0]

    @property
    def n_groups(self) -> int:
        return self.item_groups.shape[1]

    def first_group(self) -> np.ndarray:
        """[n_items] int64: each item's first group (lowest column), -1 for an item without a group."""
        m = self.item_groups
        has = np.diff(m.indptr) > 0
        first = np.full(m.shape[0], -1, np.int64)
        first[has] = m.indices[m.indptr[:-1][has]]
        return first

    def save(self, path: str) -> None:
        """Writes an ``.npz`` atomically (no pickle); absent parts are stored as empty arrays with a flag."""
        arrays = {
            "indptr": self.item_groups.indptr,
            "indices": self.item_groups.indices,
            "shape": np.asarray(self.item_groups.shape, np.int64),
            "group_names": self.group_names,
            "group_kind": np.asarray(self.group_kind),
            "has_titles": np.asarray(self.item_titles is not None),
            "item_titles": self.item_titles if self.item_titles is not None else np.zeros(0, str),
            "has_users": np.asarray(self.user_features is not None),
            "user_features": self.user_features if self.user_features is not None else np.zeros((0, 0), np.float32),
            "user_feature_names": (
                self.user_feature_names if self.user_feature_names is not None else np.zeros(0, str)
            ),
        }
        save_npz_atomic(path, **arrays)

    @classmethod
    def load(cls, path: str) -> SideInfo:
        """Reads a file written by `save`, without unpickling anything."""
        try:
            with np.load(path, allow_pickle=False) as z:
                indices = z["indices"]
                groups = sp.csr_matrix(
                    (np.ones(indices.size, np.float32), indices, z["indptr"]), shape=tuple(z["shape"])
                )
                users = bool(z["has_users"])
                return cls(
                    groups,
                    z["group_names"],
                    str(z["group_kind"]),
                    z["item_titles"] if bool(z["has_titles"]) else None,
                    z["user_features"] if users else None,
                    z["user_feature_names"] if users else None,
                )
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"{path}: not a valid side-information cache ({e})") from e


def align(ids: np.ndarray, file_ids: np.ndarray, path: str, what: str) -> np.ndarray:
    """Row of each id among ``file_ids`` (the ids a feature file lists), or DataError naming the first missing id.

    Args:
        ids: [n] ids of the interactions (users or items).
        file_ids: [m] ids listed in the feature file, unique.
        path: the feature file (for the message).
        what: "user" or "item".

    Returns:
        [n] int64 rows into the file's arrays.
    """
    ids = np.asarray(ids)
    file_ids = np.asarray(file_ids)
    if ids.dtype.kind != file_ids.dtype.kind:
        ids, file_ids = ids.astype(str), file_ids.astype(str)
    order = np.argsort(file_ids, kind="stable")
    sorted_ids = file_ids[order]
    if sorted_ids.size and np.any(sorted_ids[1:] == sorted_ids[:-1]):
        dup = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]][0]
        raise DataError(f"{path}: {what} {dup} is listed twice")
    pos = np.minimum(np.searchsorted(sorted_ids, ids), max(sorted_ids.size - 1, 0))
    found = sorted_ids[pos] == ids if sorted_ids.size else np.zeros(ids.size, bool)
    if not np.all(found):
        missing = ids[~found]
        raise DataError(
            f"{path}: no line for {what} {missing[0]} ({missing.size} of the {ids.size} {what}s of the interactions "
            "have none)"
        )
    return order[pos].astype(np.int64)
