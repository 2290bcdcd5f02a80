"""`cml_tf.serving.retrieval`: exact top-k in the model's geometry, exclusion, padding, faiss agreement, no faiss."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.sparse as sp

from cml_tf.serving import retrieval
from cml_tf.serving.retrieval import ExactIndex, RetrievalError


def _unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute(queries, items, k, exclude=None):
    """Reference: full -||q - v||^2 matrix, excluded at -inf, stable sort (ties by lower index)."""
    scores = -((queries[:, None, :].astype(np.float64) - items[None].astype(np.float64)) ** 2).sum(-1)
    if exclude is not None:
        scores[exclude.toarray() > 0] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def test_exact_ranks_by_distance_with_hand_computed_scores():
    # items on a line: from q = (0, 0) the distances are 0.01, 0.25, 1, 4 whatever the order of the rows
    items = np.array([[1.0, 0.0], [0.1, 0.0], [2.0, 0.0], [0.0, 0.5]], np.float32)
    scores, found = ExactIndex(items).search(np.zeros((1, 2), np.float32), 4)
    assert found.tolist() == [[1, 3, 0, 2]]
    np.testing.assert_allclose(scores, [[-0.01, -0.25, -1.0, -4.0]], rtol=1e-6)


def test_ball_geometry_ranks_by_distance_not_inner_product():
    # q = (1, 0): v0 = (0.3, 0) is closer (0.49) than v1 = (0.6, 0.8) (0.8), though q.v1 = 0.6 > q.v0 = 0.3
    items = np.array([[0.6, 0.8], [0.3, 0.0]], np.float32)
    scores, found = ExactIndex(items).search(np.array([[1.0, 0.0]], np.float32), 2)
    assert found.tolist() == [[1, 0]]
    np.testing.assert_allclose(scores, [[-0.49, -0.8]], rtol=1e-6)


def test_excluded_items_never_returned_and_short_rows_padded():
    items = np.eye(4, dtype=np.float32)
    exclude = sp.csr_matrix(np.array([[1, 0, 1, 0], [1, 1, 1, 0]], np.float32))
    scores, found = ExactIndex(items).search(np.eye(4, dtype=np.float32)[:2], 3, exclude)
    assert found.tolist() == [[1, 3, -1], [3, -1, -1]]  # query 1 has one item left
    np.testing.assert_allclose(scores[0, :2], [-2.0, -2.0])
    assert np.isneginf(scores[0, 2]) and np.isneginf(scores[1, 1:]).all()


def test_blocks_bounded_by_memory_give_the_same_result():
    rng = np.random.default_rng(0)
    items, queries = _unit(rng.normal(size=(300, 8))), _unit(rng.normal(size=(50, 8)))
    exclude = sp.random(50, 300, density=0.05, format="csr", random_state=1)
    small = ExactIndex(items, memory_bytes=8 * 300 * 7)  # 7 queries per block
    assert small.batch_size() == 7
    s1, i1 = small.search(queries, 10, exclude)
    s2, i2 = ExactIndex(items).search(queries, 10, exclude)
    ref_scores, ref_items = _brute(queries, items, 10, exclude)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(i1, ref_items)
    np.testing.assert_allclose(s1, ref_scores, atol=1e-5)


@pytest.mark.parametrize("k, message", [(0, "positive"), (-1, "positive"), (5, "exceeds the catalogue (4 items)")])
def test_bad_k_is_refused(k, message):
    with pytest.raises(RetrievalError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ExactIndex(np.eye(4, dtype=np.float32)).search(np.eye(4, dtype=np.float32), k)


def test_missing_faiss_says_how_to_install_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    with pytest.raises(RetrievalError, match=r"pip install 'cml_tf\[ann\]'"):
        retrieval.FaissIndex(np.eye(4, dtype=np.float32), "hnsw")
    with pytest.raises(RetrievalError, match="faiss is not installed"):
        retrieval.make_index(np.eye(4, dtype=np.float32), "ivf")


# ----------------------------------------------------------------------------------------------- faiss
try:
    import faiss  # noqa: F401

    HAVE_FAISS = True
except ImportError:
    HAVE_FAISS = False
needs_faiss = pytest.mark.skipif(not HAVE_FAISS, reason="faiss-cpu not installed (pip install 'cml_tf[ann]')")


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(3)
    centres = _unit(rng.normal(size=(20, 16)))
    items = _unit(centres[rng.integers(0, 20, 2000)] + 0.5 * rng.normal(size=(2000, 16)) / 4)
    queries = _unit(centres[rng.integers(0, 20, 100)] + 0.5 * rng.normal(size=(100, 16)) / 4)
    exclude = sp.random(100, 2000, density=0.01, format="csr", random_state=4)
    return items, queries, exclude


@needs_faiss
def test_ivf_visiting_every_list_equals_exact(table):
    items, queries, exclude = table
    exact_scores, exact_items = ExactIndex(items).search(queries, 20, exclude)
    ivf = retrieval.FaissIndex(items, "ivf", nlist=16, nprobe=16)
    scores, found = ivf.search(queries, 20, exclude)
    np.testing.assert_array_equal(found, exact_items)
    np.testing.assert_allclose(scores, exact_scores, atol=1e-5)


@needs_faiss
def test_hnsw_agrees_with_exact_and_rescores_exactly(table):
    items, queries, exclude = table
    exact_scores, exact_items = ExactIndex(items).search(queries, 20, exclude)
    scores, found = retrieval.FaissIndex(items, "hnsw", hnsw_m=16, ef_construction=100, ef_search=200).search(
        queries, 20, exclude
    )
    recall = np.mean([np.intersect1d(a, e).size / 20 for a, e in zip(found, exact_items)])
    assert recall >= 0.98
    excluded = set(zip(*exclude.nonzero()))
    assert not any((q, i) in excluded for q, row in enumerate(found) for i in row)
    ref = -((queries[:, None, :] - items[found]) ** 2).sum(-1)  # the scores are the exact ones of the items returned
    np.testing.assert_allclose(scores, ref, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()


@needs_faiss
def test_faiss_ranks_in_the_ball_geometry():
    items = np.array([[0.6, 0.8], [0.3, 0.0], [-1.0, 0.0]], np.float32)
    for kind, params in (("hnsw", {}), ("ivf", {"nlist": 1})):
        scores, found = retrieval.FaissIndex(items, kind, **params).search(np.array([[1.0, 0.0]], np.float32), 2)
        assert found.tolist() == [[1, 0]], kind
        np.testing.assert_allclose(scores, [[-0.49, -0.8]], rtol=1e-6)


@needs_faiss
def test_faiss_exclusion_over_fetches_past_a_user_with_many_seen_items():
    items = _unit(np.random.default_rng(0).normal(size=(500, 8)))
    query = items[:1]
    _, nearest = ExactIndex(items).search(query, 60)
    exclude = sp.csr_matrix((np.ones(50), nearest[0, :50], [0, 50]), shape=(1, 500))  # its 50 nearest are seen
    _, want = ExactIndex(items).search(query, 10, exclude)
    _, got = retrieval.FaissIndex(items, "ivf", nlist=4, nprobe=4).search(query, 10, exclude)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got[0], nearest[0, 50:60])


@needs_faiss
def test_saved_index_is_reused_only_with_its_build_parameters_and_source(table, tmp_path):
    items, queries, _ = table
    path = str(tmp_path / "index.faiss")
    built = retrieval.FaissIndex(items, "hnsw", hnsw_m=8, ef_construction=40)
    built.save(path, source="table-v1")
    loaded = retrieval.FaissIndex.load(path, items, "hnsw", source="table-v1", hnsw_m=8, ef_search=300)
    assert loaded is not None and loaded.params == {"hnsw_m": 8, "ef_construction": 40, "ef_search": 300}
    np.testing.assert_array_equal(loaded.search(queries, 5)[1], built.search(queries, 5)[1])
    assert retrieval.FaissIndex.load(path, items, "hnsw", source="table-v2") is None  # retrained table
    assert retrieval.FaissIndex.load(path, items, "hnsw", source="table-v1", hnsw_m=16) is None
    assert retrieval.FaissIndex.load(path, items[:100], "hnsw", source="table-v1") is None
    assert retrieval.FaissIndex.load(str(tmp_path / "absent.faiss"), items, "hnsw") is None


@needs_faiss
@pytest.mark.parametrize(
    "kind, params, message",
    [
        ("ivf", {"nlist": 0}, "^nlist must be in"),
        ("ivf", {"nlist": 4, "nprobe": 5}, "^nprobe must be in"),
        ("hnsw", {"hnsw_m": 0}, "hnsw_m"),
    ],
)
def test_bad_index_parameters_name_the_flag(kind, params, message):
    with pytest.raises(RetrievalError, match=message):
        retrieval.FaissIndex(np.eye(8, dtype=np.float32), kind, **params)
