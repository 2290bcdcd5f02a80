"""The top-k lists a run keeps: a seeded sample of users, and their recommendations (recommendations.npz)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from cml_tf.io import save_npz_atomic


def sample_users(held_out: sp.spmatrix, max_users: int | None, seed: int) -> np.ndarray:
    """[n] int32 sorted: a seeded sample of up to ``max_users`` of the users with a held-out (validation or test)
    item; all of them when ``max_users`` is None or not smaller."""
    users = np.flatnonzero(np.diff(sp.csr_matrix(held_out).indptr) > 0)
    if max_users is not None and max_users < users.size:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    return users.astype(np.int32)


def write_recommendations(path: str, score_fn, split, users, k: int, batch: int = 256, protocol: str = "cml") -> None:
    """Saves the top-k of ``users`` with the items masked that the test evaluation masks
    (``split.excluded_at_test(protocol)``: train + valid under "cml"), to an .npz:
    ``users`` [n] int32, ``items`` [n, k] int32 (best first), ``item_train_count`` [n_items] int64.

    Args:
        path: the .npz file.
        score_fn: users [b] -> [b, n_items] scores, higher is better.
        split: the fold's `cml_tf.data.splits.Split` (train + valid items are masked; train gives the popularity).
        users: [n] int user indices.
        k: list length (at most the catalogue).
        batch: users per scoring call.
        protocol: "cml" or "reference" (see `cml_tf.data.splits.Split.excluded_at_test`).
    """
    seen = split.excluded_at_test(protocol)
    n_items = seen.shape[1]
    k = min(k, n_items)
    out = np.zeros((len(users), k), np.int32)
    for start in range(0, len(users), batch):
        u = users[start : start + batch]
        scores = np.array(score_fn(u), dtype=np.float32, copy=True)
        rows = seen[u]
        scores[np.repeat(np.arange(len(u)), np.diff(rows.indptr)), rows.indices] = -np.inf
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
        out[start : start + len(u)] = np.take_along_axis(top, order, 1)
    counts = np.asarray(split.train.sum(0)).ravel().astype(np.int64)
    save_npz_atomic(path, users=np.asarray(users, np.int32), items=out, item_train_count=counts)
