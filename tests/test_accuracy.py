"""Slow end-to-end accuracy checks (``pytest -m slow``): real training must reach known quality levels.

Thresholds come from runs on this 2-core machine (README / closing notes), with margin: CML on citeulike-t must
beat item popularity by far and the original deezer code's figures (validation NDCG@50 .0515 for 2-stage@256,
.0380 for uniform@4096); on the synthetic set uniform CML must beat popularity and 2-stage must beat random.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from cml_tf import training
from cml_tf.evaluation.evaluator import Evaluator
from cml_tf.training.config import Config
from cml_tf.training.data import load_data

pytestmark = pytest.mark.slow


def popularity_ndcg(split) -> float:
    counts = np.asarray(split.train.sum(axis=0)).ravel().astype(np.float32)
    seen = (split.train + split.valid).tocsr()
    return Evaluator(seen, split.test, k=50).evaluate_scores(lambda users: counts[None, :])["ndcg@50"]


def test_uniform_cml_on_citeulike_beats_popularity_and_the_original_code(shared_data, tmp_path):
    config = Config(
        dataset="citeulike",
        data_path=os.path.join(shared_data, "citeulike-t"),
        split="original",
        seed=1,
        sampler="uniform",
        num_negatives=5,
        max_steps=5000,  # 1.28M pairs
        eval_every=1000,
    )
    interactions, split = load_data(config)
    results = training.train(config, str(tmp_path), data=(interactions, split), verbose=0)
    assert results["valid"]["ndcg@50"] > 0.08  # measured 0.096; deezer 2-stage .0515, uniform@4096 .0380
    assert results["ndcg@50"] > 3 * popularity_ndcg(split)
    assert results["mmr"] < 30  # far less popularity-biased than the popularity ranking (MMR ~ 70)


def test_synthetic_data_uniform_beats_popularity_and_2stage_beats_random(tmp_path):
    # The synthetic set is built so that popularity is a strong baseline and the clusters beat it. Measured (3000
    # steps, B=256): uniform test NDCG@50 0.317, popularity 0.151, the default 2stage 0.083 (its hard negatives
    # push popular items away: the same pattern as on citeulike-t, see README), random about 0.01.
    config = Config(sampler="uniform", max_steps=3000, eval_every=1000)
    interactions, split = load_data(config)
    uniform = training.train(config, str(tmp_path / "uniform"), data=(interactions, split), verbose=0)
    assert uniform["ndcg@50"] > 1.5 * popularity_ndcg(split)
    two_stage = training.train(
        Config(max_steps=1000, eval_every=500), str(tmp_path / "2stage"), data=(interactions, split), verbose=0
    )
    random_recall = 50 / interactions.n_items
    assert two_stage["recall@50"] > 3 * random_recall
