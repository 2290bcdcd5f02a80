"""Shared, vectorised post-parse pipeline: row threshold, de-duplication, count filters, compaction, CSR.

Every loader parses its raw file into integer codes ``users[n]``, ``items[n]`` (plus an optional per-row value
such as a rating or play count) and hands them to `build`, which:

1. keeps rows whose value passes the row threshold (``value >= min_value``), once;
2. removes duplicate (user, item) pairs (a pair counts once, whatever its number of rows);
3. applies the count filters in the order given (e.g. users with >= k items, then items with >= m users), once,
   or, with ``iterative_core=True``, repeats the whole sequence until nothing changes (a k-core);
4. drops users / items left without interactions (unless the catalog is declared) and builds the CSR.

Counts are always taken on distinct pairs. Nothing here loops over rows or users in Python.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from cml_tf.data.interactions import DataError, Interactions

USERS = "users"
ITEMS = "items"


class NothingLeft(DataError):
    """The filters left no interaction (the message lists the count after each stage)."""


def describe_steps(steps: Sequence[tuple[str, int]]) -> str:
    """Human-readable filter sequence, e.g. ``users with >= 21 items, then items with >= 5 users``."""
    parts = []
    for axis, k in steps:
        if k <= 1:
            continue
        parts.append(f"users with >= {k} items" if axis == USERS else f"items with >= {k} users")
    return ", then ".join(parts) if parts else "no count filter"


def dedupe_pairs(users: np.ndarray, items: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, item) pairs, sorted row-major.

    Args:
        users: [n] non-negative int user codes.
        items: [n] non-negative int item codes, < n_items.
        n_items: item code bound.

    Returns:
        ([m] int64 users, [m] int64 items), m <= n, sorted by (user, item), no duplicates.
    """
    key = users.astype(np.int64) * np.int64(max(1, n_items)) + items.astype(np.int64)
    key.sort()
    if key.size:
        keep = np.empty(key.size, dtype=bool)
        keep[0] = True
        np.not_equal(key[1:], key[:-1], out=keep[1:])
        key = key[keep]
    n = np.int64(max(1, n_items))
    return key // n, key % n


