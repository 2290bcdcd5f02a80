"""Top-k ranking metrics on hit matrices, as defined in the original CML / 2-stage-sampling code.

Every function here is pure: it takes tensors (or arrays) and returns tensors, has no state, and works both
eagerly and inside a ``tf.function`` (it is vectorised over users, no Python loop over rows).

Inputs shared by the functions:

* ``hits``: ``[n_users, width]`` bool/int/float; ``hits[u, r]`` is true when the item ranked ``r``-th (0-based)
  for user ``u`` is one of ``u``'s test items.
* ``num_relevant``: ``[n_users]`` int, the number of test items of each user, ``|T_u|``.
* ``k``: the cut-off. It defaults to ``width``; a larger ``k`` is allowed and means the ranked list was shorter
  than ``k`` (e.g. a catalogue of fewer than ``k`` items): the missing ranks count as misses.

Definitions (``r`` is the 1-based rank, ``h_r`` the hit indicator at rank ``r``):

* AP@k = sum_r h_r * P@r / min(|T_u|, k), with P@r = (hits in the first r) / r.
* NDCG@k = DCG / IDCG, DCG = sum_r h_r / log2(r + 1); IDCG is the DCG of a list with min(|T_u|, k) leading hits.
* Recall@k = (hits in the top k) / |T_u|.
* Precision@k = (hits in the top k) / k.
* MRR@k (the mean over users of ``rr``): ``rr`` = 1 / (rank of the first hit in the top k), 0 without a hit; in
  [0, 1].
* MRR_sum@k (the mean of ``rr_sum``) as the HLR reference code (deezer/recsys21-hlr) computes its "MRR":
  ``rr_sum`` = sum_r h_r / r over the top k. With one hit it equals ``rr``; with several it adds their reciprocal
  ranks (so it can exceed 1). It is what the RecSys 2021 paper's MRR@10 column reports.
* MMR (a popularity-bias measure): for each user the MEDIAN training popularity (interaction count) of the
  user's top-k items (``median_popularity``), then the mean over users.

Users with no test items get 0 for every metric from `per_user_metrics`; `cml_tf.evaluation.Evaluator` leaves them
out of the means.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

METRIC_NAMES = ("ap", "ndcg", "recall", "precision", "rr", "rr_sum")


def per_user_metrics(hits, num_relevant, k: int | None = None, dtype=tf.float32) -> dict[str, tf.Tensor]:
    """AP, NDCG, recall, precision and reciprocal ranks at k for every user.

    Args:
        hits: [n_users, width] bool/int/float; hits[u, r] = the r-th ranked item (0-based) is a test item of u.
        num_relevant: [n_users] int, number of test items of each user (|T_u|). Must be >= the hits per row.
        k: the cut-off; default ``width``. ``k > width`` means the lists are shorter than k (missing ranks are
            misses); ``k < width`` is an error (slice ``hits`` first).
        dtype: float dtype of the results (tf.float32 or tf.float64).

    Returns:
        {"ap", "ndcg", "recall", "precision", "rr", "rr_sum"} -> [n_users] ``dtype`` tensors; 0 for users with no
        test items (``rr``: the first hit's reciprocal rank; ``rr_sum``: every hit's, added).
    """
    hits = tf.convert_to_tensor(hits)
    if hits.shape.rank is not None and hits.shape.rank != 2:
        raise ValueError(f"hits must be [n_users, k], got shape {hits.shape}")
    width = hits.shape[-1]
    if k is None:
        if width is None:
            raise ValueError("k must be given when the width of hits is not static")
        k = int(width)
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if width is not None and width > k:
        raise ValueError(f"hits has {width} ranks but k = {k}: slice hits[:, :k] first")
    h = tf.cast(hits, dtype)
    n_rel = tf.cast(num_relevant, dtype)
    width_t = tf.shape(h)[1]

    ranks = tf.range(1, width_t + 1, dtype=dtype)  # [width] 1-based ranks
    cum_hits = tf.cumsum(h, axis=1)  # [n, width]
    n_hits = tf.reduce_sum(h, axis=1)  # [n]
    kf = tf.constant(k, dtype)
    ideal = tf.minimum(n_rel, kf)  # [n] min(|T_u|, k)

    ap = tf.math.divide_no_nan(tf.reduce_sum(h * cum_hits / ranks, axis=1), ideal)

    # Discounts for every rank up to k (not only up to width): the ideal list has min(|T_u|, k) hits.
    all_ranks = tf.range(1, k + 1, dtype=dtype)  # [k]
    discounts = tf.math.log(tf.constant(2.0, dtype)) / tf.math.log(all_ranks + 1.0)  # 1 / log2(r + 1)
    dcg = tf.reduce_sum(h * discounts[None, :width_t], axis=1)
    ideal_dcg_table = tf.concat([tf.zeros([1], dtype), tf.cumsum(discounts)], axis=0)  # [k + 1], [0] = 0
    idcg = tf.gather(ideal_dcg_table, tf.cast(ideal, tf.int32))
    ndcg = tf.math.divide_no_nan(dcg, idcg)

    recall = tf.math.divide_no_nan(n_hits, n_rel)
    precision = n_hits / kf
    reciprocal = h / ranks  # [n, width]: 1/r at the hits
    rr = tf.reduce_max(reciprocal, axis=1)  # the first hit's (1/r decreases with r); 0 without a hit
    rr_sum = tf.reduce_sum(reciprocal, axis=1)
    return {"ap": ap, "ndcg": ndcg, "recall": recall, "precision": precision, "rr": rr, "rr_sum": rr_sum}


def median_popularity(topk_items, item_popularity, valid=None, dtype=tf.float32) -> tf.Tensor:
    """Median training popularity of each user's top-k items (the per-user term of MMR).

    The median of an even number of values is the mean of the two middle ones (``np.median``).

    Args:
        topk_items: [n_users, k] int item ids, ranked.
        item_popularity: [n_items] training interaction counts of every item.
        valid: optional [n_users, k] bool; only entries marked True enter the median (used for ranks that fell
            on masked training items when fewer than k items were left). Rows with no valid entry give 0.
        dtype: float dtype of the result.

    Returns:
        [n_users] ``dtype`` median popularity.
    """
    pop = tf.gather(tf.cast(item_popularity, dtype), topk_items)  # [n, k]
    if valid is None:
        k = tf.shape(pop)[1]
        n_valid = tf.fill(tf.shape(pop)[:1], k)
        ordered = tf.sort(pop, axis=1)
    else:
        valid = tf.cast(valid, tf.bool)
        n_valid = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)
        big = tf.constant(np.inf, dtype)
        ordered = tf.sort(tf.where(valid, pop, big), axis=1)  # invalid entries sort last
    lo = tf.maximum((n_valid - 1) // 2, 0)
    hi = tf.maximum(n_valid // 2, 0)
    lo_v = tf.gather(ordered, lo[:, None], batch_dims=1)[:, 0]
    hi_v = tf.gather(ordered, hi[:, None], batch_dims=1)[:, 0]
    med = (lo_v + hi_v) / 2
    return tf.where(n_valid > 0, med, tf.zeros_like(med))
