"""Seeded synthetic implicit feedback with popularity bias and latent cluster structure (no file).

Generative story (all vectorised, ``numpy.random.default_rng(seed)``):

* items get Zipf-like popularity ``w_i = 1 / rank_i ** zipf_exponent`` (random ranks) and one of ``num_clusters``
  clusters; users get a primary cluster and, with probability 0.3, a secondary one;
* user activity is log-normal (heavy-tailed, at least 5 draws per user);
* each draw is, with probability ``in_cluster`` (0.8), an item of one of the user's clusters (primary 70%)
  picked proportionally to popularity, otherwise any item picked proportionally to popularity;
* duplicate (user, item) draws count once; draws continue until exactly ``num_interactions`` distinct pairs.

So popularity alone beats random, and a model that learns the clusters beats popularity. The matrix is always
``num_users x num_items`` (users / items without interactions keep their row / column). Defaults: 2,000 users,
4,000 items, 80,000 interactions, seed 0.
"""

from __future__ import annotations

import numpy as np

from cml_tf.data.interactions import DataError, Interactions

OPTIONS = {"num_users": 2000, "num_items": 4000, "num_interactions": 80000, "seed": 0}
NUM_CLUSTERS = 20
ZIPF_EXPONENT = 0.9
IN_CLUSTER = 0.8
SECONDARY = 0.3


def resolve_path(data_path: str | None) -> None:
    if data_path is not None:
        raise DataError("--data_path does not apply to --dataset=synthetic (it is generated, not read)")
    return None


def generate(num_users: int = 2000, num_items: int = 4000, num_interactions: int = 80000, seed: int = 0):
    """Synthetic interactions; see the module docstring.

    Returns:
        `Interactions` of shape [num_users, num_items] with exactly ``num_interactions`` pairs.
    """
    if num_users < 1 or num_items < 1 or num_interactions < 1:
        raise DataError(
            f"synthetic: num_users, num_items, num_interactions must be >= 1, got "
            f"{num_users}, {num_items}, {num_interactions}"
        )
    if num_interactions > 0.5 * num_users * num_items:
        raise DataError(
            f"synthetic: num_interactions={num_interactions:,} exceeds half of num_users * num_items = "
            f"{num_users * num_items:,}; expected a sparse matrix"
        )
    rng = np.random.default_rng(seed)
    k = min(NUM_CLUSTERS, num_items)
    popularity = 1.0 / rng.permutation(np.arange(1, num_items + 1)) ** ZIPF_EXPONENT
    item_cluster = rng.integers(0, k, num_items)
    item_cluster[:k] = np.arange(k)  # every cluster is non-empty
    by_cluster = np.argsort(item_cluster, kind="stable")  # items grouped by cluster
    cum = np.cumsum(popularity[by_cluster])
    bounds = np.concatenate(([0.0], cum[np.cumsum(np.bincount(item_cluster, minlength=k)) - 1]))
    global_cum = np.cumsum(popularity)
    primary = rng.integers(0, k, num_users)
    secondary = np.where(rng.random(num_users) < SECONDARY, rng.integers(0, k, num_users), primary)
    activity = rng.lognormal(0.0, 1.0, num_users)
    activity /= activity.sum()

    users_all, items_all, have = [], [], 0
    for _ in range(50):  # rounds of oversampled draws; distinct pairs grow each round
        n = max(1000, int(1.3 * (num_interactions - have)) + 1)
        u = rng.choice(num_users, size=n, p=activity)
        if not users_all:  # at least 5 draws per user
            u = np.concatenate((np.repeat(np.arange(num_users), min(5, num_items)), u))
            n = u.size
        cluster = np.where(rng.random(n) < 0.7, primary[u], secondary[u])
        r = rng.random(n)
        lo, hi = bounds[cluster], bounds[cluster + 1]
        in_pick = by_cluster[np.minimum(np.searchsorted(cum, lo + r * (hi - lo), side="right"), num_items - 1)]
        any_pick = np.minimum(np.searchsorted(global_cum, r * global_cum[-1], side="right"), num_items - 1)
        i = np.where(rng.random(n) < IN_CLUSTER, in_pick, any_pick)
        users_all.append(u)
        items_all.append(i)
        key = np.concatenate(users_all).astype(np.int64) * num_items + np.concatenate(items_all)
        _, first = np.unique(key, return_index=True)
        have = first.size
        if have >= num_interactions:
            break
    else:
        raise DataError(f"synthetic: could not draw {num_interactions:,} distinct pairs (got {have:,})")
    first.sort()  # first occurrences in draw order; the first num_interactions of them
    first = first[:num_interactions]
    return Interactions.from_pairs(key[first] // num_items, key[first] % num_items, num_users, num_items)


def read(path: None, **options) -> Interactions:
    o = {**OPTIONS, **options}
    return generate(int(o["num_users"]), int(o["num_items"]), int(o["num_interactions"]), int(o["seed"]))
