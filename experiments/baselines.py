"""Non-metric baselines for Table 2: item popularity, implicit's ALS and BPR, and EASE^R, tuned on the validation split.

Protocol (the same folds and metrics as the CML runs, see `cml_tf.training.outputs.finish`):

* every model is fitted on ``split.train`` only;
* hyper-parameters are chosen by a seeded random search of ``trials`` configurations (trial 0 is implicit's
  default setting, the rest are drawn from `SEARCH_SPACES`), each scored by validation NDCG@k on
  ``split.valid`` with the training items masked (on a seeded sample of ``eval_users`` validation users, as CML's
  validation); the factors (``factors``, 128 by default as CML's d) are not searched;
* the chosen model is scored on ``split.test`` with the items of ``protocol`` masked and MMR computed from the training
  popularity (``Evaluator.for_split(split, "test", protocol, scoring="dot")``): train + valid under cml_tf's own
  protocol ("cml", the default), the training file's items only under "reference" (a given split,
  docs/given_splits.md), as CML's runs test.

The popularity baseline scores every item by its training count (no hyper-parameters). ALS / BPR are implicit's
CPU models (``implicit.cpu.als`` / ``implicit.cpu.bpr``) fitted on the binary ``users x items`` CSR, ranked by the
dot product of ``user_factors`` and ``item_factors`` (BPR's item bias is the last factor column). EASE^R (Steck,
WWW 2019) is the closed form B = I − P·diag(1/diag(P)), P = (XᵀX + λI)⁻¹, scores X_u·B, with λ (``l2``) searched
on validation. With fewer users than items it is computed exactly in the users × users dual (`fit_ease_scores`:
Woodbury), which makes it cheap on citeulike-t (7,947 users, 25,975 items). Its dense matrices are refused, naming
the memory they would need, when they do not fit in the available memory (`ease_memory_bytes`).

A baseline run directory holds ``config.json`` (everything that determines the result), ``results.json`` (test
metrics, the chosen ``params``, every trial's parameters and validation metrics, the budget) and
``recommendations.npz`` (see `cml_tf.evaluation.toplists.write_recommendations`). A finished directory
(results.json with the same config) is not recomputed.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from cml_tf.evaluation.evaluator import Evaluator
from cml_tf.evaluation.toplists import sample_users
from cml_tf.io import write_json_atomic
from cml_tf.training.config import PROTOCOLS

BASELINES = ("popularity", "als", "bpr", "ease")

# Defaults of implicit 0.7 (trial 0) and the random-search spaces: ("log", lo, hi) log-uniform, ("choice", [...]).
DEFAULT_PARAMS = {
    "als": {"regularization": 0.01, "alpha": 1.0, "iterations": 15},
    "bpr": {"learning_rate": 0.01, "regularization": 0.01, "iterations": 100},
    "ease": {"l2": 500.0},  # Steck (2019): λ = 500 on ML-20M, the range 10..10^4 searched below
}
SEARCH_SPACES = {
    "als": {
        "regularization": ("log", 1e-3, 10.0),
        "alpha": ("log", 0.5, 50.0),
        "iterations": ("choice", [10, 15, 20, 30]),
    },
    "bpr": {
        "learning_rate": ("log", 1e-3, 0.1),
        "regularization": ("log", 1e-4, 0.1),
        "iterations": ("choice", [25, 50, 100, 200]),
    },
    "ease": {"l2": ("log", 10.0, 1e4)},
}
DEFAULT_FACTORS = 128
DEFAULT_TRIALS = 8
# EASE^R has a single hyper-parameter: a few log-uniform draws of λ cover its range (each costs one factorisation).
MAX_TRIALS = {"ease": 4}


class BaselineError(RuntimeError):
    """A baseline that cannot run as asked: a run directory holding a different config, or EASE^R's matrices
    larger than the memory."""


class EaseMemoryError(BaselineError):
    """EASE^R's dense matrices need more than the available memory (a runner may skip EASE^R and go on)."""


