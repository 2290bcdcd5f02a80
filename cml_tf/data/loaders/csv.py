"""Generic delimited-text loader, and the vectorised reader every delimited format uses.

Parsing is done by ``pyarrow.csv`` (multi-threaded C++), with the id columns dictionary-encoded while reading,
so a 48M-row file never materialises 48M Python strings. When pyarrow rejects a file, a plain line-by-line scan
(only on that error path) finds the first offending line so the message can name it.

Data set ``csv``: options ``user_col`` / ``item_col`` / ``weight_col`` (0-based index, or a header name when
``header=True``), ``sep``, ``header``, ``encoding``, ``min_weight`` (keep rows with weight >= it; needs a weight
column), ``min_user_interactions``, ``min_item_users``, ``iterative_core``. By default no filter is applied.
Filters are applied once, in this order: weight threshold, then users, then items (``iterative_core=True``
repeats the user and item filters until stable). Ids that all parse as integers are kept as integers (rows and
columns in increasing id order); otherwise as strings in order of first appearance. Messages name the csv data set's
flags (``--csv_sep``, ``--csv_item_col``, ...), the file and what its first line holds. When a column that no filter
reads holds only 0 and 1 in the first rows (a label), one warning on the ``cml_tf.data.loaders`` logger says that its 0
rows count as positives and gives the flags that would drop them.
"""

from __future__ import annotations

import csv as _stdcsv
import glob
import logging
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from cml_tf.data.interactions import DataError, Interactions
from cml_tf.data.loaders import filters

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
_SNIFF_LINES = 1000
#: how the csv data set's options are given on the command line (messages name these)
FLAGS = {
    "user": "--csv_user_col",
    "item": "--csv_item_col",
    "value": "--csv_weight_col",
    "sep": "--csv_sep",
    "header": "--csv_header",
    "encoding": "--csv_encoding",
}

log = logging.getLogger("cml_tf.data.loaders")


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
    named = f"no {' / '.join(conventional)} and " if conventional else ""
    matching = f"files matching {' / '.join(patterns)}"
    if candidates:
        listing = ", ".join(os.path.basename(c) for c in candidates)
        found = f"{len(candidates)} {matching} (candidates: {listing}), not one"
    else:
        found = f"no {matching}"
    raise DataError(f"{path}: directory holds {named}{found}; expected {what}. Pass the file itself as --data_path")


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


def _column_spec(col, header_names: list[str] | None, option: str, path: str, first_line: str, header_flag: str) -> int:
    """0-based field index of a column given as an index, a digit string, or a header name."""
    if isinstance(col, (int, np.integer)) and not isinstance(col, bool):
        if col < 0:
            raise DataError(f"{option} must be a 0-based column index >= 0 or a header name, got {col}")
        return int(col)
    text = str(col)
    if text.isdigit():
        return int(text)
    if header_names is None:
        raise DataError(
            f"{path}: {option}={text!r} is a column name, but {header_flag} is not set "
            f"(line 1 is {first_line[:200]!r}); give {header_flag} or a 0-based column number"
        )
    if text not in header_names:
        raise DataError(f"{path}: {option}={text!r} is not a column of the header {header_names}")
    return header_names.index(text)


def _first_lines(path: str, encoding: str, count: int, encoding_flag: str = "encoding") -> list[str]:
    """Up to ``count`` first non-empty lines (line ends removed); DataError for an unknown encoding or bad text."""
    lines = []
    try:
        with open(path, encoding=encoding, newline="") as f:
            for line in f:
                line = line.rstrip("\r\n")
                if line:
                    lines.append(line)
                    if len(lines) >= count:
                        break
    except LookupError:
        raise DataError(f"{encoding_flag}={encoding!r} is not a known text encoding") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid {encoding} text near the start of the file ({e.reason})") from None
    return lines


