"""Generic delimited-text loader, and the vectorised reader every delimited format uses.

Parsing is done by ``pyarrow.csv`` (multi-threaded C++), with the id columns dictionary-encoded while reading,
so a 48M-row file never materialises 48M Python strings. When pyarrow rejects a file, a plain line-by-line scan
(only on that error path) finds the first offending line so the message can name it.

Data set ``csv``: options ``user_col`` / ``item_col`` / ``weight_col`` (0-based index, or a header name when
``header=True``), ``sep``, ``header``, ``encoding``, ``min_weight`` (keep rows with weight >= it; needs a weight
column), ``min_user_interactions``, ``min_item_users``, ``iterative_core``. By default no filter is applied.
Filters are applied once, in this order: weight threshold, then users, then items (``iterative_core=True``
repeats the user and item filters until stable). Ids that all parse as integers are kept as integers (rows and
columns in increasing id order); otherwise as strings in order of first appearance.
"""

from __future__ import annotations

import csv as _stdcsv
import glob
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from cml_tf.datasets import filters
from cml_tf.interactions import DataError, Interactions

OPTIONS = {
    "user_col": 0,
    "item_col": 1,
    "weight_col": None,
    "sep": ",",
    "header": False,
    "encoding": "utf-8",
    "min_weight": None,
    "min_user_interactions": 0,
    "min_item_users": 0,
    "iterative_core": False,
}

_BLOCK_SIZE = 16 << 20
_DICT = pa.dictionary(pa.int32(), pa.string())


def find_file(data_path: str, conventional: tuple[str, ...], patterns: tuple[str, ...], what: str) -> str:
    """Resolves ``data_path`` (a file, or a directory holding one) to a file path.

    Args:
        data_path: file or directory.
        conventional: file names tried first, in order, inside a directory.
        patterns: glob patterns; a directory with exactly one match uses it.
        what: data set description for messages.

    Raises:
        DataError: missing path, or a directory without a unique candidate (candidates listed).
    """
    if data_path is None:
        raise DataError(f"{what}: no --data_path given; expected a file or a directory holding {conventional[0]}")
    path = os.path.expanduser(str(data_path))
    if os.path.isfile(path):
        return path
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file or directory (expected {what}: {' or '.join(conventional)})")
    for name in conventional:
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    candidates = sorted({c for p in patterns for c in glob.glob(os.path.join(path, p)) if os.path.isfile(c)})
    if len(candidates) == 1:
        return candidates[0]
    listing = ", ".join(os.path.basename(c) for c in candidates) or "none"
    raise DataError(
        f"{path}: directory holds no {' / '.join(conventional)} and {len(candidates)} files matching "
        f"{' / '.join(patterns)} (candidates: {listing}); expected {what}. Pass the file itself as --data_path"
    )


def _split_line(line: str, sep: str, quoted: bool) -> list[str]:
    if quoted and len(sep) == 1:
        return next(_stdcsv.reader([line], delimiter=sep, quotechar='"'))
    return line.split(sep)


def scan_for_error(
    path: str,
    *,
    sep: str,
    header: bool,
    encoding: str,
    quoted: bool,
    int_fields: dict[int, str],
    num_fields: dict[int, str],
    nonempty_fields: dict[int, str],
) -> str | None:
    """Finds the first bad line with a plain Python scan. Used only after the fast reader failed.

    Args:
        path: the file.
        sep: field separator (may be several characters).
        header: the first line is a header.
        encoding: text encoding.
        quoted: fields may be double-quoted.
        int_fields: field index -> name, must parse as an integer.
        num_fields: field index -> name, must parse as a number.
        nonempty_fields: field index -> name, must be non-empty.

    Returns:
        ``"line N: ..."`` describing the first problem, or None when every line looks fine.
    """
    expected = None
    try:
        with open(path, encoding=encoding, errors="strict", newline="") as f:
            for line_no, line in enumerate(f, start=1):
                line = line.rstrip("\r\n")
                if not line and expected is not None:
                    continue
                fields = _split_line(line, sep, quoted)
                if expected is None:
                    expected = len(fields)
                    if header:
                        continue
                if len(fields) != expected:
                    return (
                        f"line {line_no}: expected {expected} fields separated by {sep!r}, got {len(fields)}: "
                        f"{line[:200]!r}"
                    )
                for idx, name in nonempty_fields.items():
                    if idx < len(fields) and not fields[idx].strip():
                        return f"line {line_no}: empty {name} (field {idx + 1}): {line[:200]!r}"
                for idx, name in int_fields.items():
                    try:
                        int(fields[idx])
                    except ValueError:
                        return f"line {line_no}: {name} {fields[idx]!r} (field {idx + 1}) is not an integer"
                for idx, name in num_fields.items():
                    try:
                        float(fields[idx])
                    except ValueError:
                        return f"line {line_no}: {name} {fields[idx]!r} (field {idx + 1}) is not a number"
    except UnicodeDecodeError as e:
        return f"not valid {encoding} text ({e})"
    return None


