"""The base of every model: user/item embedding tables, geometry, stage 2, the training step and scoring.

`MetricModel` is CML's machinery with two hooks that the relational models override: `relation` (the translation
vector r(u, v), zero for CML) and `extra_loss` (model-specific regularisers). Distances are ``‖u + r − v‖²``.

Geometry (``geometry``):
* ``sphere`` (Tran et al. 2019): every looked-up row is L2-normalised (``keras.layers.UnitNormalization``), so
  users and items live on the unit sphere and the 2-stage sampler's density argument holds.
* ``ball`` (Hsieh et al. 2017, CollMetric): raw rows, clipped to norm <= 1 after every update — by the lazy
  optimizer on the touched rows, or by a ``MaxNorm(axis=1)`` constraint on the whole table with a dense optimizer.

The training step (one ``tf.function``): look up the batch, run stage 2 of the 2-stage sampler on the CURRENT item
embeddings when the batch carries candidates, compute the loss terms from `cml_tf.losses`, apply the gradients.
Only the looked-up rows get gradients (``tf.IndexedSlices``), so with the lazy optimizers a step costs O(batch).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from cml_tf import losses as L
from cml_tf.features import ItemFeatureProjection
from cml_tf.samplers import two_stage_select

GEOMETRIES = ("sphere", "ball")
#: name of the step output holding the first step whose training loss was not finite (0: none yet)
FIRST_NONFINITE_STEP = "first_nonfinite_step"


class FirstNonFiniteStep(keras.metrics.Metric):
    """The first (1-based) training step whose loss was NaN or infinite since the last reset; 0 while none was.

    Plain arithmetic on a variable (no assertion op), so it works inside ``steps_per_execution`` loops and under
    XLA; `cml_tf.training` reads it after every execution and stops the run naming the step.
    """

    def __init__(self, name=FIRST_NONFINITE_STEP, **kwargs):
        super().__init__(name=name, **kwargs)
        self.step = self.add_variable(
            shape=(), initializer="zeros", dtype="int64", name="step", aggregation="only_first_replica"
        )

    def update_state(self, loss, step):
        first = tf.logical_and(tf.equal(self.step, 0), tf.logical_not(tf.math.is_finite(loss)))
        self.step.assign(tf.where(first, tf.cast(step, "int64"), self.step))

    def result(self):
        return tf.identity(self.step)


class MetricModel(keras.Model):
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
            `cml_tf.samplers.stage2_logits`); None = uncapped, the paper taken literally.
        stage2_cutoff: D_min: stage 2 ignores candidates closer than this to the positive (0 = off).
        stage2_refresh_every: which item table stage 2 reads: 0 = the current one (every step); K > 0 = a copy
            refreshed every K steps; -1 (`REFRESH_NEVER`) = the copy made at initialisation (what the original code's
            forked sampler processes effectively used).
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
        """users: [...] int ids -> [..., d] vectors in the model's geometry."""
        return self._geometry(self._lookup(self.user_embedding, users))

    def item_vectors(self, items):
        """items: [...] int ids -> [..., d] vectors in the model's geometry."""
        return self._geometry(self._lookup(self.item_embedding, items))

    def embeddings(self) -> tuple[tf.Tensor, tf.Tensor]:
        """Both whole tables in the model's geometry: ([n_users, d], [n_items, d])."""
        return self._geometry(self.user_embedding.embeddings), self._geometry(self.item_embedding.embeddings)

    def call(self, inputs):
        """Scores ``−‖u + r(u, v) − v‖²`` for pairs (r = 0 for CML).

        Args:
            inputs: dict with ``users`` [batch] and ``items`` [batch] (or [batch, n]) int ids.

        Returns:
            [batch] (or [batch, n]) float scores; higher is closer.
        """
        users, items = inputs["users"], inputs["items"]
        return -self.pair_distances(users, self.user_vectors(users), items, self.item_vectors(items))

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

    # ----------------------------------------------------------------------------------------------- training
    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras' TF trainer, under a strategy, pulls a first distributed batch and MEAN-reduces it before building
        # symbolically: that fails on bool inputs (candidate masks) and on nested inputs with
        # MultiWorkerMirroredStrategy. Every weight of this model exists after __init__ and `optimizer.build`.
        if self.built and (self.optimizer is None or self.optimizer.built):
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    @property
    def metrics(self):
        return [self.loss_tracker, self.hinge_tracker, self.gor_tracker, self.nonfinite_tracker]

    def _step_seed(self):
        replica = tf.distribute.get_replica_context()
        replica_id = replica.replica_id_in_sync_group if replica is not None else 0
        step = tf.cast(self.optimizer.iterations, tf.int64)
        return tf.stack([tf.constant(self.seed, tf.int64), step * 1024 + tf.cast(replica_id, tf.int64)])

    def refresh_stage2_snapshot(self) -> None:
        """Copies the current item table into stage 2's snapshot (no-op when stage 2 reads the current table)."""
        if self.stage2_snapshot is not None:
            self.stage2_snapshot.assign(self.item_embedding.embeddings)

    def _stage2_table(self):
        """The item table stage 2 reads (a ``tf.Variable``): the current one, or the snapshot, refreshed here at
        steps 0, K, 2K, … when ``stage2_refresh_every`` = K > 0 (reads of it later in the step come after)."""
        if self.stage2_snapshot is None:
            return self.item_embedding.embeddings.value
        snapshot = self.stage2_snapshot.value
        if self.stage2_refresh_every > 0:

            def refresh():
                snapshot.assign(self.item_embedding.embeddings.value)
                return tf.constant(True)

            due = tf.equal(tf.math.floormod(self.optimizer.iterations, self.stage2_refresh_every), 0)
            tf.cond(due, refresh, lambda: tf.constant(False))
        return snapshot

    def select_negatives(self, data) -> tf.Tensor:
        """The batch's negatives [B, N] int32: given by the pipeline, or drawn by stage 2 (current embeddings unless
        ``stage2_refresh_every`` says otherwise)."""
        if "negatives" in data:
            return data["negatives"]
        candidates = data["candidates"]
        table = self._stage2_table()
        positive_vectors = tf.stop_gradient(self._geometry(tf.gather(table, data["positives"])))
        candidate_vectors = tf.stop_gradient(self._geometry(tf.gather(table, candidates)))
        picked = two_stage_select(
            positive_vectors,
            candidate_vectors,
            data["candidate_is_positive"],
            self.num_negatives,
            self._step_seed(),
            weight_cap=self.stage2_weight_cap,
            cutoff=self.stage2_cutoff,
        )
        return tf.gather(candidates, picked)

    def compute_losses(self, users, positives, negatives, training=True) -> dict:
        """All loss terms for a batch, as a dict of scalars (``total`` is what is minimised).

        Args:
            users: [B] int; positives: [B] int; negatives: [B, N] int.
        """
        u = self.user_vectors(users)
        p = self.item_vectors(positives)
        n = self.item_vectors(negatives)
        # the user's reference items never include the positive being predicted (masked, not filtered)
        d_pos = self.pair_distances(users, u, positives, p, exclude=positives)
        d_neg = self.pair_distances(users, u, negatives, n, exclude=positives)
        per_pair = L.triplet_hinge(d_pos, d_neg, self.margin)
        if self.use_rank_weight:
            per_pair = per_pair * L.warp_rank_weight(d_pos, d_neg, self.margin, self.n_items)
        hinge = tf.reduce_sum(per_pair)
        context = tf.distribute.get_replica_context()  # None in cross-replica context: a whole-batch call
        if context is not None and context.num_replicas_in_sync > 1:
            return self._distributed_losses(context, users, p, n, hinge, training)
        gor = L.global_orthogonal_regularization(p, n) if self.gor_weight > 0 else tf.constant(0.0)
        total = hinge + self.gor_weight * gor
        extra = self.extra_loss(users, u, positives, p, negatives, n)
        if extra is not None:
            total += extra
        if self.cov_loss_weight > 0:
            all_u, all_v = self.embeddings()
            total += self.cov_loss_weight * L.covariance_loss(tf.concat([all_v, all_u], axis=0))
        if self.feature_projection is not None:
            projections = self.feature_projection(training=training)
            total += self.feature_l2_reg * L.feature_loss(self.embeddings()[1], projections)
        return {"total": total, "hinge": hinge, "gor": gor}

    def _distributed_losses(self, context, users, p, n, hinge, training) -> dict:
        """`compute_losses` on one of R > 1 replicas, each holding B/R rows of the global batch of B.

        Keras all-reduces the replicas' gradients with SUM, so each replica's ``total`` is chosen such that the
        summed gradients are the gradient of the single-device objective on the global batch:

        * the hinge is a sum over rows: the replica's own sum;
        * GOR is a function of batch MEANS (m1, m2), not a sum: the replica computes it from the global moments
          (its own sums plus the other replicas', all-reduced, the latter without gradient), undivided: the
          replicas' gradients then add up to exactly ∇ GOR(global batch);
        * terms over whole tables (covariance, CML+F feature loss) are the same on every replica: divided by R.

        ``hinge`` and ``gor`` are returned for the GLOBAL batch (for logging; identical on every replica).
        """
        replicas = context.num_replicas_in_sync
        dtype = hinge.dtype
        local = [hinge, tf.cast(tf.shape(users)[0], dtype)]
        if self.gor_weight > 0:
            dots = tf.reduce_sum(p[:, None, :] * n, axis=-1)  # [b, N]
            local += [tf.reduce_sum(dots), tf.reduce_sum(tf.square(dots)), tf.cast(tf.size(dots), dtype)]
        local = tf.stack(local)
        global_ = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(local))
        # the global sums, with the gradient of this replica's own part
        summed = local + tf.stop_gradient(global_ - local)
        total = hinge
        gor = tf.constant(0.0, dtype)
        if self.gor_weight > 0:
            m1, m2 = summed[2] / summed[4], summed[3] / summed[4]
            d = tf.cast(tf.shape(p)[-1], dtype)
            gor = tf.square(m1) + tf.nn.relu(m2 - 1.0 / d)
            total += self.gor_weight * gor
        if self.cov_loss_weight > 0:
            all_u, all_v = self.embeddings()
            total += self.cov_loss_weight * L.covariance_loss(tf.concat([all_v, all_u], axis=0)) / replicas
        if self.feature_projection is not None:
            projections = self.feature_projection(training=training)
            total += self.feature_l2_reg * L.feature_loss(self.embeddings()[1], projections) / replicas
        # the global objective's value, for logging: Σ hinge + λ·GOR + table terms (counted once)
        loss = tf.stop_gradient(global_[0] + (total - hinge))
        return {"total": total, "hinge": global_[0], "gor": gor, "loss": loss, "batch": global_[1]}

    def train_step(self, data):
        users, positives = data["users"], data["positives"]
        negatives = self.select_negatives(data)
        with tf.GradientTape() as tape:
            terms = self.compute_losses(users, positives, negatives, training=True)
        variables = self.trainable_variables
        gradients = tape.gradient(terms["total"], variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        batch = terms.get("batch", tf.cast(tf.shape(users)[0], terms["total"].dtype))
        self.loss_tracker.update_state(terms.get("loss", terms["total"]) / batch)
        self.hinge_tracker.update_state(terms["hinge"] / batch)
        self.gor_tracker.update_state(terms["gor"])
        self.nonfinite_tracker.update_state(terms.get("loss", terms["total"]), self.optimizer.iterations)
        return self._step_outputs()

    def _step_outputs(self) -> dict:
        outputs = {m.name: m.result() for m in self.metrics}
        strategy = tf.distribute.get_strategy()
        multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        if multi_worker and strategy.extended._in_multi_worker_mode():
            # Keras reduces multi-worker step outputs with strategy.reduce(MEAN, axis=0), which rejects scalars
            outputs = {name: tf.reshape(value, [1]) for name, value in outputs.items()}
        return outputs

    def test_step(self, data):
        users, positives = data["users"], data["positives"]
        terms = self.compute_losses(users, positives, self.select_negatives(data), training=False)
        batch = terms.get("batch", tf.cast(tf.shape(users)[0], terms["total"].dtype))
        self.loss_tracker.update_state(terms.get("loss", terms["total"]) / batch)
        self.hinge_tracker.update_state(terms["hinge"] / batch)
        self.gor_tracker.update_state(terms["gor"])
        return self._step_outputs()

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
            "gor_weight": self.gor_weight,
            "use_rank_weight": self.use_rank_weight,
            "cov_loss_weight": self.cov_loss_weight,
            "init_stddev": self.init_stddev,
            "clip_norm": self.clip_norm,
            "feature_l2_reg": self.feature_l2_reg,
            "seed": self.seed,
        }


