"""Clustering metrics: ARI / AMI against scikit-learn, by hand, and k-means on a planted case; kNN accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from cml_tf.evaluation import clustering as C

metrics = pytest.importorskip("sklearn.metrics")


def test_contingency_by_hand():
    np.testing.assert_array_equal(C.contingency([0, 0, 1, 1, 5], [7, 8, 8, 8, 7]), [[1, 1], [0, 2], [1, 0]])


def test_ari_by_hand():
    # true {0,1,2},{3,4,5}; pred {0,1},{2,3},{4,5}: Σ C(n_rc,2) = 2, a = 6, b = 3, E = 6·3/15 = 1.2
    ari = C.adjusted_rand_index([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2])
    assert ari == pytest.approx((2 - 1.2) / (4.5 - 1.2))
    assert C.adjusted_rand_index([0, 0, 1, 1], [5, 5, 3, 3]) == 1.0  # renaming does not matter


@pytest.mark.parametrize("seed", range(6))
def test_ari_and_ami_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    a = rng.integers(0, int(rng.integers(1, 12)), n)
    b = np.where(rng.random(n) < 0.6, a, rng.integers(0, int(rng.integers(1, 9)), n))  # correlated
    assert C.adjusted_rand_index(a, b) == pytest.approx(metrics.adjusted_rand_score(a, b), abs=1e-10)
    assert C.adjusted_mutual_info(a, b) == pytest.approx(metrics.adjusted_mutual_info_score(a, b), abs=1e-8)
    assert C.mutual_info(C.contingency(a, b)) == pytest.approx(metrics.mutual_info_score(a, b), abs=1e-10)


def test_edge_cases_match_scikit_learn():
    for a, b in [([0, 0, 0], [1, 1, 1]), ([0, 1, 2], [0, 1, 2]), ([0, 1, 2], [0, 0, 0]), ([0, 0, 1, 1], [0, 1, 0, 1])]:
        assert C.adjusted_rand_index(a, b) == pytest.approx(metrics.adjusted_rand_score(a, b))
        assert C.adjusted_mutual_info(a, b) == pytest.approx(metrics.adjusted_mutual_info_score(a, b), abs=1e-12)


def test_knn_accuracy_by_hand():
    # two tight pairs on a line, and an item of label 1 next to the label-0 pair
    x = np.array([[0.0], [0.1], [0.2], [10.0], [10.1]])
    y = np.array([0, 0, 1, 1, 1])
    # k = 1: 0 -> 1 (label 0) ok; 1 -> 0 or 2 (0.1 both; argpartition picks one) -- use k = 2 to avoid the tie
    # k = 2: 0 -> {1, 2}: labels {0, 1} tie -> 0 ok; 1 -> {0, 2}: tie -> 0 ok; 2 -> {1, 0}: 0, wrong;
    #        3 -> {4, 2}: 1 ok; 4 -> {3, 2}: 1 ok
    assert C.knn_label_accuracy(x, y, k=2) == pytest.approx(4 / 5)
    assert C.knn_label_accuracy(x, y, k=2, batch=2) == pytest.approx(4 / 5)  # batching does not matter


def test_genre_clustering_recovers_planted_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 8)) * 5
    labels = np.repeat(np.arange(4), 30)
    x = centres[labels] + rng.normal(size=(120, 8)) * 0.3
    out = C.genre_clustering(x, labels, seed=0)
    assert out["ari"] == pytest.approx(1.0) and out["ami"] == pytest.approx(1.0)
    assert out["knn_accuracy"] == 1.0 and out["clusters"] == 4 and out["items"] == 120
    assert out["majority_rate"] == pytest.approx(0.25)
    # unlabelled items (-1) and items outside `items` are left out; shuffled labels score about 0
    noisy = labels.copy()
    noisy[:10] = -1
    assert C.genre_clustering(x, noisy, items=np.arange(60))["items"] == 50
    shuffled = C.genre_clustering(x, rng.permutation(labels), seed=0)
    assert abs(shuffled["ari"]) < 0.05 and abs(shuffled["ami"]) < 0.05
