"""MovieLens ratings: ``u.data`` (100K, tab-separated), ``ratings.dat`` (1M / 10M, ``::``-separated) or
``ratings.csv`` (20M / 25M / latest, comma-separated with the header ``userId,movieId,rating,timestamp``).

Fields: ``user item rating timestamp``; user and item ids must be integers (rows / columns in increasing id
order). The separator and header are detected from the first line. Filters, applied ONCE in this order: ratings
``>= min_rating`` (default 0: every rating is kept, MovieLens ratings being 0.5-5 stars; use 4 for the usual
"rating >= 4 is positive" convention), then users with >= ``min_user_interactions`` movies, then movies with
>= ``min_item_users`` users (both default 0: no filter); ``iterative_core=True`` repeats the last two until stable.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp

from cml_tf.data.interactions import DataError, Interactions
from cml_tf.data.loaders import filters
from cml_tf.data.loaders.csv import find_file, read_delimited

OPTIONS = {"min_rating": 0.0, "min_user_interactions": 0, "min_item_users": 0, "iterative_core": False}
FORMAT = "user item rating timestamp lines (tab, '::' or ',' separated; integer ids)"


def resolve_path(data_path: str | None) -> str:
    return find_file(
        data_path, ("ratings.csv", "ratings.dat", "u.data"), ("*.data", "ratings*.*"), "MovieLens ratings: " + FORMAT
    )


def _sniff(path: str) -> tuple[str, bool]:
    """(separator, has_header) from the first line."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            first = f.readline().rstrip("\r\n")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e}); expected MovieLens {FORMAT}") from e
    if not first:
        raise DataError(f"{path}: line 1 is empty; expected MovieLens {FORMAT}")
    sep = "::" if "::" in first else "\t" if "\t" in first else "," if "," in first else None
    if sep is None:
        raise DataError(f"{path}: line 1 has no tab, '::' or ',' separator: {first[:200]!r}; expected {FORMAT}")
    head = first.split(sep)[0].strip().strip('"')
    return sep, not head.lstrip("-").isdigit()


def read(path: str, **options) -> Interactions:
    """Parses the ratings and applies the filters (see the module docstring; once, in the order written)."""
    o = {**OPTIONS, **options}
    sep, header = _sniff(path)
    parsed = read_delimited(
        path,
        user_col=0,
        item_col=1,
        value_col=2,
        sep=sep,
        header=header,
        quoted=sep == ",",
        numeric_users=True,
        numeric_items=True,
        value_name="rating",
        what=f"MovieLens {FORMAT} ({os.path.basename(path)}: separator {sep!r})",
    )
    return filters.build_rated(path, parsed, o, "rating")


# --------------------------------------------------------------------------------------------------- side information
USER_FILE, ITEM_FILE, GENRE_FILE, OCCUPATION_FILE = "u.user", "u.item", "u.genre", "u.occupation"
USER_FORMAT = "'user|age|gender|occupation|zip' lines (MovieLens 100K u.user)"
ITEM_FORMAT = "'item|title|release date|video release date|IMDb URL|19 genre flags' lines (MovieLens 100K u.item)"
NUM_GENRES = 19
#: MovieLens 1M's age buckets, used as one-hot features: [lower, upper) ages
AGE_BUCKETS = ((0, 18), (18, 25), (25, 35), (35, 45), (45, 50), (50, 56), (56, 200))


