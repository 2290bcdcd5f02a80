"""Book-Crossing (Ziegler et al. 2005) ``BX-Book-Ratings.csv``: ``"User-ID";"ISBN";"Book-Rating"``.

``;``-separated, every field double-quoted, latin-1, one header line. Ratings 0 are implicit, 1-10 explicit.
Paper filters (defaults), applied ONCE in this order: ratings ``>= 5`` (``min_rating``), then users with MORE than
10 books (``min_user_interactions=11``, inclusive); ``min_item_users`` (default 0: no item filter) follows;
``iterative_core=True`` repeats the user / item filters until stable. User ids must be integers (sorted order);
ISBNs are kept as strings (order of first appearance).
"""

from __future__ import annotations

from cml_tf.data.interactions import Interactions
from cml_tf.data.loaders import filters
from cml_tf.data.loaders.csv import find_file, read_delimited

OPTIONS = {"min_rating": 5.0, "min_user_interactions": 11, "min_item_users": 0, "iterative_core": False}
FORMAT = '"User-ID";"ISBN";"Book-Rating" lines (quoted, ;-separated, latin-1, one header line, integer User-ID)'


def resolve_path(data_path: str | None) -> str:
    return find_file(data_path, ("BX-Book-Ratings.csv",), ("*Ratings*.csv",), "Book-Crossing ratings: " + FORMAT)


def read(path: str, **options) -> Interactions:
    """Parses the ratings and applies the filters (see the module docstring; once, in the order written)."""
    o = {**OPTIONS, **options}
    parsed = read_delimited(
        path,
        user_col=0,
        item_col=1,
        value_col=2,
        sep=";",
        header=True,
        encoding="latin-1",
        quoted=True,
        numeric_users=True,
        numeric_items=False,
        value_name="rating",
        what=FORMAT,
    )
    return filters.build_rated(path, parsed, o, "rating")
