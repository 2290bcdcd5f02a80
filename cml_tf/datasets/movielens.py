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

from cml_tf.datasets import filters
from cml_tf.datasets.csv import find_file, read_delimited
from cml_tf.interactions import DataError, Interactions

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
    users, user_labels, items, item_labels, ratings = read_delimited(
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
    return filters.build(
        path,
        users,
        items,
        user_labels,
        item_labels,
        values=ratings,
        min_value=o["min_rating"],
        value_name="rating",
        steps=[(filters.USERS, o["min_user_interactions"]), (filters.ITEMS, o["min_item_users"])],
        iterative_core=o["iterative_core"],
    )
