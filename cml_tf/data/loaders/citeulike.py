"""citeulike-t (the CollMetric data set): ``users.dat``, line u (0-based user u) = ``count item item ...``.

No filtering: every user line is a row (in file order, user id = line number), item ids are kept as they are,
and the matrix width is the declared catalog, the largest item id + 1 (25,975 for citeulike-t: 7,947 users,
134,860 pairs). The count at the start of each line must equal the number of items that follow. Parsing is
vectorised: one ``bytes.split`` of the whole file, token-to-line assignment with ``searchsorted``.

`load_tag_features` builds the CML+F item features from ``tag-item.dat`` (beside ``users.dat``; line t = the
items having tag t, ``count item item ...``) exactly as CollMetric's ``utils.citeulike`` does; see its docstring.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp

from cml_tf.data.interactions import DataError, Interactions
from cml_tf.data.loaders import filters
from cml_tf.data.loaders.csv import find_file

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


TAG_FORMAT = "one line per tag: 'count item item ...' (the items having the tag)"


def resolve_tag_path(data_path: str | None) -> str:
    """``tag-item.dat``: ``data_path`` itself when it names that file, else beside the resolved ``users.dat``."""
    if data_path is not None and os.path.isfile(str(data_path)) and os.path.basename(str(data_path)).startswith("tag"):
        return str(data_path)
    path = os.path.join(os.path.dirname(resolve_path(data_path)), "tag-item.dat")
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file; CML+F --features=tags needs citeulike-t's tag-item.dat ({TAG_FORMAT})")
    return path


def load_tag_features(data_path: str | None, n_items: int, min_count: int = 5, original: bool = True) -> sp.csr_matrix:
    """citeulike-t tag features: [n_items, n_tags] float32 CSR of 0/1 flags, one column per kept tag (file order).

    ``original=True`` (default) reproduces CollMetric's ``utils.citeulike(tag_occurence_thres=min_count)`` bit for
    bit, quirks included: it splits each line on single spaces WITHOUT dropping the leading count, so

    * a tag is kept when ``1 + (number of items) >= min_count`` (i.e. tags with at least ``min_count - 1`` items);
    * the count itself is read as one more item id: item ``count`` gets the flag too (on citeulike-t, items 1, 2,
      3, 4, ... collect thousands of tags this way).

    CML.py then uses ``features.toarray() + 1e-10``; the ``1e-10`` is left out here (sparse input, a relative
    difference below 1e-9 in the first layer's output).

    ``original=False`` is the intended reading: the count is skipped and a tag is kept when it has at least
    ``min_count`` items.

    Args:
        data_path: citeulike-t directory, its ``users.dat``, or the ``tag-item.dat`` file itself.
        n_items: catalog width (rows of the result), as read from ``users.dat``.
        min_count: ``tag_occurence_thres`` (CML.py's example uses 5).
        original: reproduce the original's parsing (see above).

    Raises:
        DataError: unreadable file, a non-integer token, or an item id outside ``[0, n_items)`` (the original
            fails there too, with an IndexError).
    """
    path = resolve_tag_path(data_path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e}); expected {TAG_FORMAT}") from e
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    n_tags = 0
    for number, line in enumerate(lines, 1):
        if original:
            tokens = line.strip().split(" ")
        else:
            tokens = line.split()[1:]
        if len(tokens) < min_count or not tokens:
            continue
        try:
            ids = np.array([int(t) for t in tokens], dtype=np.int64)
        except ValueError as e:
            raise DataError(f"{path}: line {number}: {e}; expected {TAG_FORMAT}") from e
        if ids.size and (ids.min() < 0 or ids.max() >= n_items):
            raise DataError(f"{path}: line {number}: item id {int(ids.max())} outside the {n_items}-item catalog")
        rows.append(ids)
        cols.append(np.full(ids.size, n_tags, dtype=np.int64))
        n_tags += 1
    row = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    col = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    m = sp.csr_matrix((np.ones(row.size, np.float32), (row, col)), shape=(int(n_items), n_tags))
    m.sum_duplicates()
    m.data[:] = 1.0  # a flag (the original's dok_matrix assignment), whatever the repeats
    m.sort_indices()
    return m


#: tags with fewer items than this are left out of the side information (as CML+F's default threshold)
SIDE_INFO_MIN_TAG_ITEMS = 5


def side_info_files(path: str) -> list[str]:
    """The side-information file read for ``users.dat`` at ``path``: ``tag-item.dat`` beside it, if present."""
    tag = os.path.join(os.path.dirname(os.path.abspath(path)), "tag-item.dat")
    return [tag] if os.path.isfile(tag) else []


def read_side_info(path: str, interactions: Interactions):
    """Item tags as side information: `cml_tf.data.side_info.SideInfo` with one group per tag having at least
    `SIDE_INFO_MIN_TAG_ITEMS` items (``tag-item.dat`` read as intended: the leading count skipped, see
    `load_tag_features`); group names are ``tag<line>``, the tag's 1-based line in the file. No user features.

    Raises:
        DataError: ``tag-item.dat`` missing beside ``path`` or malformed (the file and line named).
    """
    from cml_tf.data.side_info import SideInfo

    tag_path = os.path.join(os.path.dirname(os.path.abspath(path)), "tag-item.dat")
    if not os.path.isfile(tag_path):
        raise DataError(f"{tag_path}: no such file; citeulike side information needs tag-item.dat ({TAG_FORMAT})")
    tags = load_tag_features(tag_path, interactions.n_items, min_count=SIDE_INFO_MIN_TAG_ITEMS, original=False)
    try:
        with open(tag_path, encoding="utf-8") as f:
            sizes = np.array([len(line.split()) - 1 for line in f.read().splitlines()])
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{tag_path}: cannot read ({e}); expected {TAG_FORMAT}") from e
    lines = np.flatnonzero(sizes >= SIDE_INFO_MIN_TAG_ITEMS) + 1
    return SideInfo(tags, np.array([f"tag{n}" for n in lines]), "tag")
