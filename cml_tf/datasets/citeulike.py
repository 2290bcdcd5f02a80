"""citeulike-t (the CollMetric data set): ``users.dat``, line u (0-based user u) = ``count item item ...``.

No filtering: every user line is a row (in file order, user id = line number), item ids are kept as they are,
and the matrix width is the declared catalog, the largest item id + 1 (25,975 for citeulike-t: 7,947 users,
134,860 pairs). The count at the start of each line must equal the number of items that follow. Parsing is
vectorised: one ``bytes.split`` of the whole file, token-to-line assignment with ``searchsorted``.
"""

from __future__ import annotations

import numpy as np

from cml_tf.datasets import filters
from cml_tf.datasets.csv import find_file
from cml_tf.interactions import DataError, Interactions

OPTIONS: dict = {}
FORMAT = "one line per user: 'count item item ...' with non-negative integer ids"


def resolve_path(data_path: str | None) -> str:
    return find_file(data_path, ("users.dat",), ("users*.dat",), "citeulike users.dat (" + FORMAT + ")")


def read(path: str, **options) -> Interactions:
    """Parses ``users.dat`` (see the module docstring; no filter)."""
    if options:
        raise DataError(f"citeulike takes no options, got {sorted(options)}")
    try:
        with open(path, "rb") as f:
            raw = f.read().rstrip()  # trailing blank lines are not users
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e}); expected {FORMAT}") from e
    buf = np.frombuffer(raw, dtype=np.uint8)
    if buf.size == 0:
        raise DataError(f"{path}: empty file; expected {FORMAT}")
    newlines = np.flatnonzero(buf == ord("\n"))
    n_lines = newlines.size + 1
    space = np.isin(buf, np.frombuffer(b" \t\r\n\x0b\x0c", np.uint8))
    starts = np.flatnonzero(~space & np.concatenate(([True], space[:-1])))  # first byte of each token
    token_line = np.searchsorted(newlines, starts)  # 0-based line of each token
    tokens = np.array(raw.split())
    if tokens.size and not np.all(np.char.isdigit(tokens)):
        bad = int(np.flatnonzero(~np.char.isdigit(tokens))[0])
        raise DataError(
            f"{path}: line {token_line[bad] + 1}: {tokens[bad].decode(errors='replace')!r} is not a non-negative "
            f"integer; expected {FORMAT}"
        )
    values = tokens.astype(np.int64)
    per_line = np.bincount(token_line, minlength=n_lines)
    if np.any(per_line == 0):
        line = int(np.flatnonzero(per_line == 0)[0]) + 1
        raise DataError(f"{path}: line {line} is empty; expected {FORMAT}")
    first = np.zeros(values.size, dtype=bool)
    first[np.concatenate(([0], np.cumsum(per_line)[:-1]))] = True
    declared = values[first]
    if np.any(declared != per_line - 1):
        line = int(np.flatnonzero(declared != per_line - 1)[0])
        raise DataError(
            f"{path}: line {line + 1}: declares {declared[line]} items but lists {per_line[line] - 1}; "
            f"expected {FORMAT}"
        )
    users, items = token_line[~first].astype(np.int64), values[~first]
    n_items = int(items.max()) + 1 if items.size else 0
    if n_items == 0:
        raise DataError(f"{path}: no items listed on any of its {n_lines} lines; expected {FORMAT}")
    return filters.build(
        path, users, items, np.arange(n_lines), np.arange(n_items), keep_all_items=True, keep_all_users=True
    )