def _column_spec(col, header_names: list[str] | None, option: str, path: str) -> int:
    """0-based field index of a column given as an index, a digit string, or a header name."""
    if isinstance(col, (int, np.integer)) and not isinstance(col, bool):
        if col < 0:
            raise DataError(f"{option} must be a 0-based column index >= 0 or a header name, got {col}")
        return int(col)
    text = str(col)
    if text.isdigit():
        return int(text)
    if header_names is None:
        raise DataError(f"{option}={text!r} is a column name, but the file has no header (set header=True)")
    if text not in header_names:
        raise DataError(f"{path}: {option}={text!r} is not a column of the header {header_names}")
    return header_names.index(text)


def _read_header(path: str, sep: str, encoding: str, quoted: bool) -> list[str]:
    with open(path, encoding=encoding, newline="") as f:
        return _split_line(f.readline().rstrip("\r\n"), sep, quoted)


def _decode_ids(column: pa.ChunkedArray, numeric: bool | None) -> tuple[np.ndarray, np.ndarray]:
    """Dictionary-encoded ids -> ([n] int64 codes, [k] labels).

    numeric=True: labels must be integers (raises ValueError with the first bad label); None: integers if they
    all parse, else strings. Integer labels are sorted (codes renumbered accordingly).
    """
    chunks = [c for c in column.chunks if len(c)]
    if not chunks:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    dictionary = chunks[0].dictionary
    codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in chunks]).astype(np.int64)
    labels = None
    if numeric is not False:
        try:
            labels = pc.cast(pc.utf8_trim_whitespace(dictionary), pa.int64()).to_numpy()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            if numeric:
                raise
    if labels is None:
        return codes, dictionary.to_numpy(zero_copy_only=False).astype(str)
    uniq, inverse = np.unique(labels, return_inverse=True)
    return inverse[codes], uniq