def ease_memory_bytes(n_items: int, n_users: int | None = None) -> int:
    """Peak bytes of EASE^R's dense matrices.

    The primal form (`fit_ease`) holds the float32 Gram matrix, its Cholesky inverse and B (three n_items²
    matrices); with ``n_users`` given, the cheaper of that and the dual form (`fit_ease_scores`: the float32
    users × users Gram matrix and its inverse, and three float32 [n_users, n_items] matrices).
    """
    primal = 3 * 4 * int(n_items) ** 2
    if n_users is None:
        return primal
    return min(primal, _ease_dual_bytes(n_users, n_items))


def _ease_dual_bytes(n_users: int, n_items: int) -> int:
    return 2 * 4 * int(n_users) ** 2 + 3 * 4 * int(n_users) * int(n_items)


def _check_ease_memory(n_users: int, n_items: int, max_bytes: int | None, dual: bool) -> None:
    need = _ease_dual_bytes(n_users, n_items) if dual else ease_memory_bytes(n_items)
    limit = available_memory_bytes() if max_bytes is None else max_bytes
    if need > limit:
        what = f"{n_users:,} x {n_users:,} user" if dual else f"{n_items:,} x {n_items:,} item"
        raise EaseMemoryError(
            f"EASE^R: the {what} matrices need {need / 2**30:.1f} GiB, more than the "
            f"{limit / 2**30:.1f} GiB available; leave ease out of --baselines for this data set"
        )


def _cholesky_inverse(a: np.ndarray, l2: float) -> np.ndarray:
    """(A + λI)⁻¹ of a symmetric positive semi-definite A (overwritten), by LAPACK potrf + potri, symmetrised."""
    from scipy.linalg import lapack

    potrf, potri = (lapack.spotrf, lapack.spotri) if a.dtype == np.float32 else (lapack.dpotrf, lapack.dpotri)
    n = a.shape[0]
    a[np.diag_indices(n)] += a.dtype.type(l2)
    chol, info = potrf(a, lower=1, overwrite_a=1)
    if info != 0:
        raise BaselineError(f"EASE^R: the Gram matrix + {l2}·I is not positive definite (LAPACK potrf info {info})")
    inv, info = potri(chol, lower=1, overwrite_c=1)
    if info != 0:
        raise BaselineError(f"EASE^R: inverting the Gram matrix + {l2}·I failed (LAPACK potri info {info})")
    symmetrise_lower(inv)  # potri fills the lower triangle only
    return inv


def symmetrise_lower(a: np.ndarray, block: int = 2048) -> np.ndarray:
    """Copies the lower triangle of the square ``a`` onto its upper one, in place, a block of rows at a time: the
    temporaries are [block, n], where index arrays of the whole upper triangle would take 8·n² bytes (13 GB for
    Gowalla's 40,981 items, beyond `ease_memory_bytes`).

    Returns:
        ``a``.
    """
    n = a.shape[0]
    for start in range(0, n, block):
        end = min(start + block, n)
        diagonal = a[start:end, start:end]
        diagonal[...] = np.tril(diagonal) + np.tril(diagonal, -1).T
        a[start:end, end:] = a[end:, start:end].T
    return a


