"""Echo Nest Taste Profile (``train_triplets.txt``): ``user<TAB>song<TAB>playcount``, no header.

Paper filters (defaults), applied ONCE in this order: rows with ``playcount >= 5`` (``min_playcount``), then users
with MORE than 20 distinct songs (``min_user_interactions=21``, inclusive), then songs with at least 5 users
(``min_item_users=5``). ``iterative_core=True`` repeats the user and song filters until nothing changes.
Ids are kept as strings, rows / columns in order of first appearance. The full file (48M rows, 3 GB) loads in
well under two minutes: pyarrow parses it with the ids dictionary-encoded on the fly.
"""

from __future__ import annotations

import os

from cml_tf.data.interactions import DataError, Interactions
from cml_tf.data.loaders import filters
from cml_tf.data.loaders.csv import find_file, read_delimited

OPTIONS = {"min_playcount": 5, "min_user_interactions": 21, "min_item_users": 5, "iterative_core": False}
FORMAT = "tab-separated user<TAB>song<TAB>playcount lines with an integer playcount, no header"
#: where the full file comes from (not shipped), and the shipped sample, relative to the repository's usual cwd
SOURCE = "the Taste Profile subset of the Million Song Dataset, http://millionsongdataset.com/tasteprofile/"
SAMPLE = os.path.join("..", "shared", "data", "echonest", "train_triplets_sample.txt")


def resolve_path(data_path: str | None) -> str:
    """The triplets file ``data_path`` names (a file, or a directory holding ``train_triplets.txt``).

    Raises:
        DataError: no path (the message says where the full file comes from and, when the shipped sample exists
            relative to the current directory, gives the command that trains on it), or no such file.
    """
    if data_path is None:
        sample = (
            f"; or train on the shipped sample: python -m cml_tf.train --dataset=echonest --data_path={SAMPLE} "
            "--min_playcount=1 --sampler=2stage"
            if os.path.isfile(SAMPLE)
            else ""
        )
        raise DataError(
            f"--dataset=echonest needs --data_path: the 3 GB train_triplets.txt (or a directory holding it) from "
            f"{SOURCE}{sample}"
        )
    return find_file(data_path, ("train_triplets.txt",), ("*.txt",), "Echo Nest triplets (" + FORMAT + ")")


def read(path: str, **options) -> Interactions:
    """Parses the triplets and applies the filters (see the module docstring; once, in the order written)."""
    o = {**OPTIONS, **options}
    parsed = read_delimited(
        path,
        user_col=0,
        item_col=1,
        value_col=2,
        sep="\t",
        quoted=False,
        numeric_users=False,
        numeric_items=False,
        value_name="playcount",
        what=FORMAT,
    )
    return filters.build_rated(path, parsed, o, "playcount")
