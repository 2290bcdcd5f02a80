"""A finished run's directory as the serving layer reads it: checks, its config, its seen items, item names.

The run directory does not store the split: `load_seen` rebuilds it from ``config.json`` (the loader and the
split are deterministic) the first time it is needed, checks it twice (the ids must equal the run's saved id
arrays, and the rebuilt split must reproduce ``results.json``'s test NDCG@k from the saved embeddings) and keeps it
in ``embeddings/seen.npz``, tagged with a fingerprint of the config and the ids. A faiss index of a run's items is
kept beside the embeddings the same way (`faiss_index_for_run`).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os

import numpy as np
import scipy.sparse as sp

from cml_tf.data.interactions import DataError, hash_ids
from cml_tf.messages import OptionError
from cml_tf.serving import retrieval

EMBEDDING_FILES = ("user_embeddings.npy", "item_embeddings.npy", "user_ids.npy", "item_ids.npy")
SEEN_CACHE = "seen.npz"
SEEN_CHOICES = ("train", "all")
SEEN_CACHE_VERSION = 1


class RecommendError(OptionError):
    """Input that cannot be served: an unknown id, an unfinished run, a bad k. The message is one line."""


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
            "alone cannot rank; only CML runs can be served (rank it with cml_tf.evaluation.scores.model_scores)"
        )


def load_run_config(model_dir: str):
    """The run's `Config`. Keys this version does not know (a run trained by another cml_tf version) are dropped:
    only the data and split keys matter here, and the rebuilt split is checked against the run's own test metrics
    (see `load_seen`)."""
    import json as _json

    from cml_tf.training.config import Config

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
    hash_ids(h, user_ids, item_ids)
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
    from cml_tf.training.data import load_data

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
        interactions, split = load_data(config, announce=False)  # the run's own line, not the server's
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
    # what the run's test ranking masked: train + valid, or the training file's items (a given split)
    seen = {"train": split.excluded_at_test(config.resolved().protocol).copy(), "all": interactions.matrix}
    for m in seen.values():
        m.sort_indices()
    check_split(model_dir, config, seen["train"], split.test)
    if cache:
        from cml_tf.data.interactions import save_npz_atomic

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
    from cml_tf.evaluation.evaluator import Evaluator

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
    from cml_tf.data import loaders

    try:
        dataset = loaders.canonical_name(config.dataset)
    except DataError:
        return None
    if dataset != "movielens":
        return None
    path = resolve_data_path(data_path or config.data_path, model_dir)
    try:
        ratings = loaders.movielens.resolve_path(path)
    except DataError:
        return None
    return movielens_titles(ratings)


# ------------------------------------------------------------------------------------------------- recommender


def faiss_index_for_run(emb_dir: str, item_vectors, kind: str, params: dict, cache: bool):
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
