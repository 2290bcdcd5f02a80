"""Embedding quality by metadata: do item embeddings organise by genre (Royo-Letelier et al., ISMIR 2018)?

`genre_clustering` clusters the item vectors with k-means (k = the number of labels, scikit-learn's ``KMeans``)
and scores the clusters against the labels with the adjusted Rand index (ARI) and the adjusted mutual information
(AMI), both computed here from the contingency table (and checked against scikit-learn in the tests); it adds the
kNN label accuracy: each item is given the majority label of its k nearest other items (squared Euclidean
distance, the CML geometry; ties go to the lowest label) and the accuracy is the fraction of items whose own label
that is, beside the majority-class rate (the accuracy of always answering the most common label).

**One label per item**: MovieLens items have one to six genres; the label is the item's FIRST genre in
``u.genre``'s order (`cml_tf.data.side_info.SideInfo.first_group`). Items without a label (-1) are left out, and so
are items outside ``items`` when given (e.g. the items seen in training: the others keep their initial vector).
ARI and AMI are 0 in expectation for a random clustering and 1 for a clustering equal to the labels.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln


def contingency(labels_true: np.ndarray, labels_pred: np.ndarray) -> np.ndarray:
    """[R, C] int64 counts n_rc of items with true label r and cluster c (labels renumbered 0..R-1, 0..C-1).

    Args:
        labels_true: [n] int labels.
        labels_pred: [n] int cluster ids.
    """
    _, t = np.unique(np.asarray(labels_true), return_inverse=True)
    _, p = np.unique(np.asarray(labels_pred), return_inverse=True)
    rows, cols = t.max(initial=-1) + 1, p.max(initial=-1) + 1
    return np.bincount(t * cols + p, minlength=rows * cols).reshape(rows, cols).astype(np.int64)


def _comb2(x):
    x = np.asarray(x, np.float64)
    return x * (x - 1) / 2


def adjusted_rand_index(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """ARI (Hubert & Arabie 1985): (Σ C(n_rc, 2) − E) / (½(Σ C(a_r, 2) + Σ C(b_c, 2)) − E), E = ΣC(a,2)ΣC(b,2)/C(n,2).

    Args:
        labels_true, labels_pred: [n] int labels.

    Returns:
        The index; 1.0 when both partitions are the same (also when each is a single cluster).
    """
    table = contingency(labels_true, labels_pred)
    n = table.sum()
    index = _comb2(table).sum()
    a, b = _comb2(table.sum(1)).sum(), _comb2(table.sum(0)).sum()
    expected = a * b / _comb2(n) if n > 1 else 0.0
    top = 0.5 * (a + b)
    if top == expected:
        return 1.0
    return float((index - expected) / (top - expected))


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def mutual_info(table: np.ndarray) -> float:
    """MI (nats) of a contingency table: Σ n_rc/n · log(n · n_rc / (a_r b_c))."""
    n = table.sum()
    a, b = table.sum(1), table.sum(0)
    r, c = np.nonzero(table)
    nij = table[r, c].astype(np.float64)
    return float((nij / n * (np.log(n * nij) - np.log(a[r].astype(np.float64) * b[c]))).sum())


def expected_mutual_info(table: np.ndarray) -> float:
    """E[MI] under the hypergeometric model of random partitions with the table's margins (Vinh et al. 2010).

    E = Σ_r Σ_c Σ_{m = max(1, a_r + b_c − n)}^{min(a_r, b_c)} m/n · log(n m / (a_r b_c)) · P(m), with P(m) the
    hypergeometric probability, vectorised over a [R, C, M] grid of m.
    """
    n = int(table.sum())
    a = table.sum(1).astype(np.int64)[:, None, None]
    b = table.sum(0).astype(np.int64)[None, :, None]
    m = np.arange(1, max(1, int(min(a.max(), b.max()))) + 1, dtype=np.int64)[None, None, :]
    lo, hi = np.maximum(1, a + b - n), np.minimum(a, b)
    valid = (m >= lo) & (m <= hi)
    mm = np.where(valid, m, 1).astype(np.float64)
    af, bf, nf = a.astype(np.float64), b.astype(np.float64), float(n)
    log_p = (
        gammaln(af + 1)
        + gammaln(bf + 1)
        + gammaln(nf - af + 1)
        + gammaln(nf - bf + 1)
        - gammaln(nf + 1)
        - gammaln(mm + 1)
        - gammaln(af - mm + 1)
        - gammaln(bf - mm + 1)
        - gammaln(np.maximum(nf - af - bf + mm, 0) + 1)
    )
    term = mm / nf * (np.log(nf * mm) - np.log(af * bf)) * np.exp(log_p)
    return float(np.where(valid, term, 0.0).sum())


def adjusted_mutual_info(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """AMI with the arithmetic-mean normaliser (scikit-learn's default): (MI − E[MI]) / (½(H(U) + H(V)) − E[MI]).

    Returns:
        The index; 1.0 when both partitions are a single cluster or equal to each other.
    """
    table = contingency(labels_true, labels_pred)
    if table.shape[0] == table.shape[1] == 1 or table.shape[0] == table.shape[1] == table.sum():
        return 1.0
    mi, emi = mutual_info(table), expected_mutual_info(table)
    normaliser = 0.5 * (_entropy(table.sum(1)) + _entropy(table.sum(0)))
    denominator = normaliser - emi
    eps = np.finfo(np.float64).eps
    denominator = min(denominator, -eps) if denominator < 0 else max(denominator, eps)
    return float((mi - emi) / denominator)


def knn_label_accuracy(vectors: np.ndarray, labels: np.ndarray, k: int = 10, batch: int = 1024) -> float:
    """Fraction of rows whose label is the majority label of their k nearest OTHER rows (squared Euclidean).

    Args:
        vectors: [n, d] float item vectors.
        labels: [n] int labels in [0, L).
        k: neighbours (at most n − 1).
        batch: rows scored at once (a [batch, n] distance block).

    Returns:
        The accuracy in [0, 1]; majority ties go to the lowest label.
    """
    x = np.asarray(vectors, np.float32)
    labels = np.asarray(labels, np.int64)
    n = x.shape[0]
    k = int(min(k, n - 1))
    if k < 1:
        raise ValueError(f"kNN accuracy needs at least 2 items, got {n}")
    num_labels = int(labels.max()) + 1
    sq = (x * x).sum(1)
    correct = 0
    for start in range(0, n, batch):
        rows = np.arange(start, min(start + batch, n))
        d = sq[rows, None] - 2.0 * x[rows] @ x.T + sq[None, :]  # [b, n]
        d[np.arange(rows.size), rows] = np.inf  # not its own neighbour
        nearest = np.argpartition(d, k - 1, axis=1)[:, :k]  # [b, k]
        votes = np.bincount(
            (np.arange(rows.size)[:, None] * num_labels + labels[nearest]).ravel(), minlength=rows.size * num_labels
        ).reshape(rows.size, num_labels)
        correct += int((votes.argmax(1) == labels[rows]).sum())
    return correct / n


def genre_clustering(
    item_vectors: np.ndarray,
    labels: np.ndarray,
    *,
    items: np.ndarray | None = None,
    num_clusters: int | None = None,
    knn: int = 10,
    seed: int = 0,
    n_init: int = 10,
) -> dict:
    """k-means clusters of item vectors against their labels: ARI, AMI, kNN label accuracy.

    Args:
        item_vectors: [n_items, d] item embeddings (as the model scores them).
        labels: [n_items] int label per item (e.g. `SideInfo.first_group`), -1 = no label (left out).
        items: optional [m] item indices to keep (e.g. those seen in training); default every labelled item.
        num_clusters: k of k-means; default the number of distinct labels among the kept items.
        knn: neighbours of the kNN accuracy.
        seed: k-means seed.
        n_init: k-means restarts (the best inertia is kept).

    Returns:
        {"ari", "ami", "knn_accuracy", "majority_rate", "clusters", "items"}.
    """
    from sklearn.cluster import KMeans

    x = np.asarray(item_vectors, np.float64)
    labels = np.asarray(labels, np.int64)
    keep = labels >= 0
    if items is not None:
        mask = np.zeros(labels.size, bool)
        mask[np.asarray(items, np.int64)] = True
        keep &= mask
    x, y = x[keep], labels[keep]
    _, y = np.unique(y, return_inverse=True)
    k = int(num_clusters or y.max(initial=-1) + 1)
    if x.shape[0] < max(2, k):
        raise ValueError(f"{x.shape[0]} labelled items for {k} clusters")
    clusters = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(x)
    return {
        "ari": adjusted_rand_index(y, clusters),
        "ami": adjusted_mutual_info(y, clusters),
        "knn_accuracy": knn_label_accuracy(x, y, knn),
        "majority_rate": float(np.bincount(y).max() / y.size),
        "clusters": k,
        "items": int(y.size),
    }
