"""Full-ranking evaluation time of `cml_tf.evaluation.Evaluator` on random embeddings.

    python -m experiments.bench eval                                   # 30k users x 160k items, d=128, k=50
    python -m experiments.bench eval --users=5000 --items=20000 --batch_size=512

Times ``Evaluator.evaluate`` twice on random unit-scale embeddings (~20 train and ~5 test items per user) and
reports the second (warm) call; the first includes tracing.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp

from experiments.bench.flags import common
from experiments.bench.report import Table

COLUMNS = ["users", "items", "d", "k", "batch_size", "setup_s", "first_call_s", "seconds", "users_per_s"]


def random_split(n_users: int, n_items: int, n_train: int = 20, n_test: int = 5, seed: int = 0):
    """Random disjoint train/test CSR matrices with ``n_train`` and ``n_test`` items per user.

    Returns:
        (train [n_users, n_items] CSR, test [n_users, n_items] CSR).
    """
    rng = np.random.default_rng(seed)
    per_user = min(n_train + n_test, n_items)
    # Distinct items per user without an O(n_items) permutation per user: sample with replacement, then dedupe.
    cols = rng.integers(0, n_items, size=(n_users, per_user * 2))
    cols.sort(axis=1)
    dup = np.zeros_like(cols, dtype=bool)
    dup[:, 1:] = cols[:, 1:] == cols[:, :-1]
    cols = np.where(dup, n_items, cols)  # push duplicates to the end
    cols.sort(axis=1)
    cols = cols[:, :per_user]
    cols = rng.permuted(cols, axis=1)
    n_tr = min(n_train, per_user)

    def build(c):
        rows = np.repeat(np.arange(n_users), c.shape[1])
        flat = c.reshape(-1)
        keep = flat < n_items
        return sp.csr_matrix((np.ones(keep.sum(), np.float32), (rows[keep], flat[keep])), shape=(n_users, n_items))

    return build(cols[:, :n_tr]), build(cols[:, n_tr:])


def measure(
    n_users: int = 30000,
    n_items: int = 160000,
    d: int = 128,
    k: int = 50,
    batch_size: int | None = None,
    scoring: str = "distance",
    seed: int = 0,
) -> dict:
    """Times `Evaluator.evaluate` on random embeddings (~20 train and ~5 test items per user).

    Args:
        n_users, n_items, d, k: problem size.
        batch_size: users per step; default `cml_tf.evaluation.Evaluator`'s default.
        scoring: "distance" or "dot".
        seed: random seed.

    Returns:
        {"users", "items", "d", "k", "batch_size", "setup_s", "first_call_s" (includes tracing),
         "seconds" (a second, warm call), "users_per_s", "ndcg"}.
    """
    from cml_tf.evaluation.evaluator import Evaluator

    rng = np.random.default_rng(seed)
    train, test = random_split(n_users, n_items, seed=seed)
    user_emb = (rng.standard_normal((n_users, d)) / np.sqrt(d)).astype(np.float32)
    item_emb = (rng.standard_normal((n_items, d)) / np.sqrt(d)).astype(np.float32)

    t0 = time.perf_counter()
    kwargs = {} if batch_size is None else {"batch_size": batch_size}
    ev = Evaluator(train, test, k=k, scoring=scoring, **kwargs)
    setup = time.perf_counter() - t0

    t0 = time.perf_counter()
    ev.evaluate(user_emb, item_emb)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = ev.evaluate(user_emb, item_emb)
    seconds = time.perf_counter() - t0
    return {
        "users": res["users"],
        "items": n_items,
        "d": d,
        "k": k,
        "batch_size": ev.batch_size,
        "setup_s": setup,
        "first_call_s": first,
        "seconds": seconds,
        "users_per_s": res["users"] / seconds,
        f"ndcg@{k}": res[f"ndcg@{k}"],
    }


def add_arguments(p) -> None:
    """The evaluation benchmark's flags."""
    common(p, users=30000, items=160000, batch_size=None)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--scoring", choices=("distance", "dot"), default="distance")


def run(args) -> list[Table]:
    """One table of one row."""
    row = measure(args.users, args.items, args.dim, args.k, args.batch_size, args.scoring)
    heading = f"Evaluation: full ranking, k={args.k}, {args.users:,} users x {args.items:,} items, d={args.dim}"
    return [Table(heading, COLUMNS, [row])]