def available_memory_bytes() -> int:
    """MemAvailable of /proc/meminfo (elsewhere: physical pages free), in bytes."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def fit_ease(train: sp.csr_matrix, l2: float, max_bytes: int | None = None) -> np.ndarray:
    """EASE^R's item-item weights B = I − P·diag(1/diag(P)) for P = (XᵀX + λI)⁻¹ (so diag(B) = 0).

    Args:
        train: [n_users, n_items] binary CSR X.
        l2: λ > 0.
        max_bytes: refuse above this many bytes of matrices (default: the available memory).

    Returns:
        [n_items, n_items] float32 B; a user's scores are X_u·B.

    Raises:
        BaselineError: naming the memory the matrices need, when it exceeds ``max_bytes``.
    """
    n = train.shape[1]
    _check_ease_memory(train.shape[0], n, max_bytes, dual=False)
    x = sp.csr_matrix(train, dtype=np.float32)
    p = _cholesky_inverse((x.T @ x).toarray(), l2)
    b = p / -np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


def fit_ease_scores(train: sp.csr_matrix, l2: float, max_bytes: int | None = None) -> np.ndarray:
    """Every training user's EASE^R scores X·B, computed in the users × users dual: exact, and cheap when there are
    fewer users than items.

    With M = (XXᵀ + λI)⁻¹ (Woodbury): X·P = X(XᵀX + λI)⁻¹ = M·X, and diag(P)_j = (1 − x_jᵀ M x_j) / λ for the
    item column x_j, so X·B = X − (M·X)·diag(1/diag(P)) without any items × items matrix.

    Args:
        train: [n_users, n_items] binary CSR X.
        l2: λ > 0.
        max_bytes: refuse above this many bytes of matrices (default: the available memory).

    Returns:
        [n_users, n_items] float32 scores X·B of the rows of ``train`` (higher is better).

    Raises:
        BaselineError: naming the memory the matrices need, when it exceeds ``max_bytes``.
    """
    n_users, n_items = train.shape
    _check_ease_memory(n_users, n_items, max_bytes, dual=True)
    x = sp.csr_matrix(train, dtype=np.float32)
    m = _cholesky_inverse((x @ x.T).toarray(), l2)  # [n_users, n_users], float32 (twice as fast as float64)
    xt = x.T.tocsr()
    mx_t = np.asarray(xt @ m)  # [n_items, n_users] = (M·X)ᵀ, M symmetric
    diag_p = (1.0 - np.asarray(xt.multiply(mx_t).sum(axis=1)).ravel()) / l2  # [n_items]
    mx_t /= diag_p[:, None]
    scores = x.toarray()
    scores -= mx_t.T
    return scores


def sample_params(name: str, trial: int, rng: np.random.Generator) -> dict:
    """Trial 0: implicit's defaults; later trials: one draw from the search space."""
    if name not in SEARCH_SPACES:
        return {}
    if trial == 0:
        return dict(DEFAULT_PARAMS[name])
    params = {}
    for key, spec in SEARCH_SPACES[name].items():
        if spec[0] == "log":
            params[key] = float(math.exp(rng.uniform(math.log(spec[1]), math.log(spec[2]))))
        else:
            params[key] = spec[1][int(rng.integers(len(spec[1])))]
    return params


def fit(name: str, train: sp.csr_matrix, params: dict, *, factors: int, seed: int, num_threads: int = 2):
    """Fits one baseline on the training matrix.

    Returns:
        ("scores", [n_items] popularity) for popularity; for EASE^R ("user_scores", [n_users, n_items]) when there
        are fewer users than items, else ("item_item", (X, B [n_items, n_items])); ("factors", (U [n_users, f],
        V [n_items, f])) otherwise.
    """
    if name == "popularity":
        return "scores", np.asarray(train.sum(0)).ravel().astype(np.float32)
    if name == "ease":
        x = sp.csr_matrix(train, dtype=np.float32)
        if _ease_dual_bytes(*x.shape) < ease_memory_bytes(x.shape[1]):  # the dual is smaller
            return "user_scores", fit_ease_scores(x, params["l2"])
        return "item_item", (x, fit_ease(x, params["l2"]))
    model = fit_model(name, train, params, factors=factors, seed=seed, num_threads=num_threads)
    return "factors", (np.asarray(model.user_factors, np.float32), np.asarray(model.item_factors, np.float32))


def fit_model(name: str, train: sp.csr_matrix, params: dict, *, factors: int, seed: int, num_threads: int = 2):
    """The fitted implicit model ("als" or "bpr") itself, e.g. for ALS's ``recalculate_user`` fold-in."""
    from threadpoolctl import threadpool_limits  # implicit wants single-threaded BLAS

    with threadpool_limits(1, "blas"):
        model = _make_model(name, params, factors=factors, seed=seed, num_threads=num_threads)
        model.fit(sp.csr_matrix(train, dtype=np.float32), show_progress=False)
    return model


