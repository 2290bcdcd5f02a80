"""Slow references written from the definitions, shared by the sampler tests: exact distributions and a chi² test."""

from __future__ import annotations

import itertools

import numpy as np
import tensorflow as tf
from scipy import stats


def tf_seed(a, b=0):
    """A [2] int64 stateless seed."""
    return tf.constant([a, b], tf.int64)


def chi2_pvalue(counts, probs):
    """p-value of observed ``counts`` against exact ``probs`` (no draw may fall where the probability is 0)."""
    counts = np.asarray(counts, np.float64)
    expected = np.asarray(probs, np.float64) * counts.sum()
    keep = expected > 0
    assert counts[~keep].sum() == 0, "draws where the exact probability is 0"
    stat = (((counts - expected) ** 2)[keep] / expected[keep]).sum()
    return stats.chi2.sf(stat, df=keep.sum() - 1)


def successive_pair_probs(w):
    """Exact P(first = i, second = j) of successive sampling ∝ w, from the definition."""
    w = np.asarray(w, np.float64)
    total = w.sum()
    probs = {}
    for i, j in itertools.permutations(range(len(w)), 2):
        probs[(i, j)] = w[i] / total * w[j] / (total - w[i])
    return probs


def stage2_sequence_probs(w, is_positive, num, replacement=False):
    """Exact P(ordered tuple) of stage 2's ``num`` draws in a row, from the definition (enumeration).

    Each draw is ∝ w over the candidates not yet drawn (all of them with ``replacement``), positives weighing 0; where
    none of those has a weight, uniform over the non-positive ones among them; where none is left either, uniform
    over all of them (then positives).

    Args:
        w: [C] non-negative weights.
        is_positive: [C] bool, the row's positives.
        num: draws per row.
        replacement: independent draws (True) or successive ones (False).

    Returns:
        {tuple of ``num`` candidate indices: probability}, the tuples of probability > 0 (they sum to 1).
    """
    w = np.where(np.asarray(is_positive, bool), 0.0, np.asarray(w, np.float64))
    positive = np.asarray(is_positive, bool)
    probs = {}

    def step(prefix, p):
        if len(prefix) == num:
            probs[tuple(prefix)] = probs.get(tuple(prefix), 0.0) + p
            return
        left = np.ones(len(w), bool)
        if not replacement:
            left[list(prefix)] = False
        for level in (w * left, (left & ~positive).astype(np.float64), left.astype(np.float64)):
            if level.sum() > 0:
                break
        for i in np.flatnonzero(level):
            step(prefix + [int(i)], p * level[i] / level.sum())

    step([], 1.0)
    return probs
