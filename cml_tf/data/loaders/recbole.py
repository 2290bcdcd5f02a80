"""RecBole's atomic benchmark files: ``NAME.train.inter``, ``NAME.test.inter`` and optionally ``NAME.valid.inter``.

Each file is tab-separated text with a header naming the fields with their types, e.g.
``user_id:token<TAB>item_id:token<TAB>rating:float<TAB>timestamp:float``; only the ``user_id`` and ``item_id``
columns are read (any other columns are ignored; every row is a positive pair). Ids are tokens (strings): they are
mapped to contiguous indices in order of first appearance over train, valid, test, one map for the three files, kept
as the `Interactions`' ``user_ids`` / ``item_ids``. Parsing is `cml_tf.data.loaders.csv.read_delimited` (pyarrow).

``--data_path`` is the directory holding exactly one ``*.train.inter``, one of the files itself, or the prefix
``DIR/NAME``. There is no filter and no option: the files are a given split.
"""

from __future__ import annotations

import glob
import os

import numpy as np

from cml_tf.data.interactions import DataError, Interactions
from cml_tf.data.loaders.csv import _first_lines, read_delimited

OPTIONS: dict = {}
FORMAT = "RecBole atomic files: a header 'user_id:token<TAB>item_id:token<TAB>...', then one pair per line"
PARTS = ("train", "valid", "test")


def resolve_path(data_path: str | None) -> str:
    """The prefix ``DIR/NAME`` of the benchmark files ``DIR/NAME.train.inter`` etc."""
    if data_path is None:
        raise DataError(f"--data_path is required for --dataset=recbole: the directory of NAME.train.inter ({FORMAT})")
    path = os.path.expanduser(str(data_path))
    if os.path.isdir(path):
        found = sorted(glob.glob(os.path.join(path, "*.train.inter")))
        if len(found) != 1:
            listing = ", ".join(os.path.basename(f) for f in found) or "none"
            raise DataError(
                f"--data_path={data_path}: expected exactly one NAME.train.inter in the directory, found {listing}; "
                "pass the prefix DIR/NAME"
            )
        return found[0][: -len(".train.inter")]
    for part in PARTS:
        if path.endswith(f".{part}.inter"):
            return path[: -len(f".{part}.inter")]
    return path


def given_files(prefix: str) -> dict[str, str | None]:
    """{"train", "valid", "test"} -> ``PREFIX.<part>.inter``; "valid" is None when that file is absent."""
    files: dict[str, str | None] = {part: f"{prefix}.{part}.inter" for part in PARTS}
    if not os.path.isfile(files["valid"]):
        files["valid"] = None
    return files


def _column(names: list[str], field: str, path: str, header: str) -> int:
    """Index of the header field ``field`` (``field:type``)."""
    for i, name in enumerate(names):
        if name.split(":", 1)[0].strip() == field:
            return i
    raise DataError(f"{path}: line 1: no {field} field in the header {header[:200]!r}; expected {FORMAT}")


def read_part(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parses one atomic ``.inter`` file.

    Args:
        path: the file.

    Returns:
        ([n] str user tokens, [n] str item tokens, [n] int64 1-based line of each row), in file order.

    Raises:
        DataError: naming the file (and line): missing, empty, no user_id / item_id field, a short row.
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file; expected {FORMAT}")
    first = _first_lines(path, "utf-8", 1)
    if not first:
        raise DataError(f"{path}: empty file; expected {FORMAT}")
    names = first[0].split("\t")
    user_col = _column(names, "user_id", path, first[0])
    item_col = _column(names, "item_id", path, first[0])
    users, user_labels, items, item_labels, _ = read_delimited(
        path,
        user_col=user_col,
        item_col=item_col,
        sep="\t",
        header=True,
        quoted=False,
        numeric_users=False,
        numeric_items=False,
        what=FORMAT,
    )
    with open(path, "rb") as f:
        buf = np.frombuffer(f.read(), np.uint8)
    # 1-based numbers of the non-blank lines (pyarrow skips blank ones): the header, then one per row
    ends = np.concatenate((np.flatnonzero(buf == ord("\n")), [buf.size]))
    begins = np.concatenate(([0], ends[:-1] + 1))
    content = np.flatnonzero(ends - begins > np.isin(buf[np.maximum(ends - 1, 0)], (ord("\r"),)))
    lines = content[1 : 1 + users.size].astype(np.int64) + 1
    return user_labels.astype(str)[users], item_labels.astype(str)[items], lines


def read(path: str, **options) -> Interactions:
    """Every pair of the benchmark's files (train, valid if present, test) as one `Interactions` with the token maps
    of `cml_tf.data.loaders.load_given`. The split itself is read by `load_given`."""
    if options:
        raise DataError(f"recbole takes no options, got {sorted(options)}")
    from cml_tf.data import loaders

    return loaders.load_given("recbole", path)[0]
