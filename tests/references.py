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
