"""Data set registry: ``load(name, data_path, **options) -> Interactions``, with an ``.npz`` cache.

Data sets (``available()``), their options and defaults (``options(name)``):

===============  ====================================================================================
echonest         min_playcount=5, min_user_interactions=21, min_item_users=5, iterative_core=False
amazon_movies    min_rating=5 (= rating > 4), min_user_interactions=20, min_item_users=0, iterative_core
book_crossing    min_rating=5, min_user_interactions=11 (= more than 10), min_item_users=0, iterative_core
citeulike        (no options: no filter, declared catalog width)
movielens        min_rating=0 (keep all), min_user_interactions=0, min_item_users=0, iterative_core
csv              user_col, item_col, weight_col, sep, header, encoding, min_weight, min_user_interactions,
                 min_item_users, iterative_core
lightgcn         (no options: LightGCN's train.txt / valid.txt / test.txt, a given split, ids kept)
recbole          (no options: RecBole's NAME.train/valid/test.inter, a given split, tokens mapped)
synthetic        num_users=2000, num_items=4000, num_interactions=80000, seed=0 (no data_path)
===============  ====================================================================================

All ``min_*`` thresholds are inclusive (keep ``>= value``). Filters are applied once, in the order listed;
``iterative_core=True`` repeats the count filters until stable. Aliases: ``amazon``, ``citeulike_t``,
``citeulike-t``, ``bookcrossing``, ``ml``; names are case-insensitive and ``-`` reads as ``_``.

Cache: the parsed `Interactions` is saved as ``<cache_dir>/<name>-<hash>.npz`` where the hash covers the loader
name, the absolute resolved file path, its size and mtime, and every option value; a corrupted cache file is
rebuilt. ``cache_dir`` defaults to ``$CML_TF_CACHE`` or ``~/.cache/cml_tf``; nothing is written beside the raw file.

Given splits (`load_given`, ``--split=given``; docs/given_splits.md): ``lightgcn`` and ``recbole`` are split files
by nature (``data_path`` is their directory); every other loader reads its own format from ``train_path``,
``test_path`` and an optional ``valid_path``, with its row thresholds but without count filters (unless given).
Given splits are parsed every time (not cached).

Side information (`load_side_info`): MovieLens genres, titles and user features (``u.item``, ``u.genre``,
``u.user``, ``u.occupation`` beside ``u.data``) and citeulike-t tags (``tag-item.dat``), as a
`cml_tf.data.side_info.SideInfo` aligned to the interactions, cached the same way (keyed by the feature files' paths,
sizes and mtimes and by the interactions' id maps).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from types import ModuleType

import numpy as np

from cml_tf.data.interactions import DataError, Interactions
from cml_tf.data.loaders import amazon, book_crossing, citeulike, echonest, lightgcn, movielens, recbole, synthetic
from cml_tf.data.loaders import csv as csv_loader
from cml_tf.data.side_info import SideInfo

_MODULES: dict[str, ModuleType] = {
    "amazon_movies": amazon,
    "book_crossing": book_crossing,
    "citeulike": citeulike,
    "csv": csv_loader,
    "echonest": echonest,
    "lightgcn": lightgcn,
    "movielens": movielens,
    "recbole": recbole,
    "synthetic": synthetic,
}
_ALIASES = {"amazon": "amazon_movies", "citeulike_t": "citeulike", "bookcrossing": "book_crossing", "ml": "movielens"}
CACHE_VERSION = 1

_INT_OPTIONS = {"min_user_interactions", "min_item_users", "min_playcount", "num_users", "num_items"}
_POSITIVE_OPTIONS = {"num_users", "num_items", "num_interactions"}
_FLOAT_OPTIONS = {"min_rating", "min_weight"}

log = logging.getLogger("cml_tf.data.loaders")


def available() -> list[str]:
    """Canonical data set names, sorted."""
    return sorted(_MODULES)


def canonical_name(name: str) -> str:
    """Canonical data set name; raises DataError naming ``--dataset`` and listing the known names."""
    key = str(name).strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _MODULES:
        raise DataError(f"--dataset={name!r} is not a known data set; expected one of: {', '.join(available())}")
    return key


def options(name: str) -> dict:
    """The options data set ``name`` accepts, with their defaults."""
    return dict(_MODULES[canonical_name(name)].OPTIONS)


def validate_option(name: str, option: str, value, label: str | None = None):
    """Checks and normalises one option value; raises DataError naming ``label`` (default the option name).

    Thresholds must be >= 0, sizes >= 1; ints must be whole numbers.
    """
    label = label or option
    dataset = canonical_name(name)
    accepted = _MODULES[dataset].OPTIONS
    if option not in accepted:
        raise DataError(
            f"{label} does not apply to --dataset={dataset} (it accepts: {', '.join(sorted(accepted)) or 'none'})"
        )
    if value is None:
        return None
    if option == "iterative_core" or option == "header":
        if not isinstance(value, bool):
            raise DataError(f"{label} must be true or false, got {value!r}")
        return value
    if option in _INT_OPTIONS or option in ("num_interactions", "seed"):
        if isinstance(value, bool) or not float(value).is_integer():
            raise DataError(f"{label} must be a whole number, got {value!r}")
        value = int(value)
        if option in _POSITIVE_OPTIONS and value < 1:
            raise DataError(f"{label} must be >= 1, got {value}")
        if value < 0:
            raise DataError(f"{label} must be >= 0, got {value}")
        return value
    if option in _FLOAT_OPTIONS:
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise DataError(f"{label} must be a number, got {value!r}") from None
        if not (value >= 0 and math.isfinite(value)):
            raise DataError(f"{label} must be >= 0 and finite, got {value}")
        return value
    if option in ("user_col", "item_col", "weight_col"):
        if isinstance(value, int) and value < 0:
            raise DataError(f"{label} must be a 0-based column index >= 0 or a header name, got {value}")
        return value
    if option == "sep" and not value:
        raise DataError(f"{label} must be a non-empty separator")
    return value


def default_cache_dir() -> str:
    return os.environ.get("CML_TF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "cml_tf")


def cache_path(name: str, path: str, opts: dict, cache_dir: str) -> str:
    """Cache file for (loader, absolute path, size, mtime, options)."""
    st = os.stat(path)
    key = json.dumps(
        [CACHE_VERSION, name, os.path.abspath(path), st.st_size, st.st_mtime_ns, sorted(opts.items())],
        default=str,
    )
    return os.path.join(cache_dir, f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz")


def load(
    name: str,
    data_path: str | None = None,
    *,
    cache_dir: str | None = None,
    use_cache: bool = True,
    **opts,
) -> Interactions:
    """Loads a data set by name, applying its filters (the paper's by default).

    Args:
        name: data set name, see `available()`.
        data_path: file, or directory holding the conventional file name (None for synthetic).
        cache_dir: where the ``.npz`` cache lives; default ``$CML_TF_CACHE`` or ``~/.cache/cml_tf``.
        use_cache: read / write the cache (synthetic data is never cached).
        **opts: data set options (see the module docstring); None means the data set's default.

    Returns:
        `Interactions`: [n_users, n_items] binary CSR plus original ids.

    Raises:
        DataError: unknown name or option, bad option value, missing / malformed file, nothing left after filters.
    """
    dataset = canonical_name(name)
    module = _MODULES[dataset]
    given = {k: validate_option(dataset, k, v) for k, v in opts.items()}
    full = {**module.OPTIONS, **{k: v for k, v in given.items() if v is not None}}
    path = module.resolve_path(data_path)
    if path is None or not use_cache or dataset in GIVEN_SPLIT:
        return module.read(path, **full)
    cache_dir = os.path.expanduser(cache_dir or default_cache_dir())
    cached = cache_path(dataset, path, full, cache_dir)
    if os.path.isfile(cached):
        try:
            result = Interactions.load(cached)
            log.debug("loaded %s from cache %s", path, cached)
            return result
        except Exception as e:  # any unreadable cache (bad zip, truncated, wrong keys) is rebuilt
            log.warning("rebuilding corrupted cache %s (%s)", cached, e)
    result = module.read(path, **full)
    try:
        result.save(cached)
    except OSError as e:
        log.warning("could not write cache %s: %s", cached, e)
    return result


#: data sets whose files are a split (``--split=given`` is theirs)
GIVEN_SPLIT = ("lightgcn", "recbole")
#: count filters left out when another data set's files are read as a given split (unless given explicitly)
_COUNT_FILTERS = ("min_user_interactions", "min_item_users")


@dataclasses.dataclass(frozen=True, eq=False)
class GivenPart:
    """One file of a given split, in the index space of `load_given`'s `Interactions`.

    Attributes:
        file: the file's path (for messages).
        users: [n] int64 row index of each pair.
        items: [n] int64 column index of each pair.
        lines: [n] int64 1-based line of each pair in ``file``; None where the loader does not keep lines.
    """

    file: str
    users: np.ndarray
    items: np.ndarray
    lines: np.ndarray | None


def _encode(ids: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """Ids of several arrays -> ([n_k] int64 codes per array, [m] labels), codes in order of first appearance
    over the arrays in turn (one map for all of them)."""
    labels, first, inverse = np.unique(np.concatenate(ids), return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(order.size, np.int64)
    rank[order] = np.arange(order.size)
    codes = rank[inverse.ravel()]
    return np.split(codes, np.cumsum([len(a) for a in ids])[:-1]), labels[order]


def load_given(
    name: str,
    data_path: str | None = None,
    *,
    train_path: str | None = None,
    valid_path: str | None = None,
    test_path: str | None = None,
    **opts,
) -> tuple[Interactions, dict[str, GivenPart | None]]:
    """Reads a given split: a train, a test and an optional validation file.

    ``lightgcn`` / ``recbole``: the files in ``data_path`` (see those modules); ``*_path`` replace single files.
    Any other data set: ``train_path`` and ``test_path`` (``valid_path`` optional) in its own format, each read by
    its loader with its options, the count filters (``min_user_interactions``, ``min_item_users``) off unless given.
    Ids: lightgcn keeps its integer ids as indices (``n = max id + 1``); the others map ids to indices in order of
    first appearance over train, valid, test. Pairs are checked by `cml_tf.data.splits.given_split`.

    Args:
        name: data set name.
        data_path: the directory of a lightgcn / recbole split (others: unused here).
        train_path, valid_path, test_path: the part files.
        **opts: data set options.

    Returns:
        (`Interactions`: the union of the parts, with the id maps; {"train", "valid", "test"} -> `GivenPart`, with
        "valid" None when there is no validation file).

    Raises:
        DataError: one line naming the flag, file or line (a missing train / test file, an empty file, a bad id).
    """
    dataset = canonical_name(name)
    module = _MODULES[dataset]
    if dataset == "synthetic":
        raise DataError("--split=given does not apply to --dataset=synthetic (it has no files)")
    explicit = {"train": train_path, "valid": valid_path, "test": test_path}
    if dataset in GIVEN_SPLIT and (data_path is not None or train_path is None):
        files = module.given_files(module.resolve_path(data_path))
        files.update({part: f for part, f in explicit.items() if f is not None})
    elif train_path is None or test_path is None:
        raise DataError(
            f"--split=given needs --train_path and --test_path (--valid_path optional) for --dataset={dataset}: "
            "files in its own format"
        )
    else:
        files = dict(explicit)
    for part, f in files.items():
        if f is not None and not os.path.isfile(f):
            raise DataError(f"{f}: no such file (the {part} file of the given split)")
    given = {k: validate_option(dataset, k, v) for k, v in opts.items()}
    full = {**module.OPTIONS, **{k: 0 for k in _COUNT_FILTERS if k in module.OPTIONS}}
    full.update({k: v for k, v in given.items() if v is not None})
    names = [part for part in ("train", "valid", "test") if files[part] is not None]
    users, items, lines = [], [], []
    for part in names:
        if dataset in GIVEN_SPLIT:
            u, i, line = module.read_part(files[part])
        else:
            inter = module.read(files[part], **full)
            rows, cols = inter.pairs()
            u, i, line = inter.user_ids[rows], inter.item_ids[cols], None
        users.append(u)
        items.append(i)
        lines.append(line)
    if dataset == "lightgcn":
        n_users = max(int(u.max()) + 1 if u.size else 0 for u in users)
        n_items = max(int(i.max()) + 1 if i.size else 0 for i in items)
        user_ids, item_ids = np.arange(n_users), np.arange(n_items)
    else:
        users, user_ids = _encode(users)
        items, item_ids = _encode(items)
        n_users, n_items = len(user_ids), len(item_ids)
    interactions = Interactions.from_pairs(
        np.concatenate(users), np.concatenate(items), n_users, n_items, user_ids=user_ids, item_ids=item_ids
    )
    parts: dict[str, GivenPart | None] = {"valid": None}
    for part, u, i, line in zip(names, users, items, lines):
        parts[part] = GivenPart(files[part], np.asarray(u, np.int64), np.asarray(i, np.int64), line)
    return interactions, parts


#: data sets with side information (`load_side_info`) and what their item groups are
SIDE_INFO = {"movielens": "genres (u.item), user features (u.user)", "citeulike": "tags (tag-item.dat)"}


def load_side_info(
    name: str,
    data_path: str | None,
    interactions: Interactions,
    *,
    cache_dir: str | None = None,
    use_cache: bool = True,
) -> SideInfo:
    """The side information of a data set, aligned to ``interactions`` (as loaded from the same ``data_path``).

    Args:
        name: data set name (``movielens`` or ``citeulike``).
        data_path: the data set's file or directory, as given to `load`.
        interactions: the loaded interactions (their id maps give the row order).
        cache_dir, use_cache: as for `load`.

    Returns:
        `cml_tf.data.side_info.SideInfo`: [n_items, G] item groups (genres or tags), titles and user features where the
        data set has them.

    Raises:
        DataError: a data set without side information (naming ``--dataset``), missing or malformed feature files
            (naming the file and line), ids of the interactions missing from them.
    """
    dataset = canonical_name(name)
    if dataset not in SIDE_INFO:
        have = "; ".join(f"{k}: {v}" for k, v in SIDE_INFO.items())
        raise DataError(f"--dataset={dataset} has no side information; data sets with side information: {have}")
    module = _MODULES[dataset]
    path = module.resolve_path(data_path)
    files = module.side_info_files(path)
    if not use_cache or not files:
        return module.read_side_info(path, interactions)
    ids = hashlib.sha256()
    for arr in (interactions.user_ids, interactions.item_ids):
        ids.update(str(arr.dtype).encode() + np.ascontiguousarray(arr).tobytes())
    stats = [(os.path.abspath(f), os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
    key = json.dumps([CACHE_VERSION, "side_info", dataset, stats, ids.hexdigest()])
    cache_dir = os.path.expanduser(cache_dir or default_cache_dir())
    cached = os.path.join(cache_dir, f"{dataset}-side-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz")
    if os.path.isfile(cached):
        try:
            return SideInfo.load(cached)
        except Exception as e:  # any unreadable cache is rebuilt
            log.warning("rebuilding corrupted cache %s (%s)", cached, e)
    result = module.read_side_info(path, interactions)
    try:
        os.makedirs(cache_dir, exist_ok=True)
        result.save(cached)
    except OSError as e:
        log.warning("could not write cache %s: %s", cached, e)
    return result
