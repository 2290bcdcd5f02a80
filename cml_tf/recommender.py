"""Use a trained run from Python: recommendations for users, similar items, every user's top k.

Example::

    from cml_tf import Recommender

    rec = Recommender.from_run("runs/ml100k")               # a run finished by python -m cml_tf.train
    for r in rec.recommend(["42", "7"], k=5):               # the data set's own ids, as strings
        print(r.query, list(zip(r.items, r.scores, r.names)))
    rec.similar_items("50", k=5)                            # items nearest to item "50"

Ids are the data set's own user and item ids as strings, as they appear in the raw file (``"42"``); for data sets
with integer ids an id with leading zeros (``"042"``) or a Python int also matches. Scores are ``-||u - v||^2`` in
the model's geometry (higher is closer; 0 is the best possible, -4 the worst on the unit sphere).

**Seen items** are a user's training and validation interactions in the run's split (what the model was fitted and
selected on; the test fold's masking in ``results.json`` excludes the same items). They are excluded by default
(``include_seen=True`` keeps them); ``seen="all"`` also excludes the test fold, i.e. every interaction in the data
set, for a deployed model. The run directory does not store the split; it is rebuilt from ``config.json`` (the
loader and the split are deterministic) the first time it is needed and checked twice: the ids must equal the
run's saved id arrays, and the rebuilt split must reproduce ``results.json``'s test NDCG@k from the saved
embeddings (which catches data, or cml_tf split code, that changed since training). It is then kept in
``embeddings/seen.npz`` (removed with the embeddings by ``--overwrite``; tagged with a fingerprint of the config and
the ids, and rebuilt when that does not match), so the raw data is needed again only for item names. A relative
``data_path`` in the config is tried from the current directory, then from every directory above the run directory
(a run trained from the project root with ``../shared/data/...`` is found from anywhere); ``data_path=`` overrides
it. Config keys this version of cml_tf does not know are ignored (the check above guards the split).

**Item names**: MovieLens titles from ``u.item`` (ml-100k, latin-1), ``movies.dat`` (ml-1m / 10m) or
``movies.csv`` (ml-20m and later) beside the ratings file, or any ``item_names=`` file of ``id<TAB>name`` lines
(UTF-8). Data sets without names (citeulike-t) show ids only.

Memory: `recommend_all` scores users in blocks (see `cml_tf.retrieval`): at most ``memory_bytes`` of scores at a
time, never a users x items matrix.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import scipy.sparse as sp

from cml_tf import retrieval
from cml_tf.interactions import DataError

EMBEDDING_FILES = ("user_embeddings.npy", "item_embeddings.npy", "user_ids.npy", "item_ids.npy")
SEEN_CACHE = "seen.npz"
SEEN_CHOICES = ("train", "all")
SEEN_CACHE_VERSION = 1


class RecommendError(ValueError):
    """Input that cannot be served: an unknown id, an unfinished run, a bad k. The message is one line."""


@dataclasses.dataclass(frozen=True, eq=False)
class Ranked:
    """The top items for one query (a user, or an item for similar items), best first.

    Attributes:
        query: the user id (or item id) as a string.
        items: item ids as strings; shorter than k when fewer than k items were left after exclusion.
        scores: [len(items)] float32, ``-||q - v||^2``, descending.
        names: item names (None where an item has no name), or None when the data set has no names.
    """

    query: str
    items: tuple[str, ...]
    scores: np.ndarray
    names: tuple[str | None, ...] | None = None

    def rows(self) -> list[dict]:
        """One dict per item: ``rank`` (1-based), ``item``, ``score`` and ``name`` when names exist."""
        out = []
        for rank, (item, score) in enumerate(zip(self.items, self.scores), start=1):
            row = {"rank": rank, "item": item, "score": float(score)}
            if self.names is not None:
                row["name"] = self.names[rank - 1]
            out.append(row)
        return out


def _fmt_ids(ids: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(str(i)) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


class IdMap:
    """Original ids (the data set's, as strings) <-> rows of a table."""

    def __init__(self, ids: np.ndarray, what: str):
        self.ids = np.asarray(ids)
        self.what = what
        self.strings = self.ids.astype(str)
        self.integer = np.issubdtype(self.ids.dtype, np.integer)
        self._rows = {s: i for i, s in enumerate(self.strings.tolist())}

    def __len__(self) -> int:
        return len(self._rows)

    def row(self, key) -> int | None:
        """The row of one id, or None."""
        s = str(key).strip()
        row = self._rows.get(s)
        if row is None and self.integer:
            try:
                row = self._rows.get(str(int(s)))
            except ValueError:
                return None
        return row

    def rows(self, keys: Iterable, source: str = "") -> np.ndarray:
        """[n] int64 rows of the ids; RecommendError naming the unknown ones."""
        keys = [str(k).strip() for k in keys]
        rows = [self.row(k) for k in keys]
        unknown = [k for k, r in zip(keys, rows) if r is None]
        if unknown:
            plural = "s" if len(unknown) > 1 else ""
            where = f" ({source})" if source else ""
            raise RecommendError(
                f"unknown {self.what} id{plural} {_fmt_ids(unknown)}{where}: not among the run's "
                f"{len(self):,} {self.what}s (ids are the data set's own, e.g. {str(self.strings[0])!r})"
            )
        return np.asarray(rows, dtype=np.int64)


# ------------------------------------------------------------------------------------------------- run directory
def check_run(model_dir: str) -> None:
    """Raises RecommendError (one line, naming the directory) unless ``model_dir`` holds a finished run."""
    label = f"--model_dir={model_dir}"
    if not os.path.isdir(model_dir):
        raise RecommendError(f"{label}: no such directory")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise RecommendError(f"{label} is not a cml_tf run directory (no config.json)")
    if not os.path.isfile(os.path.join(model_dir, "results.json")):
        raise RecommendError(
            f"{label} holds no finished model: training has not finished (no results.json); run the same "
            "python -m cml_tf.train command again to finish it"
        )
    missing = [f for f in EMBEDDING_FILES if not os.path.isfile(os.path.join(model_dir, "embeddings", f))]
    if missing:
        raise RecommendError(f"{label} holds no finished model: embeddings/{missing[0]} is missing")
    try:
        with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
            model = json.load(f).get("model", "cml")
    except (OSError, ValueError, AttributeError):
        model = "cml"  # unreadable: `load_run_config` says so
    if model != "cml":
        raise RecommendError(
            f"{label} holds a --model={model} run: its score goes through a relation r(u, v), which the embeddings "
            "alone cannot rank; only CML runs can be served (rank it with cml_tf.evaluation.model_scores)"
        )


def load_run_config(model_dir: str):
    """The run's `Config`. Keys this version does not know (a run trained by another cml_tf version) are dropped:
    only the data and split keys matter here, and the rebuilt split is checked against the run's own test metrics
    (see `load_seen`)."""
    import json as _json

    from cml_tf.config import Config

    path = os.path.join(model_dir, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            saved = _json.load(f)
        known = {f.name for f in dataclasses.fields(Config)}
        return Config.from_dict({k: v for k, v in saved.items() if k in known})
    except (OSError, ValueError, TypeError) as e:
        raise RecommendError(f"--model_dir={model_dir}: unreadable config.json ({e})") from e


def resolve_data_path(data_path: str | None, model_dir: str) -> str | None:
    """The config's ``data_path`` as it exists from here: as given, else relative to a directory above the run."""
    if data_path is None or os.path.isabs(data_path) or os.path.exists(data_path):
        return data_path
    directory = os.path.abspath(model_dir)
    while True:
        candidate = os.path.join(directory, data_path)
        if os.path.exists(candidate):
            return os.path.normpath(candidate)
        parent = os.path.dirname(directory)
        if parent == directory:
            return data_path
        directory = parent


def _fingerprint(config, user_ids: np.ndarray, item_ids: np.ndarray) -> str:
    d = {k: v for k, v in config.to_dict().items() if k != "data_path"}
    h = hashlib.sha256(json.dumps([SEEN_CACHE_VERSION, d], sort_keys=True, default=str).encode())
    for ids in (user_ids, item_ids):
        h.update(np.ascontiguousarray(ids.astype(str)).tobytes())
    return h.hexdigest()


def _csr(indptr, indices, shape) -> sp.csr_matrix:
    return sp.csr_matrix((np.ones(indices.size, np.float32), indices, indptr), shape=shape)


def load_seen(
    model_dir: str, user_ids: np.ndarray, item_ids: np.ndarray, data_path: str | None = None, cache: bool = True
) -> dict[str, sp.csr_matrix]:
    """``{"train": train + valid, "all": every interaction}``, [n_users, n_items] CSR each, for a finished run.

    Read from ``embeddings/seen.npz`` when its fingerprint matches, else rebuilt from ``config.json`` (see the
    module docstring) and, with ``cache``, written there (skipped silently where the run directory is read-only).
    """
    from cml_tf import training

    config = load_run_config(model_dir)
    fingerprint = _fingerprint(config, user_ids, item_ids)
    shape = (len(user_ids), len(item_ids))
    path = os.path.join(model_dir, "embeddings", SEEN_CACHE)
    if os.path.isfile(path):
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["fingerprint"]) == fingerprint:
                    return {w: _csr(z[f"{w}_indptr"], z[f"{w}_indices"], shape) for w in SEEN_CHOICES}
        except (OSError, KeyError, ValueError, EOFError):
            pass  # unreadable or stale: rebuilt below
    path_here = resolve_data_path(data_path or config.data_path, model_dir)
    config = dataclasses.replace(config, data_path=path_here)
    try:
        interactions, split = training.load_data(config)
    except DataError as e:
        raise RecommendError(
            f"--model_dir={model_dir}: cannot rebuild the seen items from the training data ({e}); pass "
            "--data_path (data_path= in Python) where the data set is, or --include_seen"
        ) from e
    for what, saved, loaded in (("user", user_ids, interactions.user_ids), ("item", item_ids, interactions.item_ids)):
        if saved.shape != loaded.shape or not np.array_equal(saved.astype(str), loaded.astype(str)):
            raise RecommendError(
                f"--model_dir={model_dir}: the data at {path_here} no longer matches the run (its {what} ids "
                f"differ from embeddings/{what}_ids.npy); pass --data_path with the data the run was trained on"
            )
    seen = {"train": (split.train + split.valid).tocsr(), "all": interactions.matrix}
    for m in seen.values():
        m.sort_indices()
    check_split(model_dir, config, seen["train"], split.test)
    if cache:
        from cml_tf.interactions import save_npz_atomic

        arrays = {"fingerprint": np.asarray(fingerprint)}
        for w, m in seen.items():
            arrays[f"{w}_indptr"] = m.indptr.astype(np.int64)
            arrays[f"{w}_indices"] = m.indices.astype(np.int32)
        try:
            save_npz_atomic(path, **arrays)
        except OSError:
            pass
    return seen


def check_split(model_dir: str, config, seen: sp.csr_matrix, test: sp.csr_matrix, tolerance: float = 1e-4) -> None:
    """Raises RecommendError unless the rebuilt split reproduces the run's test NDCG@k (``results.json``).

    The test metrics of a finished run were computed from its best embeddings with exactly these seen items masked
    and these test items held out; a split rebuilt from other data, or by code whose split changed since training
    (a different seed, say), gives other figures. Skipped when ``results.json`` has no ``ndcg@k``.
    """
    from cml_tf.evaluation import Evaluator

    key = f"ndcg@{config.k}"
    try:
        with open(os.path.join(model_dir, "results.json"), encoding="utf-8") as f:
            expected = json.load(f).get(key)
    except (OSError, ValueError):
        expected = None
    if expected is None or test.nnz == 0:
        return
    emb = os.path.join(model_dir, "embeddings")
    users = np.load(os.path.join(emb, "user_embeddings.npy"), allow_pickle=False)
    items = np.load(os.path.join(emb, "item_embeddings.npy"), allow_pickle=False)
    got = Evaluator(seen, test, k=config.k).evaluate(users, items)[key]
    if not abs(got - expected) <= tolerance:
        raise RecommendError(
            f"--model_dir={model_dir}: the split rebuilt from config.json does not reproduce the run's test "
            f"{key.upper()} ({expected:.4f} in results.json, {got:.4f} rebuilt): the data or cml_tf's split changed "
            "since training, so its seen items are unknown; retrain the run, or pass --include_seen"
        )


# ------------------------------------------------------------------------------------------------- item names
def read_item_names(path: str) -> dict[str, str]:
    """``id<TAB>name`` lines (UTF-8) -> {id: name}; DataError naming the file and line."""
    names = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                line = line.rstrip("\r\n")
                if not line:
                    continue
                if "\t" not in line:
                    raise DataError(f"{path}: line {line_no} has no tab; expected 'item_id<TAB>name' lines")
                key, name = line.split("\t", 1)
                names[key.strip()] = name
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read item names ({e}); expected UTF-8 'item_id<TAB>name' lines") from e
    return names


def movielens_titles(ratings_path: str) -> dict[str, str] | None:
    """MovieLens titles from the file beside the ratings: u.item, movies.dat or movies.csv; None if absent."""
    directory = os.path.dirname(os.path.abspath(ratings_path))
    u_item = os.path.join(directory, "u.item")
    if os.path.isfile(u_item):  # ml-100k: id|title|date|...  (latin-1)
        with open(u_item, encoding="latin-1") as f:
            return {p[0]: p[1] for p in (line.rstrip("\r\n").split("|") for line in f) if len(p) > 1}
    movies_dat = os.path.join(directory, "movies.dat")
    if os.path.isfile(movies_dat):  # ml-1m / 10m: id::title::genres  (latin-1)
        with open(movies_dat, encoding="latin-1") as f:
            return {p[0]: p[1] for p in (line.rstrip("\r\n").split("::") for line in f) if len(p) > 1}
    movies_csv = os.path.join(directory, "movies.csv")
    if os.path.isfile(movies_csv):  # ml-20m and later: movieId,title,genres with a header, quoted
        with open(movies_csv, encoding="utf-8", newline="") as f:
            rows = csv.reader(f)
            next(rows, None)
            return {r[0]: r[1] for r in rows if len(r) > 1}
    return None


def item_names_for_run(config, model_dir: str, data_path: str | None = None) -> dict[str, str] | None:
    """The item names the run's data set has (MovieLens titles), or None."""
    from cml_tf import datasets

    try:
        dataset = datasets.canonical_name(config.dataset)
    except DataError:
        return None
    if dataset != "movielens":
        return None
    path = resolve_data_path(data_path or config.data_path, model_dir)
    try:
        ratings = datasets.movielens.resolve_path(path)
    except DataError:
        return None
    return movielens_titles(ratings)


# ------------------------------------------------------------------------------------------------- recommender
class Recommender:
    """Top-k items for users, nearest items of an item, from user and item tables in the model's geometry.

    Args:
        user_vectors: [n_users, d] float32, in the model's geometry (unit rows on the sphere, raw in the ball).
        item_vectors: [n_items, d] float32.
        user_ids: [n_users] original user ids; item_ids: [n_items] original item ids.
        seen: [n_users, n_items] scipy sparse of the items to exclude per user, or a callable returning it (called
            on first use), or None (nothing to exclude).
        item_names: {item id: name} or None.
        index: "exact", "hnsw" or "ivf", or a built `cml_tf.retrieval` index over ``item_vectors``.
        index_params: `cml_tf.retrieval.FaissIndex` parameters for "hnsw" / "ivf".
        memory_bytes: bound on the score block of the exact index and of `recommend_all`.
    """

    def __init__(
        self,
        user_vectors,
        item_vectors,
        user_ids,
        item_ids,
        *,
        seen=None,
        item_names: dict[str, str] | None = None,
        index="exact",
        index_params: dict | None = None,
        memory_bytes: int = retrieval.DEFAULT_MEMORY_BYTES,
    ):
        self.user_vectors = np.ascontiguousarray(np.asarray(user_vectors, np.float32))
        self.item_vectors = np.ascontiguousarray(np.asarray(item_vectors, np.float32))
        self.users = IdMap(user_ids, "user")
        self.items = IdMap(item_ids, "item")
        if self.user_vectors.shape[0] != len(self.users.ids) or self.item_vectors.shape[0] != len(self.items.ids):
            raise RecommendError(
                f"{self.user_vectors.shape[0]} user vectors for {len(self.users.ids)} user ids, "
                f"{self.item_vectors.shape[0]} item vectors for {len(self.items.ids)} item ids"
            )
        if self.user_vectors.shape[1] != self.item_vectors.shape[1]:
            raise RecommendError(f"users have d={self.user_vectors.shape[1]}, items d={self.item_vectors.shape[1]}")
        self._seen = seen
        self.memory_bytes = int(memory_bytes)
        if item_names is not None:
            self.names = tuple(item_names.get(s) for s in self.items.strings.tolist())
        else:
            self.names = None
        if isinstance(index, str):
            index = retrieval.make_index(self.item_vectors, index, memory_bytes=memory_bytes, **(index_params or {}))
        self.index = index

    # ---------------------------------------------------------------------------------------------- construction
    @classmethod
    def from_run(
        cls,
        model_dir: str,
        *,
        index: str = "exact",
        index_params: dict | None = None,
        seen: str = "train",
        data_path: str | None = None,
        item_names: str | None = None,
        cache: bool = True,
        memory_bytes: int = retrieval.DEFAULT_MEMORY_BYTES,
    ) -> Recommender:
        """The best model of a finished run directory (``python -m cml_tf.train``).

        Args:
            model_dir: the run directory.
            index: "exact" (batched brute force), "hnsw" or "ivf" (faiss; built once and kept in
                ``embeddings/index-*.faiss`` when ``cache``).
            index_params: `cml_tf.retrieval.FaissIndex` parameters.
            seen: "train" (training + validation interactions, the default) or "all" (every interaction).
            data_path: where the run's data set is, if not where ``config.json`` says.
            item_names: an ``id<TAB>name`` file; default the data set's own names (MovieLens titles).
            cache: keep the rebuilt seen items and faiss indexes in the run directory.
            memory_bytes: bound on score blocks.

        Raises:
            RecommendError: not a finished run, unknown ``seen`` / ``index``.
        """
        check_run(model_dir)
        if seen not in SEEN_CHOICES:
            raise RecommendError(f"--seen: unknown {seen!r}; expected one of {', '.join(SEEN_CHOICES)}")
        if index not in retrieval.INDEX_TYPES:
            raise RecommendError(f"--index: unknown {index!r}; expected one of {', '.join(retrieval.INDEX_TYPES)}")
        emb = os.path.join(model_dir, "embeddings")
        user_vectors, item_vectors, user_ids, item_ids = (
            np.load(os.path.join(emb, f), allow_pickle=False) for f in EMBEDDING_FILES
        )
        config = load_run_config(model_dir)
        names = read_item_names(item_names) if item_names else item_names_for_run(config, model_dir, data_path)

        def seen_loader():
            return load_seen(model_dir, user_ids, item_ids, data_path, cache=cache)[seen]

        built = index
        if index != "exact":
            built = _faiss_index_for_run(emb, item_vectors, index, dict(index_params or {}), cache)
        rec = cls(
            user_vectors,
            item_vectors,
            user_ids,
            item_ids,
            seen=seen_loader,
            item_names=names,
            index=built,
            memory_bytes=memory_bytes,
        )
        rec.model_dir = model_dir
        rec.config = config
        return rec

    # ---------------------------------------------------------------------------------------------- properties
    @property
    def n_users(self) -> int:
        return self.user_vectors.shape[0]

    @property
    def n_items(self) -> int:
        return self.item_vectors.shape[0]

    @property
    def seen(self) -> sp.csr_matrix | None:
        """[n_users, n_items] CSR of the items excluded per user (loaded on first use), or None."""
        if callable(self._seen):
            self._seen = self._seen()
        if self._seen is not None and not isinstance(self._seen, sp.csr_matrix):
            self._seen = sp.csr_matrix(self._seen)
        if self._seen is not None and self._seen.shape != (self.n_users, self.n_items):
            raise RecommendError(f"seen is {self._seen.shape}, expected ({self.n_users}, {self.n_items})")
        return self._seen

    def popularity(self) -> np.ndarray:
        """[n_items] int64: users who have seen each item (zeros without seen items)."""
        seen = self.seen
        if seen is None:
            return np.zeros(self.n_items, np.int64)
        return np.bincount(seen.indices, minlength=self.n_items).astype(np.int64)

    def _check_k(self, k, limit: int, what: str) -> int:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise RecommendError(f"--k must be a positive integer, got {k!r}")
        if k > limit:
            raise RecommendError(f"--k={k} exceeds the {what} ({limit:,} items)")
        return int(k)

    def _ranked(self, query: str, scores: np.ndarray, items: np.ndarray) -> Ranked:
        keep = items >= 0
        items, scores = items[keep], scores[keep]
        names = tuple(self.names[i] for i in items) if self.names is not None else None
        return Ranked(query, tuple(self.items.strings[items].tolist()), scores.astype(np.float32), names)

    # ---------------------------------------------------------------------------------------------- queries
    def recommend(self, users, k: int = 10, include_seen: bool = False) -> list[Ranked]:
        """Top-k items of each user, seen items excluded unless ``include_seen``.

        Args:
            users: a user id or a sequence of them (the data set's ids, strings or ints).
            k: 1 <= k <= number of items. A user with fewer than k unseen items gets them all.
            include_seen: keep the users' seen items.

        Returns:
            One `Ranked` per user, in the order given.

        Raises:
            RecommendError: unknown user id (named), bad k.
        """
        if isinstance(users, str | int | np.integer):
            users = [users]
        rows = self.users.rows(users)
        k = self._check_k(k, self.n_items, "catalogue")
        if rows.size == 0:
            return []
        exclude = None if include_seen or self.seen is None else self.seen[rows]
        scores, items = self.index.search(self.user_vectors[rows], k, exclude)
        return [self._ranked(self.users.strings[r], s, i) for r, s, i in zip(rows, scores, items)]

    def similar_items(self, item, k: int = 10) -> Ranked:
        """The k items nearest to ``item`` (itself excluded), by ``-||v_item - v||^2``.

        Raises:
            RecommendError: unknown item id (named), bad k (at most the catalogue minus the item).
        """
        row = int(self.items.rows([item])[0])
        k = self._check_k(k, self.n_items - 1, "catalogue less the item itself")
        exclude = sp.csr_matrix((np.ones(1, np.float32), [row], [0, 1]), shape=(1, self.n_items))
        scores, items = self.index.search(self.item_vectors[row : row + 1], k, exclude)
        return self._ranked(self.items.strings[row], scores[0], items[0])

    def recommend_all(
        self, k: int = 10, include_seen: bool = False, users_per_block: int | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Streams the top k of every user, block by block, with bounded memory.

        Yields:
            (user ids [b] str, item ids [b, k] str, scores [b, k] float32); rows with fewer than k unseen items
            end with item ``""`` and score ``-inf``.
        """
        item_strings = np.append(self.items.strings, "")
        for users, rows, scores in self.recommend_all_rows(k, include_seen, users_per_block):
            yield users, item_strings[rows], scores

    def recommend_all_rows(
        self, k: int = 10, include_seen: bool = False, users_per_block: int | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """`recommend_all` with item rows (int64 [b, k], -1 for padding) instead of item ids."""
        k = self._check_k(k, self.n_items, "catalogue")
        if users_per_block is None:
            users_per_block = self.index.batch_size() if isinstance(self.index, retrieval.ExactIndex) else 1024
        seen = None if include_seen else self.seen
        for start in range(0, self.n_users, users_per_block):
            stop = min(start + users_per_block, self.n_users)
            exclude = seen[start:stop] if seen is not None else None
            scores, rows = self.index.search(self.user_vectors[start:stop], k, exclude)
            yield self.users.strings[start:stop], rows, scores


def _faiss_index_for_run(emb_dir: str, item_vectors, kind: str, params: dict, cache: bool):
    """A faiss index over the run's items: loaded from ``emb_dir/index-<kind>-<build params>.faiss`` when built
    with the same parameters from the same item table, else built (and saved when ``cache``)."""
    n = item_vectors.shape[0]
    if kind == "hnsw":
        m = params.get("hnsw_m") or retrieval.HNSW_DEFAULTS["hnsw_m"]
        efc = params.get("ef_construction") or retrieval.HNSW_DEFAULTS["ef_construction"]
        params = {**params, "hnsw_m": m, "ef_construction": efc}
        name = f"index-hnsw-m{m}-efc{efc}.faiss"
    else:
        nlist = params.get("nlist") or retrieval.default_nlist(n)
        params = {**params, "nlist": nlist}
        name = f"index-ivf-nlist{nlist}.faiss"
    path = os.path.join(emb_dir, name)
    st = os.stat(os.path.join(emb_dir, "item_embeddings.npy"))
    source = f"{st.st_size}-{st.st_mtime_ns}"
    params = {key: value for key, value in params.items() if value is not None}
    try:
        index = retrieval.FaissIndex.load(path, item_vectors, kind, source=source, **params)
    except retrieval.RetrievalError:
        raise
    except Exception:  # an unreadable index file is rebuilt
        index = None
    if index is None:
        index = retrieval.FaissIndex(item_vectors, kind, **params)
        if cache:
            try:
                index.save(path, source=source)
            except (OSError, RuntimeError):
                pass
    return index
