"""User cold start: recommending to users the model was not trained on, from registration features and their first
few interactions (after Briand et al., "A Semi-Personalized System for User Cold Start Recommendation on Music
Streaming Apps", KDD 2021).

**Protocol** (`split_users`): a seeded ``cold_fraction`` of the users (drawn among those with more than
``max(ns)`` interactions, so that every cold user has a target at every n) is held out entirely; the models see only
the warm users. For a cold user, the first n interactions by timestamp are known ("registration"), the rest is the
target; every method is scored by the same `cml_tf.evaluation.Evaluator` on the cold users' targets, their known
items masked, MMR from the warm users' item counts.

**Methods** (each a function of what a deployed system would have: the frozen warm model, the warm interactions,
the cold user's features and known items):

* `popularity_scores`: the warm users' item counts.
* `fold_in`: the cold user's vector fitted against the FROZEN item table with CML's training loss (the triplet hinge
  [D²(u, v⁺) − min_k D²(u, v_k) + α]₊ over the known items, uniform negatives outside them), all cold users in
  one batch, on the unit sphere; it starts from the mean warm user direction, which is also the answer for n = 0.
* `FeatureRegression`: a Keras MLP trained on warm users maps the features (registration features, and for n > 0
  the mean of the vectors of the user's first n items) to the user's CML embedding; its prediction, normalised,
  ranks by distance. It is trained for each n on the warm users' own first n items, so that its inputs look like
  the cold users'.
* `SemiPersonalised`: k-means segments of the warm user embeddings (scikit-learn); a logistic-regression classifier
  on the same inputs as the regression assigns a cold user to a segment; the recommendations are the segment's
  most popular items among its warm users (ties by global popularity).
* ALS fold-in is implicit's ``recalculate_user`` (the experiment runner fits it; `als_fold_in` wraps the call;
  with no known item it recommends the warm popularity).
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from cml_tf.models import losses as L
from cml_tf.sampling.negatives import NegativeSampler

DEFAULT_NS = (0, 1, 3, 5, 10)


@dataclasses.dataclass(frozen=True, eq=False)
class ColdStartSplit:
    """Warm / cold users and each interaction's position in its user's time order.

    Attributes:
        matrix: [n_users, n_items] CSR of every interaction (sorted indices).
        order: [nnz] int64: the position (0 = first) of each CSR entry in its user's interactions by timestamp
            (ties by item index).
        warm: [W] int64 sorted warm user indices.
        cold: [C] int64 sorted cold user indices.
    """

    matrix: sp.csr_matrix
    order: np.ndarray
    warm: np.ndarray
    cold: np.ndarray

    def _rows(self, users: np.ndarray, keep: np.ndarray) -> sp.csr_matrix:
        m = self.matrix
        rows = np.zeros(m.shape[0], bool)
        rows[users] = True
        entry_rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
        mask = keep & rows[entry_rows]
        out = sp.csr_matrix((m.data[mask], (entry_rows[mask], m.indices[mask])), shape=m.shape, dtype=np.float32)
        out.sort_indices()
        return out

    def warm_matrix(self) -> sp.csr_matrix:
        """[n_users, n_items] CSR: the warm users' interactions (cold rows empty): what the models are trained on."""
        return self._rows(self.warm, np.ones(self.order.size, bool))

    def first(self, n: int, users: np.ndarray | None = None) -> sp.csr_matrix:
        """[n_users, n_items] CSR: the first ``n`` interactions by time of ``users`` (default the cold users)."""
        return self._rows(self.cold if users is None else users, self.order < n)

    def target(self, n: int) -> sp.csr_matrix:
        """[n_users, n_items] CSR: the cold users' interactions after their first ``n``."""
        return self._rows(self.cold, self.order >= n)


def time_order(matrix: sp.csr_matrix, timestamps: np.ndarray) -> np.ndarray:
    """[nnz] int64 position of each CSR entry among its row's entries sorted by (timestamp, item)."""
    m = sp.csr_matrix(matrix)
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    perm = np.lexsort((m.indices, np.asarray(timestamps), rows))  # by row, then time, then item
    order = np.empty(m.nnz, np.int64)
    order[perm] = np.arange(m.nnz) - np.repeat(m.indptr[:-1], np.diff(m.indptr))
    return order