def read_delimited(
    path: str,
    *,
    user_col=0,
    item_col=1,
    value_col=None,
    sep: str = ",",
    header: bool = False,
    encoding: str = "utf-8",
    quoted: bool = True,
    numeric_users: bool | None = None,
    numeric_items: bool | None = None,
    value_name: str = "weight",
    what: str = "a delimited file",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Reads user, item (and value) columns of a delimited text file, vectorised.

    Args:
        path: the file.
        user_col, item_col, value_col: 0-based field index or header name; value_col may be None.
        sep: separator; several characters only as a repeated character (``::``).
        header: skip (and use the names of) the first line.
        encoding: text encoding (``latin-1`` for Book-Crossing).
        quoted: fields may be double-quoted.
        numeric_users, numeric_items: True = ids must be integers, None = integers when they all parse.
        value_name: name of the value column in messages.
        what: description of the expected format for messages.

    Returns:
        (users [n] int64 codes, user_labels [U], items [n] int64 codes, item_labels [I], values [n] float64 or
        None).

    Raises:
        DataError: missing file, wrong field count, non-numeric id or value (file, line and expectation named).
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file (expected {what})")
    if not sep:
        raise DataError("separator must be non-empty")
    if len(sep) > 1 and sep != sep[0] * len(sep):
        raise DataError(f"separator {sep!r}: only one character or one repeated character (like '::') supported")
    stride = len(sep)
    header_names = _read_header(path, sep, encoding, quoted) if header else None
    cols = {
        "user": _column_spec(user_col, header_names, "user_col", path),
        "item": _column_spec(item_col, header_names, "item_col", path),
    }
    if value_col is not None:
        cols["value"] = _column_spec(value_col, header_names, "weight_col", path)
    names = {k: f"f{v * stride}" for k, v in cols.items()}
    types = {names["user"]: _DICT, names["item"]: _DICT}
    if "value" in names:
        types[names["value"]] = pa.float64()
    int_fields = {cols["user"]: "user id"} if numeric_users else {}
    if numeric_items:
        int_fields[cols["item"]] = "item id"
    scan_kw = dict(
        sep=sep,
        header=header,
        encoding=encoding,
        quoted=quoted,
        int_fields=int_fields,
        num_fields={cols["value"]: value_name} if "value" in cols else {},
        nonempty_fields={cols["user"]: "user id", cols["item"]: "item id"},
    )

    def fail(reason: str):
        where = scan_for_error(path, **scan_kw)
        raise DataError(f"{path}: {where or reason}; expected {what}")

    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(
                autogenerate_column_names=True,
                skip_rows=1 if header else 0,
                encoding=encoding,
                block_size=_BLOCK_SIZE,
            ),
            parse_options=pacsv.ParseOptions(delimiter=sep[0], quote_char='"' if quoted else False),
            convert_options=pacsv.ConvertOptions(include_columns=list(names.values()), column_types=types),
        )
    except pa.ArrowInvalid as e:
        fail(f"could not parse ({str(e).splitlines()[0][:300]})")
    except (OSError, UnicodeDecodeError, LookupError) as e:
        raise DataError(f"{path}: cannot read as {encoding} text ({e}); expected {what}") from e
    if table.num_rows == 0:
        raise DataError(f"{path}: no data rows; expected {what}")
    table = table.unify_dictionaries()
    out = []
    for key, numeric in (("user", numeric_users), ("item", numeric_items)):
        try:
            codes, labels = _decode_ids(table.column(names[key]), numeric)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            fail(f"a {key} id is not an integer")
        if labels.dtype.kind == "U" and np.any(np.char.str_len(np.char.strip(labels)) == 0):
            fail(f"an empty {key} id")
        out += [codes, labels]
    values = None
    if "value" in names:
        column = table.column(names["value"])
        if column.null_count:
            fail(f"an empty {value_name}")
        values = column.to_numpy()
    return out[0], out[1], out[2], out[3], values


def resolve_path(data_path: str | None) -> str:
    return find_file(data_path, (), ("*.csv", "*.tsv", "*.txt"), "a delimited user,item[,weight] file")


def read(path: str, **options) -> Interactions:
    """Loads a generic delimited file; see the module docstring for the options (none filter by default).

    Filters, applied once in this order: ``weight >= min_weight``, then users with >= ``min_user_interactions``
    items, then items with >= ``min_item_users`` users; ``iterative_core=True`` repeats the last two until stable.
    """
    o = {**OPTIONS, **options}
    if o["min_weight"] is not None and o["weight_col"] is None:
        raise DataError("min_weight (--min_weight) needs a weight column (--csv_weight_col)")
    users, user_labels, items, item_labels, values = read_delimited(
        path,
        user_col=o["user_col"],
        item_col=o["item_col"],
        value_col=o["weight_col"],
        sep=o["sep"],
        header=bool(o["header"]),
        encoding=o["encoding"],
        value_name="weight",
        what=f"rows of user{o['sep']}item[{o['sep']}weight]{' with a header' if o['header'] else ''}",
    )
    return filters.build(
        path,
        users,
        items,
        user_labels,
        item_labels,
        values=values,
        min_value=o["min_weight"],
        value_name="weight",
        steps=[(filters.USERS, o["min_user_interactions"]), (filters.ITEMS, o["min_item_users"])],
        iterative_core=o["iterative_core"],
    )
