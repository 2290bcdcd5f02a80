"""python -m experiments.compare_collmetric: the parts that need no checkout, then a tiny end-to-end comparison against
the user's CollMetric checkout named by $COLLMETRIC_DIR (skipped, saying why, when it is unset or invalid)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from cml_tf.data.splits import original_split
from experiments import compare_collmetric as C

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _collmetric_dir() -> str:
    path = os.environ.get("COLLMETRIC_DIR")
    if not path:
        pytest.skip(
            "COLLMETRIC_DIR is not set: point it at a checkout of https://github.com/changun/CollMetric "
            "(git clone https://github.com/changun/CollMetric) to run the comparison test"
        )
    try:
        return C.check_collmetric_dir(path)
    except C.CompareError as e:
        pytest.skip(f"COLLMETRIC_DIR={path} is not usable: {e}")


def test_check_collmetric_dir_messages(tmp_path):
    with pytest.raises(C.CompareError, match="--collmetric_dir is required"):
        C.check_collmetric_dir(None)
    with pytest.raises(C.CompareError, match="no such directory"):
        C.check_collmetric_dir(str(tmp_path / "absent"))
    (tmp_path / "CML.py").write_text("")
    with pytest.raises(C.CompareError, match="missing sampler.py, evaluator.py, utils.py"):
        C.check_collmetric_dir(str(tmp_path))


def test_original_valid_users_follow_the_legacy_rng():
    rng = np.random.default_rng(0)
    m = sp.csr_matrix((rng.random((300, 80)) < 0.1).astype(np.float32))
    split = original_split(m, seed=1)
    users = C.original_valid_users(m, split.valid, size=50, seed=1)
    # Reference: the global legacy RNG, one list shuffle per user with >= 5 items, then choice (as CML.py).
    np.random.seed(1)  # noqa: NPY002 - the original uses the legacy global RNG
    for row in sp.lil_matrix(m).rows:
        items = list(row)
        if len(items) >= 5:
            np.random.shuffle(items)  # noqa: NPY002
    expected = np.random.choice(list(set(split.valid.nonzero()[0])), size=50, replace=False)  # noqa: NPY002
    np.testing.assert_array_equal(users, expected)
    assert len(set(users.tolist())) == 50 and np.all(np.diff(split.valid.indptr)[users] > 0)


def test_format_table():
    row = {
        "recall@50": 0.1,
        "ndcg@50": 0.05,
        "map@50": 0.02,
        "pairs": 1000,
        "train_seconds": 2.0,
        "seconds_per_1m_pairs": 2000.0,
        "peak_rss_mb": 100.0,
    }
    table = C.format_table({"original": dict(row, own_recall=0.1), "preset": row}, 50)
    lines = table.splitlines()
    assert len(lines) == 4 and "Recall@50" in lines[0] and "CML.py" in lines[2] and "| – |" in lines[3]


def test_comparison_against_checkout(shared_data, tmp_path):
    collmetric_dir = _collmetric_dir()
    out = tmp_path / "cmp"
    command = [
        sys.executable,
        "-m",
        "experiments.compare_collmetric",
        f"--collmetric_dir={collmetric_dir}",
        "--dataset=citeulike",
        f"--data_path={os.path.join(shared_data, 'citeulike-t')}",
        "--batch_size=10000",
        "--pairs=20000",
        "--num_candidates=200",
        "--eval_users=300",
        "--original_workers=1",
        f"--output_dir={out}",
        f"--cache_dir={tmp_path / 'cache'}",
    ]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "comparison.json").read_text())
    results = summary["results"]
    assert set(results) == {"original", "preset", "2stage"}
    assert results["original"]["split_identical"] and results["original"]["valid_users_identical"]
    for r in results.values():
        assert r["pairs"] == 20000 and r["eval_users"] == 300
        for key in ("recall@50", "ndcg@50", "map@50"):
            assert 0 <= r[key] <= 1
        assert r["peak_rss_mb"] > 0 and r["seconds_per_1m_pairs"] > 0
    # Same embeddings, two evaluators: cml_tf's Evaluator and the original's RecallEvaluator agree.
    assert abs(results["original"]["own_recall"] - results["original"]["recall@50"]) < 0.01
    assert (out / "comparison.md").read_text().startswith("| implementation |")