def count_filter(
    users: np.ndarray,
    items: np.ndarray,
    steps: Sequence[tuple[str, int]],
    n_users: int,
    n_items: int,
    iterative: bool = False,
    max_rounds: int = 1000,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Applies count filters on distinct pairs.

    Args:
        users, items: [m] int64 distinct pairs.
        steps: ordered ``(USERS | ITEMS, min_count)``; a step keeps users (items) with at least ``min_count``
            distinct items (users). Steps with ``min_count <= 1`` still drop nothing (every present id has 1).
        n_users, n_items: code bounds.
        iterative: repeat the whole sequence until no pair is removed.
        max_rounds: safety bound on the number of repetitions.

    Returns:
        (users, items, log): the surviving pairs and one log line per step applied.
    """
    log = []
    rounds = 0
    while True:
        before = users.size
        rounds += 1
        for axis, k in steps:
            if k <= 1 or users.size == 0:
                continue
            ids, bound = (users, n_users) if axis == USERS else (items, n_items)
            counts = np.bincount(ids, minlength=bound)
            keep = counts[ids] >= k
            users, items = users[keep], items[keep]
            log.append(
                f"round {rounds}: {axis} >= {k}: {users.size:,} pairs, "
                f"{np.count_nonzero(np.bincount(users, minlength=n_users)):,} users, "
                f"{np.count_nonzero(np.bincount(items, minlength=n_items)):,} items"
            )
        if not iterative or users.size == before or rounds >= max_rounds:
            return users, items, log


def compact(codes: np.ndarray, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """Renumbers the codes present to 0..k-1, keeping their order.

    Returns:
        ([n] int64 new codes, [k] int64 old code of each new code).
    """
    present = np.zeros(bound, dtype=bool)
    present[codes] = True
    old = np.flatnonzero(present)
    new_of_old = np.cumsum(present) - 1
    return new_of_old[codes].astype(np.int64), old


def build(
    source: str,
    users: np.ndarray,
    items: np.ndarray,
    user_labels: np.ndarray,
    item_labels: np.ndarray,
    *,
    values: np.ndarray | None = None,
    min_value: float | None = None,
    value_name: str = "value",
    steps: Sequence[tuple[str, int]] = (),
    iterative_core: bool = False,
    keep_all_items: bool = False,
    keep_all_users: bool = False,
) -> Interactions:
    """Row threshold, dedupe, count filters (once or to a fixed point), compaction, CSR.

    Args:
        source: file path (or name) for messages.
        users: [n] int user codes into ``user_labels``.
        items: [n] int item codes into ``item_labels``.
        user_labels: [U] original user ids.
        item_labels: [I] original item ids.
        values: [n] per-row value (rating, play count) or None.
        min_value: keep rows with ``values >= min_value``; None keeps all rows.
        value_name: name of the value for messages.
        steps: count filters in order, see `count_filter`.
        iterative_core: repeat the count filters until stable.
        keep_all_items: keep every declared item column even when it has no interaction (citeulike).
        keep_all_users: keep every declared user row even when it has no interaction (citeulike).

    Returns:
        `Interactions` of the surviving pairs.

    Raises:
        NothingLeft: nothing left after the filters (message lists the count after each stage).
    """
    n_users, n_items = len(user_labels), len(item_labels)
    stages = [f"{users.size:,} rows read"]
    if values is not None and min_value is not None:
        keep = values >= min_value
        users, items = users[keep], items[keep]
        stages.append(f"{value_name} >= {min_value:g}: {users.size:,} rows")
    users, items = dedupe_pairs(users, items, n_items)
    stages.append(f"distinct pairs: {users.size:,}")
    users, items, log = count_filter(users, items, steps, n_users, n_items, iterative=iterative_core)
    stages.extend(log)
    if users.size == 0:
        raise NothingLeft(
            f"{source}: no interactions left after filtering ({'; '.join(stages)}); expected at least one. "
            f"Filters: {value_name} >= {min_value}, {describe_steps(steps)}"
            f"{' (iterated)' if iterative_core else ' (applied once)'}; lower the thresholds"
        )
    if keep_all_users:
        u_new, u_old = users.astype(np.int64), np.arange(n_users)
    else:
        u_new, u_old = compact(users, n_users)
    if keep_all_items:
        i_new, i_old = items.astype(np.int64), np.arange(n_items)
    else:
        i_new, i_old = compact(items, n_items)
    counts = np.bincount(u_new, minlength=u_old.size)
    indptr = np.zeros(u_old.size + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    matrix = sp.csr_matrix(
        (np.ones(i_new.size, np.float32), i_new.astype(np.int32), indptr), shape=(u_old.size, i_old.size)
    )
    matrix.has_sorted_indices = True  # pairs come sorted row-major with no duplicates
    return Interactions(matrix, np.asarray(user_labels)[u_old], np.asarray(item_labels)[i_old])


def build_rated(source: str, parsed: tuple, options: dict, value_name: str) -> Interactions:
    """`build` for the row formats (user, item, value): the row threshold ``options["min_<value_name>"]``, then
    users with ``min_user_interactions`` and items with ``min_item_users``, once or to a fixed point
    (``iterative_core``), as the loaders' option dicts name them.

    Args:
        source: file path for messages.
        parsed: ``(users, user_labels, items, item_labels, values)`` as `cml_tf.data.loaders.csv.read_delimited`
            returns them.
        options: the loader's resolved options.
        value_name: "rating", "playcount" or "weight".
    """
    users, user_labels, items, item_labels, values = parsed
    return build(
        source,
        users,
        items,
        user_labels,
        item_labels,
        values=values,
        min_value=options[f"min_{value_name}"],
        value_name=value_name,
        steps=[(USERS, options["min_user_interactions"]), (ITEMS, options["min_item_users"])],
        iterative_core=options["iterative_core"],
    )