def _guess_separator(line: str, sep: str) -> str | None:
    """A common separator that splits ``line`` when ``sep`` does not, as a --csv_sep value."""
    for candidate, name in (("\t", "tab"), (",", ","), (";", ";"), ("::", "::"), ("|", "|"), (" ", " ")):
        if candidate != sep and candidate in line:
            return name
    return None


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
    flags: dict[str, str] | None = None,
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
        flags: how messages name the ``user`` / ``item`` / ``value`` columns and the ``sep`` / ``header`` settings
            (the csv data set's flags, `FLAGS`); default: descriptions of a fixed format ("the item column").

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
    labels = flags or {"user": "the user column", "item": "the item column", "value": f"the {value_name} column"}
    first = _first_lines(path, encoding, 1, labels.get("encoding", "encoding"))
    if not first:
        raise DataError(f"{path}: the file is empty; expected {what}")
    first_fields = _split_line(first[0], sep, quoted)
    header_names = first_fields if header else None
    header_flag = labels.get("header", "a header line")
    cols = {
        "user": _column_spec(user_col, header_names, labels["user"], path, first[0], header_flag),
        "item": _column_spec(item_col, header_names, labels["item"], path, first[0], header_flag),
    }
    if value_col is not None:
        cols["value"] = _column_spec(value_col, header_names, labels["value"], path, first[0], header_flag)
    for key, index in cols.items():
        if index >= len(first_fields):
            guess = _guess_separator(first[0], sep) if len(first_fields) == 1 else None
            if flags:
                shown, split_by = f"{labels[key]}={index}", f"{labels['sep']}={sep!r}"
                hint = f"; it looks {guess}-separated: try {labels['sep']}={guess if guess == 'tab' else repr(guess)}"
            else:
                shown, split_by, hint = f"{labels[key]} (field {index + 1})", f"separator {sep!r}", ""
            raise DataError(
                f"{path}: {shown} is past the end of line 1, which has {len(first_fields)} field(s) with "
                f"{split_by}: {first[0][:200]!r}{hint if guess else ''}; expected {what}"
            )
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
    except KeyError as e:  # a column pyarrow did not find on some line (line 1 was checked above)
        fail(f"a line with fewer fields than line 1 ({e})")
    except (OSError, UnicodeDecodeError) as e:
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
        raise DataError("--min_weight needs a weight column (--csv_weight_col)")
    parsed = read_delimited(
        path,
        user_col=o["user_col"],
        item_col=o["item_col"],
        value_col=o["weight_col"],
        sep=o["sep"],
        header=bool(o["header"]),
        encoding=o["encoding"],
        value_name="weight",
        what=f"rows of user{o['sep']}item[{o['sep']}weight]{' with a header' if o['header'] else ''}",
        flags=FLAGS,
    )
    if o["min_weight"] is None:
        _notice_label_columns(path, o)
    return filters.build_rated(path, parsed, o, "weight")


def _notice_label_columns(path: str, o: dict) -> None:
    """One notice when a column that no filter reads holds only 0 and 1 in the first rows: it looks like a label,
    and without ``--csv_weight_col`` / ``--min_weight`` its 0 rows count as positives."""
    sep = o["sep"]
    lines = _first_lines(path, o["encoding"], _SNIFF_LINES + 1)
    names = _split_line(lines[0], sep, True) if o["header"] and lines else None
    rows = [_split_line(line, sep, True) for line in lines[1 if o["header"] else 0 :]]
    if not rows:
        return

    def index(col) -> int:
        if isinstance(col, (int, np.integer)) or str(col).isdigit():
            return int(col)
        return names.index(str(col))  # a valid header name (read_delimited checked it)

    if o["weight_col"] is not None:
        candidates = [index(o["weight_col"])]
    else:
        used = {index(o["user_col"]), index(o["item_col"])}
        candidates = [i for i in range(min(len(r) for r in rows)) if i not in used]
    for col in candidates:
        seen = {r[col].strip() for r in rows if col < len(r)}
        if not seen or not seen <= {"0", "1", "0.0", "1.0"} or len({float(v) for v in seen}) < 2:
            continue
        if o["weight_col"] is None:
            log.warning(
                "%s: column %d holds only 0 and 1 in the first %d rows, like a label, but no --csv_weight_col is "
                "given: every row counts as a positive; to keep only the 1 rows: --csv_weight_col=%d --min_weight=1",
                path,
                col,
                len(rows),
                col,
            )
        else:
            log.warning(
                "%s: --csv_weight_col=%s holds only 0 and 1 in the first %d rows, but no --min_weight is given: "
                "the 0 rows count as positives too; to keep only the 1 rows: --min_weight=1",
                path,
                o["weight_col"],
                len(rows),
            )
        return
