"""absl flags shared by the command modules for choosing and loading a data set.

Import this module (it defines the flags once) and call ``load_interactions_from_flags(flags.FLAGS)``.
``--train_path`` / ``--valid_path`` / ``--test_path`` name the files of a given split (``--split=given``, read by
`cml_tf.training.data.load_given_split`; docs/given_splits.md).
Every filter flag defaults to None, meaning "the data set's own default" (the paper's filters); a flag given
for a data set that does not accept it is an error naming the flag. ``--nouse_cache`` disables the ``.npz`` cache.
`filter_hint` names the filter flags of a data set with their values, for messages about too little data.
"""

from __future__ import annotations

from absl import flags

from cml_tf.data import loaders
from cml_tf.data.interactions import DataError, Interactions

flags.DEFINE_string(
    "dataset",
    "synthetic",
    f"Data set to load: {', '.join(loaders.available())} (synthetic: generated, no --data_path).",
)
flags.DEFINE_string(
    "data_path", None, "The data set's raw file, or a directory holding its conventional file name (see docs/data.md)."
)
flags.DEFINE_string(
    "train_path",
    None,
    "--split=given: the training file, in the data set's own format (lightgcn / recbole: the files in --data_path).",
)
flags.DEFINE_string("valid_path", None, "--split=given: the validation file (optional; docs/given_splits.md).")
flags.DEFINE_string("test_path", None, "--split=given: the test file, in the data set's own format.")
flags.DEFINE_string("cache_dir", None, "Cache directory for parsed data (default $CML_TF_CACHE or ~/.cache/cml_tf).")
flags.DEFINE_bool("use_cache", True, "Read / write the parsed-data cache (--nouse_cache: parse the raw file again).")
flags.DEFINE_integer("min_playcount", None, "echonest: keep rows with playcount >= this (default 5).")
flags.DEFINE_float(
    "min_rating", None, "amazon_movies / book_crossing / movielens: keep ratings >= this (defaults 5 / 5 / 0)."
)
flags.DEFINE_integer(
    "min_user_interactions",
    None,
    "Keep users with >= this many distinct items (defaults: echonest 21, amazon_movies 20, book_crossing 11, else 0).",
)
flags.DEFINE_integer("min_item_users", None, "Keep items with >= this many users (defaults: echonest 5, else 0).")
flags.DEFINE_bool("iterative_core", None, "Repeat the user / item count filters until stable (default: once).")
flags.DEFINE_string("csv_user_col", None, "csv: user column, 0-based index or header name (default 0).")
flags.DEFINE_string("csv_item_col", None, "csv: item column, 0-based index or header name (default 1).")
flags.DEFINE_string("csv_weight_col", None, "csv: weight column for --min_weight (default none).")
flags.DEFINE_string("csv_sep", None, "csv: field separator; 'tab' or '\\t' for a tab (default ',').")
flags.DEFINE_bool("csv_header", None, "csv: the first line is a header (default false).")
flags.DEFINE_string("csv_encoding", None, "csv: text encoding (default utf-8).")
flags.DEFINE_float("min_weight", None, "csv: keep rows with weight >= this (needs --csv_weight_col).")
flags.DEFINE_integer("num_users", None, "synthetic: number of users (default 2000).")
flags.DEFINE_integer("num_items", None, "synthetic: number of items (default 4000).")
flags.DEFINE_integer("num_interactions", None, "synthetic: number of distinct interactions (default 80000).")
flags.DEFINE_integer("synthetic_seed", None, "synthetic: generator seed (default 0).")

#: flag name -> data set option name.
FLAG_TO_OPTION = {
    "min_playcount": "min_playcount",
    "min_rating": "min_rating",
    "min_user_interactions": "min_user_interactions",
    "min_item_users": "min_item_users",
    "iterative_core": "iterative_core",
    "csv_user_col": "user_col",
    "csv_item_col": "item_col",
    "csv_weight_col": "weight_col",
    "csv_sep": "sep",
    "csv_header": "header",
    "csv_encoding": "encoding",
    "min_weight": "min_weight",
    "num_users": "num_users",
    "num_items": "num_items",
    "num_interactions": "num_interactions",
    "synthetic_seed": "seed",
}


def options_from_flags(flag_values) -> tuple[str, dict]:
    """(canonical data set name, {option: value}) for the flags that were set; raises DataError naming a flag."""
    name = loaders.canonical_name(flag_values.dataset)
    accepted = loaders.options(name)
    opts = {}
    for flag, option in FLAG_TO_OPTION.items():
        value = flag_values[flag].value
        if value is None:
            continue
        if option not in accepted:
            raise DataError(
                f"--{flag} does not apply to --dataset={name} (its flags: "
                f"{', '.join('--' + f for f, o in FLAG_TO_OPTION.items() if o in accepted) or 'none'})"
            )
        if option == "sep" and value in ("tab", "\\t"):
            value = "\t"
        opts[option] = loaders.validate_option(name, option, value, label=f"--{flag}")
    return name, opts


def load_interactions_from_flags(flag_values) -> Interactions:
    """Loads the data set the flags describe (only the options it accepts are passed)."""
    name, opts = options_from_flags(flag_values)
    return loaders.load(
        name,
        flag_values.data_path,
        cache_dir=flag_values.cache_dir,
        use_cache=bool(flag_values.use_cache),
        **opts,
    )


#: the options that filter rows, users or items (what to loosen when too little data is left)
FILTER_OPTIONS = ("min_playcount", "min_rating", "min_weight", "min_user_interactions", "min_item_users")


def filter_hint(name: str, opts: dict) -> str:
    """``loosen the filters: --min_playcount (now 5), ...`` for data set ``name`` given its options; "" if it has none.

    Args:
        name: data set name.
        opts: the options given (the data set's defaults fill the others).
    """
    name = loaders.canonical_name(name)
    defaults = loaders.options(name)
    current = {**defaults, **{k: v for k, v in opts.items() if v is not None}}
    parts = []
    for flag, option in FLAG_TO_OPTION.items():
        if option in FILTER_OPTIONS and option in defaults and current.get(option) is not None:
            parts.append(f"--{flag} (now {current[option]:g})")
    return f"loosen the filters: {', '.join(parts)}" if parts else ""
