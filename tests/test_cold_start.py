"""Cold start: the user split and time order by hand, fold-in against a frozen table, the segment and regression
models on planted cases, ALS fold-in, and the experiment end to end on a tiny MovieLens directory."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.sparse as sp

from cml_tf.models import cold_start as CS


def _matrix():
    # 6 users x 8 items; user u holds items u .. u + 2 + (u % 3) (3 to 5 items), timestamps decreasing by item
    rows, cols = [], []
    for u in range(6):
        for i in range(u, min(8, u + 3 + u % 3)):
            rows.append(u)
            cols.append(i)
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(6, 8))
    times = 100 - m.indices  # later items were rated first
    return m, times


def test_time_order_by_hand():
    m = sp.csr_matrix(np.array([[1, 1, 1, 0], [0, 1, 0, 1]], np.float32))
    # row 0: items 0, 1, 2 at times 30, 10, 20 -> positions 2, 0, 1; row 1: items 1, 3 at the same time -> by item
    np.testing.assert_array_equal(CS.time_order(m, np.array([30, 10, 20, 5, 5])), [2, 0, 1, 0, 1])


def test_split_users_partitions_and_is_seeded():
    m, times = _matrix()
    split = CS.split_users(m, times, cold_fraction=0.34, ns=(0, 1, 2), seed=3)
    assert split.cold.size == 2 and np.intersect1d(split.cold, split.warm).size == 0
    assert np.union1d(split.cold, split.warm).tolist() == list(range(6))
    assert (np.diff(m.indptr)[split.cold] > 2).all()  # every cold user has a target at n = max(ns)
    np.testing.assert_array_equal(CS.split_users(m, times, 0.34, (0, 1, 2), seed=3).cold, split.cold)
    warm = split.warm_matrix()
    assert warm[split.cold].nnz == 0 and (warm[split.warm] != m[split.warm]).nnz == 0
    for n in (0, 1, 2):
        first, target = split.first(n), split.target(n)
        assert (first + target != m.multiply(np.isin(np.arange(6), split.cold)[:, None])).nnz == 0
        assert first.multiply(target).nnz == 0 and first[split.warm].nnz == 0
        assert (np.diff(first.indptr)[split.cold] == n).all()
        for u in split.cold:  # the first n by time are the LAST n item ids (timestamps decrease with the item)
            items = m[u].indices
            np.testing.assert_array_equal(first[u].indices, np.sort(items[::-1][:n]))
    with pytest.raises(ValueError, match="users have more than 4 interactions"):
        CS.split_users(m, times, 0.5, ns=(0, 4))
    with pytest.raises(ValueError, match="cold_fraction"):
        CS.split_users(m, times, 1.0)


def test_mean_item_vectors_by_hand():
    known = sp.csr_matrix(np.array([[1, 1, 0], [0, 0, 0], [0, 0, 1]], np.float32))
    v = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 3.0]])
    np.testing.assert_allclose(CS.mean_item_vectors(known, np.array([0, 1, 2]), v), [[0.5, 0.5], [0, 0], [3, 3]])


def test_fold_in_moves_users_to_their_items_and_keeps_the_rest():
    items = np.eye(4, dtype=np.float32)  # four orthogonal unit items
    known = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]], np.float32))
    init = np.array([1.0, 1.0, 1.0, 1.0]) / 2
    u = CS.fold_in(items, known, init, steps=150, num_negatives=2, learning_rate=0.05, seed=0)
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0, atol=1e-5)
    assert np.argmax(u[0] @ items.T) == 0 and u[0, 0] > 0.9
    assert u[1, 2] > 0.5 and u[1, 3] > 0.5 and u[1, 0] < 0.3  # between its two items
    np.testing.assert_allclose(u[2], init, atol=1e-6)  # nothing known: the starting vector
    np.testing.assert_allclose(CS.fold_in(items, sp.csr_matrix((2, 4)), init), [init, init])


def test_semi_personalised_recommends_the_assigned_segment_s_items():
    rng = np.random.default_rng(0)
    group = np.repeat([0, 1], 20)
    vectors = np.where(group[:, None] == 0, [1.0, 0.0], [0.0, 1.0]) + rng.normal(scale=0.05, size=(40, 2))
    features = np.stack([group == 0, group == 1], 1).astype(np.float32) + rng.normal(scale=0.1, size=(40, 2))
    items = np.zeros((40, 6), np.float32)
    items[group == 0, :2] = 1  # segment of group 0 likes items 0, 1
    items[group == 1, 4:] = 1  # group 1 likes items 4, 5
    items[:, 3] = rng.random(40) < 0.1
    model = CS.SemiPersonalised(num_segments=2, seed=0).fit(vectors, features, sp.csr_matrix(items))
    scores = model.score(np.array([[1.0, 0.0], [0.0, 1.0]], np.float32))
    assert set(np.argsort(-scores[0])[:2]) == {0, 1} and set(np.argsort(-scores[1])[:2]) == {4, 5}
    assert model.assign(np.array([[1.0, 0.0]], np.float32))[0] != model.assign(np.array([[0.0, 1.0]], np.float32))[0]


def test_feature_regression_learns_a_planted_map():
    rng = np.random.default_rng(1)
    group = rng.integers(0, 3, 300)
    x = np.eye(3, dtype=np.float32)[group] + rng.normal(scale=0.05, size=(300, 3)).astype(np.float32)
    directions = np.eye(4, dtype=np.float32)[:3]
    model = CS.FeatureRegression(hidden=16, epochs=60, seed=0).fit(x, directions[group] * 3.0)  # any norm
    pred = model.predict(np.eye(3, dtype=np.float32))
    np.testing.assert_allclose(np.linalg.norm(pred, axis=1), 1.0, atol=1e-5)
    assert (np.diag(pred @ directions.T) > 0.9).all()


def test_regression_inputs_append_the_mean_of_the_first_items():
    m, times = _matrix()
    split = CS.split_users(m, times, 0.34, (0, 1, 2), seed=3)
    features = np.arange(12, dtype=np.float32).reshape(6, 2)
    vectors = np.arange(16, dtype=np.float32).reshape(8, 2)
    users = split.warm[:2]
    np.testing.assert_array_equal(CS.regression_inputs(features, split, users, 0, vectors), features[users])
    x = CS.regression_inputs(features, split, users, 1, vectors)
    last = [m[u].indices[-1] for u in users]  # the first item by time is the largest id
    np.testing.assert_array_equal(x, np.concatenate([features[users], vectors[last]], 1))


def test_als_fold_in_shapes_and_empty_rows():
    implicit = pytest.importorskip("implicit.cpu.als")
    m, _ = _matrix()
    from threadpoolctl import threadpool_limits  # implicit wants single-threaded BLAS

    with threadpool_limits(1, "blas"):
        model = implicit.AlternatingLeastSquares(factors=4, iterations=3, random_state=0, num_threads=1)
        model.fit(m, show_progress=False)
    known = sp.csr_matrix(np.array([[1, 1, 0, 0, 0, 0, 0, 0], [0] * 8], np.float32))
    u = CS.als_fold_in(model, known)
    assert u.shape == (2, 4) and np.abs(u[1]).sum() == 0 and np.abs(u[0]).sum() > 0


def write_movielens(root, n_users=60, n_items=40, seed=0) -> str:
    """A tiny MovieLens 100K directory: u.data with timestamps, u.user, u.item, u.genre."""
    rng = np.random.default_rng(seed)
    d = os.path.join(root, "ml")
    os.makedirs(d)
    lines = []
    for u in range(1, n_users + 1):
        items = rng.choice(n_items, 15, replace=False) + 1
        lines += [f"{u}\t{i}\t{rng.integers(1, 6)}\t{1000 + rng.integers(0, 10**6)}" for i in items]
    with open(os.path.join(d, "u.data"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(d, "u.user"), "w") as f:
        f.write(
            "".join(
                f"{u}|{20 + u % 40}|{'MF'[u % 2]}|{['student', 'other'][u % 3 == 0]}|{u:05d}\n"
                for u in range(1, n_users + 1)
            )
        )
    flags = lambda i: "|".join("1" if g == i % 19 else "0" for g in range(19))  # noqa: E731
    with open(os.path.join(d, "u.item"), "w") as f:
        f.write("".join(f"{i}|Item {i} (1990)|01-Jan-1990||http://x|{flags(i)}\n" for i in range(1, n_items + 1)))
    return d


@pytest.mark.slow  # a whole runner / processes end to end (default run kept under 10 minutes)
def test_experiment_runs_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("CML_TF_CACHE", str(tmp_path / "cache"))
    from experiments import cold_start

    data = write_movielens(str(tmp_path))
    out = tmp_path / "out"
    argv = [
        f"--data_path={data}",
        "--ns=0,2",
        "--pairs=1024",
        "--als_trials=1",
        "--segments=2",
        f"--out_dir={out}",
        f"--runs_dir={tmp_path / 'runs'}",
    ]
    assert cold_start.main(argv) == 0
    import pandas as pd

    df = pd.read_csv(out / "results.csv")
    assert set(df.method) == set(cold_start.METHODS) and sorted(df.n.unique()) == [0, 2]
    assert (df.users == 12).all() and df["ndcg@50"].between(0, 1).all()
    # popularity ignores n's known items only through the mask: same ranking, different targets
    assert {"cold_start.md", "ndcg_vs_n.png", "command.txt"} <= set(os.listdir(out))
    assert "(e) ALS fold-in" in (out / "cold_start.md").read_text()
    with pytest.raises(SystemExit):
        cold_start.parse_args(["--dataset=citeulike"])
