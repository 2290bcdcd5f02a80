"""Amazon reviews (McAuley et al.; the paper uses Movies & TV): JSON lines or a ratings-only CSV.

* JSON lines (``reviews_Movies_and_TV_5.json`` or ``.json.gz``): objects with ``reviewerID``, ``asin``,
  ``overall`` (other fields ignored);
* ratings-only CSV (``ratings_Movies_and_TV.csv``): ``user,item,rating,timestamp``, no header.

Paper filters (defaults), applied ONCE in this order: ratings ``> 4`` (``min_rating=5``, inclusive: Amazon
ratings are whole stars 1-5, so ``>= 5`` is ``> 4``), then users with at least 20 positives
(``min_user_interactions=20``); ``min_item_users`` (default 0) follows; ``iterative_core=True`` repeats the user /
item filters until stable. Ids are strings, in order of first appearance.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.json as pajson

from cml_tf.data.interactions import DataError, Interactions
from cml_tf.data.loaders import filters
from cml_tf.data.loaders.csv import find_file, read_delimited

OPTIONS = {"min_rating": 5.0, "min_user_interactions": 20, "min_item_users": 0, "iterative_core": False}
JSON_FORMAT = 'JSON lines with string "reviewerID", string "asin" and numeric "overall"'
CSV_FORMAT = "user,item,rating,timestamp lines (no header)"
_FIELDS = {"reviewerID": str, "asin": str, "overall": (int, float)}


def resolve_path(data_path: str | None) -> str:
    return find_file(
        data_path,
        ("reviews_Movies_and_TV_5.json", "reviews_Movies_and_TV_5.json.gz", "ratings_Movies_and_TV.csv"),
        ("*.json", "*.json.gz", "*.csv"),
        f"Amazon reviews: {JSON_FORMAT}, or {CSV_FORMAT}",
    )


def _scan_json(path: str) -> str | None:
    """First bad line of a JSON-lines file (error path only)."""
    opener = pa.input_stream(path, compression="detect")
    with opener as raw:
        for line_no, line in enumerate(raw.read().decode("utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                return f"line {line_no}: not valid JSON ({e.msg} at column {e.colno})"
            if not isinstance(obj, dict):
                return f"line {line_no}: not a JSON object"
            for key, kind in _FIELDS.items():
                if not isinstance(obj.get(key), kind) or obj.get(key) == "":
                    return f"line {line_no}: field {key!r} missing or not a {getattr(kind, '__name__', 'number')}"
    return None


def _read_json(path: str):
    schema = pa.schema([("reviewerID", pa.string()), ("asin", pa.string()), ("overall", pa.float64())])
    try:
        with pa.input_stream(path, compression="detect") as stream:
            table = pajson.read_json(
                stream,
                read_options=pajson.ReadOptions(block_size=16 << 20),
                parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
            )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise DataError(f"{path}: {_scan_json(path) or str(e).splitlines()[0][:300]}; expected {JSON_FORMAT}") from None
    if any(table.column(k).null_count for k in _FIELDS):
        raise DataError(f"{path}: {_scan_json(path) or 'a field is missing'}; expected {JSON_FORMAT}")
    if table.num_rows == 0:
        raise DataError(f"{path}: no data rows; expected {JSON_FORMAT}")
    cols = []
    for key in ("reviewerID", "asin"):
        encoded = table.column(key).combine_chunks().dictionary_encode()
        cols += [encoded.indices.to_numpy().astype(np.int64), encoded.dictionary.to_numpy(zero_copy_only=False)]
    return cols[0], cols[1].astype(str), cols[2], cols[3].astype(str), table.column("overall").to_numpy()


def read(path: str, **options) -> Interactions:
    """Parses the reviews and applies the filters (see the module docstring; once, in the order written)."""
    o = {**OPTIONS, **options}
    name = os.path.basename(path).lower()
    if name.endswith((".json", ".json.gz", ".jsonl")):
        parsed = _read_json(path)
    else:
        parsed = read_delimited(
            path,
            user_col=0,
            item_col=1,
            value_col=2,
            sep=",",
            quoted=True,
            numeric_users=False,
            numeric_items=False,
            value_name="rating",
            what=CSV_FORMAT,
        )
    return filters.build_rated(path, parsed, o, "rating")