def _make_model(name: str, params: dict, *, factors: int, seed: int, num_threads: int):
    if name == "als":
        from implicit.cpu.als import AlternatingLeastSquares

        model = AlternatingLeastSquares(
            factors=factors,
            regularization=params["regularization"],
            alpha=params["alpha"],
            iterations=int(params["iterations"]),
            num_threads=num_threads,
            random_state=seed,
        )
    elif name == "bpr":
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        model = BayesianPersonalizedRanking(
            factors=factors,
            learning_rate=params["learning_rate"],
            regularization=params["regularization"],
            iterations=int(params["iterations"]),
            num_threads=num_threads,
            random_state=seed,
        )
    else:
        raise ValueError(f"--baselines: unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")
    return model


def evaluate(evaluator: Evaluator, fitted) -> dict:
    kind, value = fitted
    if kind in ("scores", "item_item", "user_scores"):
        return evaluator.evaluate_scores(score_function(fitted))
    return evaluator.evaluate(*value)


def score_function(fitted) -> Callable[[np.ndarray], np.ndarray]:
    """users [b] -> scores [b, n_items] (higher is better) of a fitted baseline."""
    kind, value = fitted
    if kind == "scores":
        return lambda users: np.broadcast_to(value, (len(users), value.size))
    if kind == "user_scores":
        return lambda users: value[users]
    if kind == "item_item":
        x, b = value
        return lambda users: np.asarray(x[users] @ b)
    u, v = value
    return lambda users: u[users] @ v.T


def validation_users(valid: sp.csr_matrix, eval_users: int | None, seed: int) -> np.ndarray:
    """The validation users CML's training evaluates (same seeded sample as `cml_tf.training.train`)."""
    return sample_users(valid, eval_users, seed)