class RelationalModel(MetricModel):
    """A `MetricModel` whose score goes through a per-pair relation r(u, v): ``−‖u + r(u, v) − v‖²``.

    Holds what the relational models share: memory matrices (key K [d, M], slots Mem [M, d], initialised
    N(0, 1/d) as the reference code) and the users' reference items (a fixed [n_users, P] table built once from the
    training CSR, see `cml_tf.models.relations.reference_items`).
    """

    relational = True

    def _memory(self, num_memories: int, name: str = "memory") -> tuple:
        """Creates K [d, M] and Mem [M, d] (trainable, seeded)."""
        stddev = 1.0 / np.sqrt(self.embedding_dim)
        keys = self.add_weight(
            shape=(self.embedding_dim, num_memories),
            initializer=keras.initializers.RandomNormal(stddev=stddev, seed=self.seed + 2),
            name=f"{name}_keys",
        )
        memories = self.add_weight(
            shape=(num_memories, self.embedding_dim),
            initializer=keras.initializers.RandomNormal(stddev=stddev, seed=self.seed + 3),
            name=f"{name}_slots",
        )
        return keys, memories

    def _reference_table(self, train, max_num_prefs: int) -> None:
        """The users' reference items: ``self.reference_ids`` [n_users, P] int32, ``self.reference_valid`` bool."""
        from cml_tf.models.relations import reference_items

        if train is None:
            raise ValueError(f"{type(self).__name__} needs the training interactions (train=...)")
        ids, valid = reference_items(train, max_num_prefs, self.seed)
        self.max_num_prefs = int(max_num_prefs)
        self.reference_ids = tf.constant(ids)
        self.reference_valid = tf.constant(valid)

    def references(self, users, exclude=None) -> tuple[tf.Tensor, tf.Tensor]:
        """([b, P, d] reference item vectors, [b, P] bool mask) of users, ``exclude`` [b] masked out."""
        from cml_tf.models.relations import reference_mask

        ids = tf.gather(self.reference_ids, users)
        mask = reference_mask(tf.gather(self.reference_valid, users), ids, exclude)
        return self.item_vectors(ids), mask