def split_users(
    matrix: sp.csr_matrix, timestamps: np.ndarray, cold_fraction: float = 0.2, ns=DEFAULT_NS, seed: int = 0
) -> ColdStartSplit:
    """Holds out ``cold_fraction`` of the users (seeded) as cold users; see the module docstring.

    Args:
        matrix: [n_users, n_items] interactions.
        timestamps: [nnz] time of each CSR entry (`cml_tf.data.loaders.movielens.read_timestamps`).
        cold_fraction: share of ALL users held out (drawn among users with more than ``max(ns)`` interactions).
        ns: the numbers of known interactions that will be evaluated.
        seed: the draw's seed.

    Raises:
        ValueError: a fraction outside (0, 1), timestamps of the wrong length, too few eligible users.
    """
    m = sp.csr_matrix(matrix, dtype=np.float32)
    m.sort_indices()
    timestamps = np.asarray(timestamps)
    if timestamps.shape != (m.nnz,):
        raise ValueError(f"{timestamps.size} timestamps for {m.nnz} interactions")
    if not 0 < cold_fraction < 1:
        raise ValueError(f"--cold_fraction must be in (0, 1), got {cold_fraction}")
    degree = np.diff(m.indptr)
    eligible = np.flatnonzero(degree > max(ns))
    count = int(round(cold_fraction * m.shape[0]))
    if count < 1 or count > eligible.size:
        raise ValueError(
            f"{count} cold users asked (--cold_fraction={cold_fraction} of {m.shape[0]}) but {eligible.size} users "
            f"have more than {max(ns)} interactions"
        )
    cold = np.sort(np.random.default_rng(seed).choice(eligible, count, replace=False)).astype(np.int64)
    warm = np.setdiff1d(np.arange(m.shape[0]), cold).astype(np.int64)
    return ColdStartSplit(m, time_order(m, timestamps), warm, cold)


def popularity_scores(warm: sp.csr_matrix) -> np.ndarray:
    """[n_items] float32 warm item counts."""
    return np.asarray(warm.sum(0)).ravel().astype(np.float32)


def mean_item_vectors(known: sp.csr_matrix, users: np.ndarray, item_vectors: np.ndarray) -> np.ndarray:
    """[len(users), d] mean of the vectors of each user's known items (zeros for a user with none)."""
    rows = sp.csr_matrix(known[users], dtype=np.float32)
    counts = np.maximum(np.diff(rows.indptr), 1)[:, None]
    return np.asarray(rows @ item_vectors) / counts


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def fold_in(
    item_vectors: np.ndarray,
    known: sp.csr_matrix,
    init: np.ndarray,
    *,
    margin: float = 1.0,
    num_negatives: int = 10,
    steps: int = 200,
    learning_rate: float = 0.05,
    seed: int = 0,
) -> np.ndarray:
    """Fits user vectors against a frozen item table with CML's hinge, all users in one batch.

    Args:
        item_vectors: [n_items, d] the trained item table (unit rows), frozen.
        known: [U, n_items] CSR: row r = the known items of user r.
        init: [d] or [U, d] starting vectors (normalised); users without a known item keep it.
        margin: α of the hinge.
        num_negatives: negatives per known pair (uniform outside the user's known items; min over them).
        steps: Adam steps.
        learning_rate: Adam's step size on the raw (normalised when used) vectors.
        seed: negatives' seed.

    Returns:
        [U, d] float32 unit user vectors.
    """
    known = sp.csr_matrix(known, dtype=np.float32)
    known.sort_indices()
    n_users = known.shape[0]
    start = np.broadcast_to(_unit(np.asarray(init, np.float32)), (n_users, item_vectors.shape[1])).copy()
    if known.nnz == 0:
        return start
    items = tf.constant(np.asarray(item_vectors, np.float32))
    users = tf.constant(np.repeat(np.arange(n_users), np.diff(known.indptr)).astype(np.int64))
    positives = tf.constant(known.indices.astype(np.int64))
    sampler = NegativeSampler(known)
    u = tf.Variable(start)
    optimizer = keras.optimizers.Adam(learning_rate)

    @tf.function
    def step(k):
        negatives = sampler.sample(users, num_negatives, tf.stack([tf.constant(seed, tf.int64), k]))
        with tf.GradientTape() as tape:
            vectors = tf.math.l2_normalize(tf.gather(u, users), axis=-1)  # [nnz, d]
            pos = L.squared_distances(vectors, tf.gather(items, positives))
            neg = L.squared_distances(vectors, tf.gather(items, negatives))  # [nnz, N]
            loss = tf.reduce_sum(L.triplet_hinge(pos, neg, margin))
        optimizer.apply_gradients([(tape.gradient(loss, u), u)])
        return loss

    for k in range(steps):
        step(tf.constant(k, tf.int64))
    return _unit(u.numpy())


def regression_inputs(
    features: np.ndarray, split: ColdStartSplit, users: np.ndarray, n: int, item_vectors: np.ndarray
) -> np.ndarray:
    """[len(users), F (+ d)] inputs of the regression and the classifier: the users' registration features and,
    for n > 0, the mean vector of their first n items by time."""
    x = np.asarray(features, np.float32)[users]
    if n == 0:
        return x
    return np.concatenate([x, mean_item_vectors(split.first(n, users), users, item_vectors)], axis=1)


