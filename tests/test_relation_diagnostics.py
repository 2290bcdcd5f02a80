"""experiments/relation_diagnostics.py: normalised entropies by hand, and the diagnostics of trained runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import synthetic_config

from cml_tf import training
from experiments import relation_diagnostics as D


def test_normalised_entropy_by_hand():
    uniform = np.full((2, 4), 0.25)
    assert D.normalised_entropy(uniform) == pytest.approx(1.0)
    assert D.normalised_entropy(np.array([[1.0, 0, 0, 0]])) == pytest.approx(0.0)
    # [0.5, 0.5, 0, 0] over 2 valid entries is uniform; over 4 it is log 2 / log 4
    half = np.array([[0.5, 0.5, 0.0, 0.0]])
    assert D.normalised_entropy(half, np.array([[True, True, False, False]])) == pytest.approx(1.0)
    assert D.normalised_entropy(half) == pytest.approx(math.log(2) / math.log(4))
    # rows with fewer than 2 valid entries have no entropy to normalise: left out
    assert D.normalised_entropy(np.array([[1.0, 0.0]]), np.array([[True, False]])) != D.normalised_entropy(half)
    assert math.isnan(D.normalised_entropy(np.array([[1.0, 0.0]]), np.array([[True, False]])))


@pytest.mark.parametrize("model", ["lrml", "attcml", "hlr"])
def test_diagnose_a_trained_run(tmp_path, model):
    config = synthetic_config(
        60,
        80,
        1200,
        split="fo",
        model=model,
        embedding_dim=8,
        batch_size=64,
        max_steps=20,
        eval_every=10,
        num_memories=4,
        max_num_prefs=5,
        k=10,
    )
    training.train(config, str(tmp_path), verbose=0)
    row = D.diagnose(str(tmp_path), pairs=100, seed=0)
    assert row["model"] == model and row["norm r"] > 0 and row["dist"] > 0 and row["spread"] >= 0
    if model in ("lrml", "hlr"):
        assert 0 <= row["slot H"] <= 1 + 1e-9
    if model in ("attcml", "hlr"):
        assert 0 <= row["ref H"] <= 1 + 1e-9
    if model == "lrml":
        assert math.isnan(row["ref H"])
        # at initialisation scale (20 steps) the memory is read uniformly: the relation is one global offset
        assert row["slot H"] > 0.99 and row["spread"] < 0.1