def run_baseline(
    name: str,
    split,
    run_dir: str,
    *,
    config: dict,
    k: int = 50,
    trials: int = DEFAULT_TRIALS,
    factors: int = DEFAULT_FACTORS,
    eval_users: int | None = None,
    test_users: int | None = None,
    test_seed: int = 0,
    seed: int = 0,
    num_threads: int = 2,
    on_fitted: Callable | None = None,
    cap_trials: bool = True,
    protocol: str = "cml",
) -> dict:
    """Tunes one baseline on the validation split, scores the chosen model on the test split, writes run_dir.

    Args:
        name: "popularity", "als", "bpr" or "ease".
        split: a `cml_tf.data.splits.Split`.
        run_dir: the baseline's run directory for this fold.
        config: what identifies the data (dataset, options, fold...); saved with the search settings in config.json.
        k: metric cut-off.
        trials: search budget (number of configurations tried; popularity has none; at most `MAX_TRIALS`).
        factors: latent factors of ALS / BPR.
        eval_users: validation users sampled for tuning (None = all).
        test_users: test users sampled for the test (None = all), seeded by ``test_seed`` (the split's seed, as
            `cml_tf.training.train` samples them: the same users as the models' runs on that split).
        test_seed: see ``test_users``.
        seed: seed of the search and of the models.
        num_threads: implicit's threads.
        on_fitted: called as ``on_fitted(fitted)`` with the final model (e.g. to save recommendations).
        cap_trials: hold ``trials`` to `MAX_TRIALS` (EASE^R's 4 draws of λ); False searches ``trials`` of them.
        protocol: what the test ranking masks (`cml_tf.data.splits.Split.excluded_at_test`): "cml" (train + valid)
            or "reference" (the training file's items, for a given split); validation always masks train only.

    Returns:
        The results dict (also in run_dir/results.json): test metrics, ``params``, ``trials``, ``budget``,
        ``train_seconds`` (fitting the chosen model), ``steps`` (its iterations), ``valid``.
    """
    if name not in BASELINES:
        raise ValueError(f"--baselines: unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"--protocol: unknown {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    trials = min(trials, MAX_TRIALS.get(name, trials)) if cap_trials else trials
    full_config = {
        **config,
        "baseline": name,
        "k": k,
        "trials": trials if name in SEARCH_SPACES else 0,
        "factors": factors if name in ("als", "bpr") else None,
        "eval_users": eval_users,
        **({"test_users": test_users, "test_seed": test_seed} if test_users is not None else {}),
        **({"protocol": protocol} if protocol != "cml" else {}),  # configs of own-split runs stay as they were
        "seed": seed,
        "search_space": SEARCH_SPACES.get(name),
    }
    full_config = json.loads(json.dumps(full_config))
    os.makedirs(run_dir, exist_ok=True)
    config_path = os.path.join(run_dir, "config.json")
    results_path = os.path.join(run_dir, "results.json")
    if os.path.exists(config_path):
        with open(config_path, encoding="utf-8") as f:
            saved = json.load(f)
        if saved != full_config:
            diff = sorted(x for x in set(saved) | set(full_config) if saved.get(x) != full_config.get(x))
            raise BaselineError(
                f"{run_dir} holds a baseline run with a different config (differs in: {', '.join(diff)}); "
                "use another --out_dir or delete it"
            )
        if os.path.exists(results_path):
            with open(results_path, encoding="utf-8") as f:
                return json.load(f)
    write_json_atomic(config_path, full_config)

    train = split.train
    item_popularity = np.asarray(train.sum(0)).ravel()
    history = []
    best_params: dict = {}
    best_valid: dict = {}
    best_fitted, best_seconds = None, float("nan")  # EASE^R is a closed form: the chosen trial is the final model
    if name in SEARCH_SPACES and trials > 0:
        valid_eval = Evaluator(
            train, split.valid, k=k, users=validation_users(split.valid, eval_users, seed), scoring="dot"
        )
        rng = np.random.default_rng([seed, BASELINES.index(name)])
        best = -np.inf
        for trial in range(trials):
            params = sample_params(name, trial, rng)
            t0 = time.perf_counter()
            fitted = fit(name, train, params, factors=factors, seed=seed, num_threads=num_threads)
            seconds = time.perf_counter() - t0
            metrics = {m: float(v) for m, v in evaluate(valid_eval, fitted).items() if m != "users"}
            history.append({"trial": trial, "params": params, "valid": metrics, "fit_seconds": seconds})
            score = metrics[f"ndcg@{k}"]
            if score > best:
                best, best_params, best_valid = score, params, metrics
                if name == "ease":
                    best_fitted, best_seconds = fitted, seconds
            del fitted
    elif name in SEARCH_SPACES:
        best_params = sample_params(name, 0, np.random.default_rng(seed))

    if best_fitted is not None:
        fitted, fit_seconds = best_fitted, best_seconds
    else:
        t0 = time.perf_counter()
        fitted = fit(name, train, best_params, factors=factors, seed=seed, num_threads=num_threads)
        fit_seconds = time.perf_counter() - t0
    test_eval = Evaluator.for_split(
        split,
        "test",
        protocol,
        k=k,
        users=sample_users(split.test, test_users, test_seed),
        item_popularity=item_popularity,
        scoring="dot",
    )
    test = evaluate(test_eval, fitted)
    if on_fitted is not None:
        on_fitted(fitted)
    results = {m: float(v) for m, v in test.items() if m != "users"}
    results.update(
        {
            "test_users": int(test["users"]),
            "params": best_params,
            "factors": factors if name in ("als", "bpr") else None,
            "budget": trials if name in SEARCH_SPACES else 0,
            "trials": history,
            "valid": best_valid,
            "train_seconds": fit_seconds,
            "pairs_per_sec": float("nan"),
            "steps": int(best_params.get("iterations", 0)),
        }
    )
    write_json_atomic(results_path, results)
    return results