def _lines(path: str, fmt: str) -> list[str]:
    """Non-empty lines of a small pipe-separated MovieLens file (latin-1: titles hold accented letters)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file; expected {fmt}")
    try:
        with open(path, encoding="latin-1") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e}); expected {fmt}") from e
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError(f"{path}: empty file; expected {fmt}")
    return lines


def _fields(path: str, lines: list[str], count: int, fmt: str) -> list[list[str]]:
    rows = [line.split("|") for line in lines]
    bad = [n for n, r in enumerate(rows) if len(r) != count]
    if bad:
        raise DataError(
            f"{path}: line {bad[0] + 1} has {len(rows[bad[0]])} '|'-separated fields, expected {count}: "
            f"{lines[bad[0]][:200]!r}; expected {fmt}"
        )
    return rows


def _int_column(path: str, values: list[str], what: str, fmt: str) -> np.ndarray:
    arr = np.array(values)
    ok = np.char.isdigit(np.char.strip(arr))
    if not np.all(ok):
        line = int(np.flatnonzero(~ok)[0])
        raise DataError(
            f"{path}: line {line + 1}: {what} {str(arr[line])!r} is not a non-negative integer; expected {fmt}"
        )
    return arr.astype(np.int64)


def read_users(directory: str) -> dict[str, np.ndarray]:
    """Parses ``u.user`` in ``directory``: {"user_ids", "age" int64, "gender", "occupation", "zip"}, [U] each."""
    path = os.path.join(directory, USER_FILE)
    rows = _fields(path, _lines(path, USER_FORMAT), 5, USER_FORMAT)
    cols = list(zip(*rows))
    gender = np.array(cols[2])
    bad = ~np.isin(gender, ["M", "F"])
    if np.any(bad):
        line = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: line {line + 1}: gender {str(gender[line])!r} is not M or F; expected {USER_FORMAT}")
    return {
        "user_ids": _int_column(path, cols[0], "user id", USER_FORMAT),
        "age": _int_column(path, cols[1], "age", USER_FORMAT),
        "gender": gender,
        "occupation": np.array(cols[3]),
        "zip": np.array(cols[4]),
    }


def read_items(directory: str) -> dict[str, np.ndarray]:
    """Parses ``u.item`` (and ``u.genre`` for the genre names) in ``directory``.

    Returns:
        {"item_ids" [I] int64, "titles" [I] str, "release" [I] str, "genres" [I, 19] bool, "genre_names" [19] str}.
    """
    path = os.path.join(directory, ITEM_FILE)
    rows = _fields(path, _lines(path, ITEM_FORMAT), 5 + NUM_GENRES, ITEM_FORMAT)
    cols = list(zip(*rows))
    flags = np.array([r[5:] for r in rows])
    bad = ~np.isin(flags, ["0", "1"])
    if np.any(bad):
        line, col = (int(x[0]) for x in np.nonzero(bad))
        raise DataError(
            f"{path}: line {line + 1}: genre flag {col + 1} is {str(flags[line, col])!r}, expected 0 or 1; "
            f"expected {ITEM_FORMAT}"
        )
    genre_path = os.path.join(directory, GENRE_FILE)
    genre_format = "'name|index' lines, indices 0..18 in order (MovieLens 100K u.genre)"
    if os.path.isfile(genre_path):
        genre_rows = _fields(genre_path, _lines(genre_path, genre_format), 2, genre_format)
        index = _int_column(genre_path, [r[1] for r in genre_rows], "genre index", genre_format)
        if not np.array_equal(index, np.arange(NUM_GENRES)):
            raise DataError(f"{genre_path}: genre indices {index.tolist()} are not 0..{NUM_GENRES - 1} in order")
        names = np.array([r[0] for r in genre_rows])
    else:
        names = np.array([f"genre{g}" for g in range(NUM_GENRES)])
    return {
        "item_ids": _int_column(path, cols[0], "item id", ITEM_FORMAT),
        "titles": np.array(cols[1]),
        "release": np.array(cols[2]),
        "genres": flags == "1",
        "genre_names": names,
    }


def encode_users(users: dict[str, np.ndarray], occupations: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One-hot registration features of `read_users`' output.

    Columns: age / 100; one column per age bucket (`AGE_BUCKETS`); gender M, F; one per occupation
    (``occupations``, default the sorted values present); zip region = the first character of the zip code when it
    is a digit 0-9, else "zip_other" (Canadian and malformed codes).

    Returns:
        ([U, F] float32 features, [F] str names).
    """
    age = users["age"].astype(np.float32)
    parts = [age[:, None] / 100.0]
    names = ["age/100"]
    for lo, hi in AGE_BUCKETS:
        parts.append(((age >= lo) & (age < hi)).astype(np.float32)[:, None])
        names.append(f"age_{lo}_{hi - 1}")
    for g in ("M", "F"):
        parts.append((users["gender"] == g).astype(np.float32)[:, None])
        names.append(f"gender_{g}")
    occupations = np.unique(users["occupation"]) if occupations is None else np.asarray(occupations)
    parts.append((users["occupation"][:, None] == occupations[None, :]).astype(np.float32))
    names += [f"occupation_{o}" for o in occupations]
    first = np.array([z[:1] for z in users["zip"]])
    regions = np.array([str(d) for d in range(10)] + ["other"])
    first = np.where(np.isin(first, regions[:10]), first, "other")
    parts.append((first[:, None] == regions[None, :]).astype(np.float32))
    names += [f"zip_{r}" for r in regions]
    return np.concatenate(parts, axis=1), np.array(names)


def side_info_files(path: str) -> list[str]:
    """The side-information files read for the ratings file ``path`` (beside it), those that exist."""
    directory = os.path.dirname(os.path.abspath(path))
    names = (USER_FILE, ITEM_FILE, GENRE_FILE, OCCUPATION_FILE)
    return [os.path.join(directory, n) for n in names if os.path.isfile(os.path.join(directory, n))]


