"""LightGCN's split files (also NGCF's, SimpleX's, UltraGCN's, LightGCN++'s): a directory holding ``train.txt``,
``test.txt`` and optionally ``valid.txt``, each line ``user item item ...`` with non-negative integer ids.

Ids are kept as they are: row u is user u and column i is item i, ``n_users`` / ``n_items`` = the largest id + 1
over the three files (ids that appear nowhere keep an empty row or column). Blank lines are skipped; a line with a
user and no item is allowed (it adds no pair). A pair repeated within a file counts once. There is no filter and
no option: the files are a given split (`cml_tf.data.splits.given_split` checks it). Parsing is vectorised: one
``bytes.split`` of the whole file, token-to-line assignment with ``searchsorted``.
"""

from __future__ import annotations

import os

import numpy as np

from cml_tf.data.interactions import DataError, Interactions

OPTIONS: dict = {}
FORMAT = "one line per user: 'user item item ...' with non-negative integer ids"
#: part -> file name inside the data directory (valid.txt is optional)
PART_FILES = {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}


def resolve_path(data_path: str | None) -> str:
    """The directory holding the split files (``data_path`` itself, or the directory of a file inside it)."""
    if data_path is None:
        raise DataError(
            f"--data_path is required for --dataset=lightgcn: a directory holding train.txt and test.txt ({FORMAT})"
        )
    path = data_path if os.path.isdir(data_path) else os.path.dirname(data_path) or "."
    if not os.path.isdir(path):
        raise DataError(f"--data_path={data_path}: no such directory (expected one holding train.txt and test.txt)")
    return path


def given_files(path: str) -> dict[str, str | None]:
    """{"train", "valid", "test"} -> the file of each part in directory ``path``; "valid" is None when absent."""
    files: dict[str, str | None] = {name: os.path.join(path, f) for name, f in PART_FILES.items()}
    if not os.path.isfile(files["valid"]):
        files["valid"] = None
    return files


def read_part(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parses one split file.

    Args:
        path: a file of ``user item item ...`` lines.

    Returns:
        ([n] int64 user ids, [n] int64 item ids, [n] int64 1-based line of each pair), in file order.

    Raises:
        DataError: naming the file (and line): unreadable, empty, a token that is not a non-negative integer.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e}); expected {FORMAT}") from e
    buf = np.frombuffer(raw, dtype=np.uint8)
    space = np.isin(buf, np.frombuffer(b" \t\r\n\x0b\x0c", np.uint8))
    starts = np.flatnonzero(~space & np.concatenate(([True], space[:-1])))  # first byte of each token
    if starts.size == 0:
        raise DataError(f"{path}: empty file; expected {FORMAT}")
    token_line = np.searchsorted(np.flatnonzero(buf == ord("\n")), starts)  # 0-based line of each token
    tokens = np.array(raw.split())
    digits = np.char.isdigit(tokens)
    if not digits.all():
        bad = int(np.flatnonzero(~digits)[0])
        raise DataError(
            f"{path}: line {token_line[bad] + 1}: {tokens[bad].decode(errors='replace')!r} is not a non-negative "
            f"integer id; expected {FORMAT}"
        )
    values = tokens.astype(np.int64)
    first = np.concatenate(([True], token_line[1:] != token_line[:-1]))  # the user token of each line
    line_user = np.cumsum(first) - 1  # [tokens] index of the token's line among the non-blank lines
    users = values[first][line_user[~first]]
    return users, values[~first], token_line[~first].astype(np.int64) + 1


def read(path: str, **options) -> Interactions:
    """Every pair of the directory's split files (train, valid if present, test) as one `Interactions`, ids kept.
    The split itself is read by `cml_tf.data.loaders.load_given`; this is the data set as a whole."""
    if options:
        raise DataError(f"lightgcn takes no options, got {sorted(options)}")
    from cml_tf.data import loaders

    return loaders.load_given("lightgcn", path)[0]
