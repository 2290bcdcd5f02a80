"""The base of every model: user/item embedding tables, their geometry and the scoring hooks.

`MetricModel` is CML's machinery with two hooks that the relational models override: `relation` (the translation
vector r(u, v), zero for CML) and `extra_loss` (model-specific regularisers). Distances are ``‖u + r − v‖²``.

Geometry (``geometry``):
* ``sphere`` (Tran et al. 2019): every looked-up row is L2-normalised (``keras.layers.UnitNormalization``), so
  users and items live on the unit sphere and the 2-stage sampler's density argument holds.
* ``ball`` (Hsieh et al. 2017, CollMetric): raw rows, clipped to norm <= 1 after every update — by the lazy
  optimizer on the touched rows, or by a ``MaxNorm(axis=1)`` constraint on the whole table with a dense optimizer.

The training step, stage 2 and the loss terms are `cml_tf.models.step.TrainingStep`, a mixin of `MetricModel`.
"""

from __future__ import annotations

import keras
import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from cml_tf.models import losses as L
from cml_tf.models.features import ItemFeatureProjection
from cml_tf.models.relations import mean_operator, reference_items
from cml_tf.models.step import FirstNonFiniteStep, TrainingStep

GEOMETRIES = ("sphere", "ball")


class MetricModel(TrainingStep, keras.Model):
    """Collaborative Metric Learning and the base of its relational successors (`cml_tf.models`).

    Subclasses that translate the user per pair set ``relational = True`` and override `relation` (and optionally
    `extra_loss`); `pair_distances`, the training step, stage 2 and `score_block` then work unchanged.

    Args:
        n_users: number of users.
        n_items: number of items.
        embedding_dim: d.
        geometry: 'sphere' or 'ball'.
        margin: hinge margin α.
        num_negatives: |N_ij| drawn by stage 2 when batches carry candidates.
        stage2_weight_cap: λ, the cap on stage 2's inverse-density weight in units of its value at s = 0 (see
            `cml_tf.sampling.two_stage.stage2_logits`); None = uncapped, the paper taken literally.
        stage2_cutoff: D_min: stage 2 ignores candidates closer than this to the positive (0 = off).
        stage2_refresh_every: which item table stage 2 reads: 0 = the current one (every step); K > 0 = a copy
            refreshed every K steps; -1 (`REFRESH_NEVER`) = the copy made at initialisation (what the original code's
            forked sampler processes effectively used).
        stage2_mask_opposite: stage 2 gives candidates with s < 0 weight 0 (True) or w(|s|) (False).
        stage2_replacement: stage 2's |N_ij| draws are independent (True) or successive, without replacement.
        stage2_uniform_mix: ρ: stage 2 draws from (1 − ρ)·w + ρ·uniform over the non-positive candidates.
        hinge: the triplet hinge over the |N_ij| negatives: "min" (the hardest, the paper) or "mean" (one hinge
            per negative, averaged).
        loss: "hinge" (the triplet hinge over the sampled negatives) or "softmax" (the sampled softmax over the
            batch's pool of negatives: stage-1 candidates, per-row negatives, in-batch positives; see
            `cml_tf.models.losses.sampled_softmax`).
        temperature: τ of the softmax logits −D²/τ (its initial value when ``learn_temperature``).
        learn_temperature: train log τ with the tables.
        gor_weight: λ_g of Global Orthogonal Regularisation (0 disables).
        use_rank_weight: CollMetric's WARP weight log(rank + 1).
        cov_loss_weight: weight of the covariance loss (0 disables; it reads both whole tables: O(catalog)).
        init_stddev: std of the normal initialiser; default 1/sqrt(d) as CollMetric.
        dense_constraint: ball geometry with a dense optimizer: clip whole tables with ``MaxNorm`` after each step.
            Leave False with the lazy optimizers, which clip touched rows themselves.
        item_features: optional [n_items, F] scipy sparse features for CML+F.
        feature_l2_reg: weight of the CML+F feature loss.
        feature_hidden_dim, feature_dropout, feature_scale: CML+F MLP settings.
        clip_norm: radius of the ball (geometry 'ball') and bound of the feature projections.
        seed: initialiser and sampling seed.
        user_history: [n_users, n_items] training CSR, read with ``user_history_weight`` > 0.
        user_history_weight: g of the user tower (SimpleX's behaviour aggregation, one LightGCN propagation step):
            a user is ``geometry((1 − g)·geometry(u) + g·mean_j geometry(v_j))`` over its history items j; 0 = off
            (the user's own row alone).
        user_history_size: the history items per user: a seeded sample of at most this many of its training items.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        embedding_dim: int = 128,
        geometry: str = "sphere",
        margin: float = 1.0,
        num_negatives: int = 1,
        stage2_weight_cap: float | None = None,
        stage2_cutoff: float = 0.0,
        stage2_refresh_every: int = 0,
        stage2_mask_opposite: bool = True,
        stage2_replacement: bool = False,
        stage2_uniform_mix: float = 0.0,
        hinge: str = "min",
        loss: str = "hinge",
        temperature: float = 0.1,
        learn_temperature: bool = False,
        gor_weight: float = 0.0,
        use_rank_weight: bool = False,
        cov_loss_weight: float = 0.0,
        init_stddev: float | None = None,
        dense_constraint: bool = False,
        item_features=None,
        feature_l2_reg: float = 0.1,
        feature_hidden_dim: int = 512,
        feature_dropout: float = 0.0,
        feature_scale: float = 1.0,
        clip_norm: float = 1.0,
        seed: int = 0,
        user_history=None,
        user_history_weight: float = 0.0,
        user_history_size: int = 50,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if geometry not in GEOMETRIES:
            raise ValueError(f"--geometry: unknown geometry {geometry!r}; expected one of {', '.join(GEOMETRIES)}")
        self.n_users, self.n_items, self.embedding_dim = int(n_users), int(n_items), int(embedding_dim)
        self.geometry = geometry
        self.margin = float(margin)
        self.num_negatives = int(num_negatives)
        self.stage2_weight_cap = None if stage2_weight_cap is None else float(stage2_weight_cap)
        self.stage2_cutoff = float(stage2_cutoff)
        self.stage2_refresh_every = int(stage2_refresh_every)
        self.stage2_mask_opposite = bool(stage2_mask_opposite)
        self.stage2_replacement = bool(stage2_replacement)
        self.stage2_uniform_mix = float(stage2_uniform_mix)
        if hinge not in L.HINGES:
            raise ValueError(f"--hinge: unknown {hinge!r}; expected one of {', '.join(L.HINGES)}")
        self.hinge = hinge
        if loss not in L.LOSSES:
            raise ValueError(f"--loss: unknown {loss!r}; expected one of {', '.join(L.LOSSES)}")
        if not temperature > 0:
            raise ValueError(f"--temperature must be positive, got {temperature}")
        self.loss = loss
        self.temperature = float(temperature)
        self.learn_temperature = bool(learn_temperature)
        self.gor_weight = float(gor_weight)
        self.use_rank_weight = bool(use_rank_weight)
        self.cov_loss_weight = float(cov_loss_weight)
        self.feature_l2_reg = float(feature_l2_reg)
        self.seed = int(seed)
        stddev = init_stddev if init_stddev is not None else 1.0 / np.sqrt(embedding_dim)
        self.init_stddev = float(stddev)
        self.clip_norm = float(clip_norm)
        constraint = (
            keras.constraints.MaxNorm(self.clip_norm, axis=1) if (geometry == "ball" and dense_constraint) else None
        )
        self.user_embedding = keras.layers.Embedding(
            self.n_users,
            self.embedding_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=stddev, seed=self.seed),
            embeddings_constraint=constraint,
            name="user_embedding",
        )
        self.item_embedding = keras.layers.Embedding(
            self.n_items,
            self.embedding_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=stddev, seed=self.seed + 1),
            embeddings_constraint=constraint,
            name="item_embedding",
        )
        self.user_embedding.build((None,))
        self.item_embedding.build((None,))
        if geometry == "ball":
            # start inside the ball: the lazy optimizers then keep every row there by clipping the rows they move
            for layer in (self.user_embedding, self.item_embedding):
                layer.embeddings.assign(tf.clip_by_norm(layer.embeddings, self.clip_norm, axes=[1]))
        self.normalize = keras.layers.UnitNormalization(axis=-1) if geometry == "sphere" else None
        self.stage2_snapshot = None
        if self.stage2_refresh_every != 0:
            # the item table stage 2 reads: a copy, refreshed in the step (K > 0) or never (-1); checkpointed with
            # the model, so a resumed run reads the copy the uninterrupted one would have read
            self.stage2_snapshot = self.add_weight(
                shape=(self.n_items, self.embedding_dim),
                initializer="zeros",
                trainable=False,
                name="stage2_item_snapshot",
                aggregation="only_first_replica",
            )
            self.refresh_stage2_snapshot()
        self.feature_projection = (
            ItemFeatureProjection(
                item_features,
                self.embedding_dim,
                feature_hidden_dim,
                feature_dropout,
                feature_scale,
                clip_norm=self.clip_norm,
                seed=self.seed,
            )
            if item_features is not None
            else None
        )
        self.log_temperature = None
        if self.learn_temperature:  # τ = exp(log τ), trained with the tables
            self.log_temperature = self.add_weight(
                shape=(), initializer=keras.initializers.Constant(np.log(self.temperature)), name="log_temperature"
            )
        self._softmax_on_rows_fn = None  # the fused softmax step's compiled function, made when first traced
        self.user_history_weight = float(user_history_weight)
        self.user_history_size = int(user_history_size)
        if not 0 <= self.user_history_weight < 1:
            raise ValueError(f"--user_history_weight must be in [0, 1), got {self.user_history_weight}")
        self.history_ids = self.history_valid = self.history_mean = None
        if self.user_history_weight > 0:
            if user_history is None:
                raise ValueError("the user tower (user_history_weight > 0) needs the training interactions")
            ids, valid = reference_items(user_history, self.user_history_size, self.seed)
            self.history_ids, self.history_valid = tf.constant(ids), tf.constant(valid)  # [n_users, P]
            rows = np.repeat(np.arange(self.n_users), valid.sum(axis=1))
            picked = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, ids[valid])), (self.n_users, self.n_items))
            self.history_mean = mean_operator(picked)  # [n_users, n_items]: row u averages u's history items
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.hinge_tracker = keras.metrics.Mean(name="hinge")
        self.gor_tracker = keras.metrics.Mean(name="gor")
        self.nonfinite_tracker = FirstNonFiniteStep()
        # Every weight exists now: mark the model built, so `fit` skips its symbolic build (which cannot trace a
        # distributed dataset's per-replica inputs).
        self.built = True

    # ----------------------------------------------------------------------------------------------- geometry
    def _geometry(self, x):
        return self.normalize(x) if self.normalize is not None else x

    @staticmethod
    def _lookup(layer: keras.layers.Embedding, ids):
        """Rows of an Embedding layer's table by a resource gather on the variable itself.

        ``Embedding.__call__`` (``ops.take``) first converts the whole table to a tensor, an O(catalog) copy per
        step; gathering from the ``tf.Variable`` reads only the rows and yields ``IndexedSlices`` gradients.
        """
        return tf.gather(layer.embeddings.value, ids)

    def user_vectors(self, users):
        """users: [b] int ids -> [b, d] vectors in the model's geometry (with the user tower, `tower`)."""
        u = self._lookup(self.user_embedding, users)
        if self.history_ids is None:
            return self._geometry(u)
        ids = tf.gather(self.history_ids, users)
        return self.tower(u, self._lookup(self.item_embedding, ids), tf.gather(self.history_valid, users))

    def tower(self, user_rows, history_rows, history_valid):
        """The user tower on raw rows: ``geometry((1 − g)·geometry(u) + g·mean_j geometry(v_j))``.

        Args:
            user_rows: [b, d] raw user rows; history_rows: [b, P, d] raw rows of their history items;
            history_valid: [b, P] bool, the real (not padding) history slots.

        Returns:
            [b, d] user vectors in the model's geometry (a user without history: its own row).
        """
        g = self.user_history_weight
        mask = tf.cast(history_valid, user_rows.dtype)[..., None]  # [b, P, 1]
        count = tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)  # [b, 1]
        history = tf.reduce_sum(self._geometry(history_rows) * mask, axis=1) / count
        return self._geometry((1.0 - g) * self._geometry(user_rows) + g * history)

    def item_vectors(self, items):
        """items: [...] int ids -> [..., d] vectors in the model's geometry."""
        return self._geometry(self._lookup(self.item_embedding, items))

    def embeddings(self) -> tuple[tf.Tensor, tf.Tensor]:
        """Both whole tables in the model's geometry: ([n_users, d], [n_items, d]) (users through the tower)."""
        users, items = self._geometry(self.user_embedding.embeddings), self._geometry(self.item_embedding.embeddings)
        if self.history_mean is not None:
            g = self.user_history_weight
            users = self._geometry((1.0 - g) * users + g * tf.sparse.sparse_dense_matmul(self.history_mean, items))
        return users, items

    def call(self, inputs):
        """Scores ``−‖u + r(u, v) − v‖²`` for pairs (r = 0 for CML).

        Args:
            inputs: dict with ``users`` [batch] and ``items`` [batch] (or [batch, n]) int ids.

        Returns:
            [batch] (or [batch, n]) float scores; higher is closer.
        """
        users, items = inputs["users"], inputs["items"]
        return -self.pair_distances(users, self.user_vectors(users), items, self.item_vectors(items))

    def _plain_scores(self) -> bool:
        # the fused softmax step (`TrainingStep._fused_softmax`) recomputes the score from the two tables' rows:
        # only where nothing (a relation, a user tower, another lookup) changes it
        cls = type(self)
        hooks = (
            "user_vectors",
            "item_vectors",
            "_geometry",
            "pair_distances",
            "shared_distances",
            "extra_loss",
            "_other_terms",
            "compute_softmax_losses",
        )
        return not self.relational and all(getattr(cls, h) is getattr(MetricModel, h) for h in hooks)

    # ----------------------------------------------------------------------------------------------- scoring
    #: whether the score goes through a per-pair relation r(u, v) (False: a plain distance, ranked by one matmul)
    relational = False

    def relation(self, users, u, items, v, exclude=None):
        """The translation vectors r(u, v) of the model (zero for CML).

        Args:
            users: [b] int user ids.
            u: [b, d] their vectors.
            items: [b, n] int item ids.
            v: [b, n, d] their vectors.
            exclude: optional [b] int item ids left out of each user's reference items (the training positive).

        Returns:
            [b, n, d] float relation vectors.
        """
        return tf.zeros_like(v)

    def extra_loss(self, users, u, positives, p, negatives, n):
        """A model's own loss terms for a batch (a scalar), or None. Shapes as in `compute_losses`."""
        return None

    def pair_distances(self, users, u, items, v, exclude=None):
        """``‖u + r(u, v) − v‖²`` for a batch of pairs.

        Args:
            users: [b] int; u: [b, d]; items: [b] or [b, n] int; v: [b, d] or [b, n, d]; exclude: optional [b].

        Returns:
            [b] or [b, n] float squared distances.
        """
        if not self.relational:
            return L.squared_distances(u, v)
        single = items.shape.rank == 1
        if single:
            items, v = items[:, None], v[:, None, :]
        r = self.relation(users, u, items, v, exclude)
        d = tf.reduce_sum(tf.square(u[:, None, :] + r - v), axis=-1)
        return d[:, 0] if single else d

    def pair_cost(self) -> int:
        """Floats `state_scores` holds per (user, item) pair: sizes the evaluator's item chunks."""
        return 4 * self.embedding_dim

    def block_users(self) -> int:
        """Users per ranking block (the relational models whose `user_state` is large use fewer)."""
        return 1024

    def user_state(self, users) -> dict:
        """What ranking a batch of users needs, computed once per batch: {"users" [b], "u" [b, d], ...}."""
        return {"users": users, "u": self.user_vectors(users)}

    def block_relation(self, state, items, v):
        """r(u, v) for the state's b users x the c ``items`` (vectors ``v`` [c, d]): [b, c, d]."""
        b, c = tf.shape(state["users"])[0], tf.shape(items)[0]
        return self.relation(
            state["users"],
            state["u"],
            tf.broadcast_to(items[None], [b, c]),
            tf.broadcast_to(v[None], [b, c, self.embedding_dim]),
        )

    def state_scores(self, state, items):
        """Scores ``−‖u + r(u, v) − v‖²`` of the state's users x ``items`` [c] int32: [b, c] float32."""
        v = self.item_vectors(items)
        u = state["u"][:, None, :]
        if self.relational:
            u = u + self.block_relation(state, items, v)
        return -tf.reduce_sum(tf.square(u - v[None]), axis=-1)

    def score_block(self, users, items):
        """Scores of every (user, item) pair of a block, ``−‖u + r(u, v) − v‖²``.

        Args:
            users: [b] int32 user ids.
            items: [c] int32 item ids.

        Returns:
            [b, c] float32 scores, higher is better.
        """
        return self.state_scores(self.user_state(users), items)

    def get_config(self):
        return {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "embedding_dim": self.embedding_dim,
            "geometry": self.geometry,
            "margin": self.margin,
            "num_negatives": self.num_negatives,
            "stage2_weight_cap": self.stage2_weight_cap,
            "stage2_cutoff": self.stage2_cutoff,
            "stage2_refresh_every": self.stage2_refresh_every,
            "stage2_mask_opposite": self.stage2_mask_opposite,
            "stage2_replacement": self.stage2_replacement,
            "stage2_uniform_mix": self.stage2_uniform_mix,
            "hinge": self.hinge,
            "loss": self.loss,
            "temperature": self.temperature,
            "learn_temperature": self.learn_temperature,
            "gor_weight": self.gor_weight,
            "use_rank_weight": self.use_rank_weight,
            "cov_loss_weight": self.cov_loss_weight,
            "init_stddev": self.init_stddev,
            "clip_norm": self.clip_norm,
            "feature_l2_reg": self.feature_l2_reg,
            "seed": self.seed,
            "user_history_weight": self.user_history_weight,
            "user_history_size": self.user_history_size,
        }