def read_side_info(path: str, interactions: Interactions):
    """Genres and titles (``u.item``) and user features (``u.user``) beside the ratings file ``path``, aligned.

    Args:
        path: the resolved ratings file (``u.data``); the feature files are read from its directory.
        interactions: what the ratings loader returned (its id maps give the row order).

    Returns:
        `cml_tf.data.side_info.SideInfo` with genre groups, titles, and user features when ``u.user`` is present.

    Raises:
        DataError: ``u.item`` missing or malformed, a user / item of the interactions without a line, a malformed
            ``u.user`` (the file and line named).
    """
    from cml_tf.data.side_info import SideInfo, align

    directory = os.path.dirname(os.path.abspath(path))
    items = read_items(directory)
    rows = align(interactions.item_ids, items["item_ids"], os.path.join(directory, ITEM_FILE), "item")
    groups = sp.csr_matrix(items["genres"][rows].astype(np.float32))
    user_features = names = None
    if os.path.isfile(os.path.join(directory, USER_FILE)):
        users = read_users(directory)
        occupation_path = os.path.join(directory, OCCUPATION_FILE)
        occupations = None
        if os.path.isfile(occupation_path):
            occupations = np.array([x.strip() for x in _lines(occupation_path, "one occupation per line")])
            unknown = ~np.isin(users["occupation"], occupations)
            if np.any(unknown):
                line = int(np.flatnonzero(unknown)[0])
                occupation = str(users["occupation"][line])
                raise DataError(
                    f"{os.path.join(directory, USER_FILE)}: line {line + 1}: occupation {occupation!r} "
                    f"is not listed in {occupation_path}"
                )
        user_rows = align(interactions.user_ids, users["user_ids"], os.path.join(directory, USER_FILE), "user")
        encoded, names = encode_users(users, occupations)
        user_features = encoded[user_rows]
    return SideInfo(groups, items["genre_names"], "genre", items["titles"][rows], user_features, names)


def read_timestamps(path: str, interactions: Interactions, min_rating: float = 0.0) -> np.ndarray:
    """The time of each interaction: [nnz] int64 aligned with ``interactions.matrix``'s CSR entries.

    A pair rated several times gets its earliest timestamp among the ratings ``>= min_rating`` (the loader's row
    threshold; pass the one the interactions were loaded with).

    Args:
        path: the resolved ratings file (the 4th field is the timestamp).
        interactions: the loaded interactions (filters applied).
        min_rating: the row threshold used when loading.
    """
    sep, header = _sniff(path)
    common = dict(
        user_col=0, item_col=1, sep=sep, header=header, quoted=sep == ",", numeric_users=True, numeric_items=True
    )
    what = f"MovieLens {FORMAT} ({os.path.basename(path)}: separator {sep!r})"
    users, user_labels, items, item_labels, ratings = read_delimited(
        path, value_col=2, value_name="rating", what=what, **common
    )
    _, _, _, _, times = read_delimited(path, value_col=3, value_name="timestamp", what=what, **common)
    keep = ratings >= min_rating
    u_ids, i_ids = np.asarray(user_labels)[users[keep]], np.asarray(item_labels)[items[keep]]
    times = times[keep]
    m = interactions.matrix
    # rows / columns of the interactions for each raw row (raw rows of dropped users / items are ignored)
    u_sorted, i_sorted = np.argsort(interactions.user_ids), np.argsort(interactions.item_ids)
    u_pos = np.minimum(np.searchsorted(interactions.user_ids[u_sorted], u_ids), m.shape[0] - 1)
    i_pos = np.minimum(np.searchsorted(interactions.item_ids[i_sorted], i_ids), m.shape[1] - 1)
    rows, cols = u_sorted[u_pos], i_sorted[i_pos]
    known = (interactions.user_ids[rows] == u_ids) & (interactions.item_ids[cols] == i_ids)
    key = rows[known].astype(np.int64) * m.shape[1] + cols[known]
    order = np.lexsort((times[known], key))
    key, t = key[order], times[known][order]
    first = np.concatenate(([True], key[1:] != key[:-1])) if key.size else np.zeros(0, bool)
    key, t = key[first], t[first]
    entries = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr)) * m.shape[1] + m.indices
    pos = np.minimum(np.searchsorted(key, entries), max(key.size - 1, 0))
    if key.size == 0 or not np.all(key[pos] == entries):
        raise DataError(f"{path}: some interactions have no timestamp row (was the data loaded from another file?)")
    return t[pos].astype(np.int64)