class FeatureRegression:
    """A Keras MLP from user inputs to the (unit) CML user embedding; see the module docstring.

    Args:
        hidden: hidden units of the two ReLU layers.
        epochs, batch_size, learning_rate: Adam training on the warm users (10% held out for early stopping).
        seed: initialisation, shuffling and hold-out seed.
    """

    def __init__(self, hidden: int = 256, epochs: int = 200, batch_size: int = 64, learning_rate=1e-3, seed: int = 0):
        self.hidden, self.epochs, self.batch_size = hidden, epochs, batch_size
        self.learning_rate, self.seed = learning_rate, seed

    def fit(self, inputs: np.ndarray, targets: np.ndarray) -> FeatureRegression:
        """Fits on [W, F] inputs and [W, d] target embeddings (cosine loss: the targets are directions)."""
        keras.utils.set_random_seed(self.seed)
        x, y = np.asarray(inputs, np.float32), _unit(np.asarray(targets, np.float32))
        self.mean, self.scale = x.mean(0), x.std(0) + 1e-6
        init = keras.initializers.GlorotUniform
        self.model = keras.Sequential(
            [
                keras.Input((x.shape[1],)),
                keras.layers.Dense(self.hidden, activation="relu", kernel_initializer=init(self.seed)),
                keras.layers.Dropout(0.2, seed=self.seed),
                keras.layers.Dense(self.hidden, activation="relu", kernel_initializer=init(self.seed + 1)),
                keras.layers.Dense(y.shape[1], kernel_initializer=init(self.seed + 2)),
                keras.layers.UnitNormalization(),
            ]
        )
        self.model.compile(optimizer=keras.optimizers.Adam(self.learning_rate), loss=keras.losses.CosineSimilarity())
        rng = np.random.default_rng(self.seed)
        holdout = rng.random(x.shape[0]) < 0.1
        stop = keras.callbacks.EarlyStopping(patience=20, restore_best_weights=True)
        self.model.fit(
            (x[~holdout] - self.mean) / self.scale,
            y[~holdout],
            validation_data=((x[holdout] - self.mean) / self.scale, y[holdout]),
            epochs=self.epochs,
            batch_size=self.batch_size,
            callbacks=[stop],
            verbose=0,
        )
        return self

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """[U, d] unit user vectors."""
        x = (np.asarray(inputs, np.float32) - self.mean) / self.scale
        return _unit(np.asarray(self.model.predict(x, batch_size=1024, verbose=0)))


class SemiPersonalised:
    """k-means segments of warm user embeddings, a classifier to assign a cold user, the segment's top items.

    Args:
        num_segments: k of k-means.
        seed: k-means and classifier seed.
    """

    def __init__(self, num_segments: int = 20, seed: int = 0):
        self.num_segments, self.seed = int(num_segments), int(seed)

    def fit(self, user_vectors: np.ndarray, inputs: np.ndarray, warm_items: sp.csr_matrix) -> SemiPersonalised:
        """Segments the [W, d] warm user vectors, fits the classifier on the [W, F] inputs and counts each segment's
        items in the [W, n_items] warm interactions (rows in the same order)."""
        from sklearn.cluster import KMeans
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.segments = KMeans(self.num_segments, n_init=10, random_state=self.seed).fit_predict(
            _unit(np.asarray(user_vectors, np.float64))
        )
        self.classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        self.classifier.fit(np.asarray(inputs, np.float32), self.segments)
        assign = sp.csr_matrix(
            (np.ones(self.segments.size, np.float32), (self.segments, np.arange(self.segments.size))),
            shape=(self.num_segments, self.segments.size),
        )
        counts = np.asarray((assign @ sp.csr_matrix(warm_items, dtype=np.float32)).todense())  # [K, n_items]
        popularity = counts.sum(0)
        self.scores = counts + popularity[None, :] / (popularity.max() + 1.0)  # global popularity breaks ties
        return self

    def assign(self, inputs: np.ndarray) -> np.ndarray:
        """[U] segment of each user."""
        return self.classifier.predict(np.asarray(inputs, np.float32))

    def score(self, inputs: np.ndarray) -> np.ndarray:
        """[U, n_items] scores: the assigned segment's item counts."""
        return self.scores[self.assign(inputs)]


def als_fold_in(model, known: sp.csr_matrix) -> np.ndarray:
    """[U, f] user factors from implicit ALS's ``recalculate_user`` on the [U, n_items] known items (item factors
    fixed); rows without a known item are zeros (the caller scores those by popularity)."""
    known = sp.csr_matrix(known, dtype=np.float32)
    return np.asarray(model.recalculate_user(np.arange(known.shape[0]), known), np.float32)
