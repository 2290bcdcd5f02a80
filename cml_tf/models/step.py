"""The training step every model shares: negatives (given, or drawn by stage 2), the loss terms, the update.

`TrainingStep` is a mixin of `cml_tf.models.base.MetricModel` (which holds the tables and the scoring): one
``tf.function`` per step looks up the batch, runs stage 2 of the 2-stage sampler (`cml_tf.sampling.two_stage`) on
the CURRENT item embeddings when the batch carries candidates, computes the loss terms from `cml_tf.models.losses`
and applies the gradients. Only the looked-up rows get gradients (``tf.IndexedSlices``), so with the lazy
optimizers a step costs O(batch). Distributed, each replica computes its share of the global objective
(`TrainingStep._distributed_losses`).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from cml_tf.models import losses as L
from cml_tf.sampling.two_stage import two_stage_select

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


class TrainingStep:
    """`train_step` / `test_step` of a `MetricModel`, with stage 2 and the loss terms (see the module)."""

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
        """The batch's negatives [B, N] int32: given by the pipeline, the hardest of each DNS pool, or drawn by
        stage 2 (current embeddings unless ``stage2_refresh_every`` says otherwise)."""
        if "negatives" in data:
            return data["negatives"]
        if "negative_pool" in data:
            return self._hardest_of_pools(data["users"], data["positives"], data["negative_pool"])
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
            mask_opposite=self.stage2_mask_opposite,
            replacement=self.stage2_replacement,
            uniform_mix=self.stage2_uniform_mix,
        )
        return tf.gather(candidates, picked)

    def _hardest_of_pools(self, users, positives, pool) -> tf.Tensor:
        """DNS (Zhang et al. 2013): of each negative's k uniform draws ``pool`` [B, N, k], the one the current model
        scores highest (the closest to the user), [B, N]."""
        b, n, k = tf.shape(pool)[0], tf.shape(pool)[1], tf.shape(pool)[2]
        flat = tf.reshape(pool, [b, n * k])
        u = tf.stop_gradient(self.user_vectors(users))
        d = self.pair_distances(users, u, flat, tf.stop_gradient(self.item_vectors(flat)), exclude=positives)
        closest = tf.argmin(tf.reshape(d, [b, n, k]), axis=-1, output_type=tf.int32)
        return tf.gather(pool, closest, batch_dims=2)

    def shared_distances(self, users, u, items, exclude=None) -> tf.Tensor:
        """``‖u + r − v‖²`` of every batch user x every item of a pool shared by the batch: [B, M] (CML: one
        matmul, no [B, M, d] tensor; the relational models need r(u, v) per pair)."""
        if not self.relational:
            return L.squared_distance_matrix(u, self.item_vectors(items))
        b, m = tf.shape(users)[0], tf.shape(items)[0]
        grid = tf.broadcast_to(items[None], [b, m])
        return self.pair_distances(users, u, grid, self.item_vectors(grid), exclude=exclude)

    def compute_softmax_losses(self, data, training=True) -> dict:
        """The loss terms with the sampled softmax (`cml_tf.models.losses.sampled_softmax`) over the batch's pool of
        negatives: the stage-1 candidates and the in-batch positives (shared by the batch, masked where they are
        positives of the row's user) and the per-row negatives, each corrected by its ``log q``: ``candidate_log_q``
        [C], ``batch_log_q`` [B, B] (row i's, of the batch's positive k), ``negative_log_q`` [B, N]; the positive's
        logit by ``positive_log_q`` [B] (`cml_tf.sampling.pipeline.TrainingStream._pool_log_q`)."""
        users, positives = data["users"], data["positives"]
        u = self.user_vectors(users)
        p = self.item_vectors(positives)
        d_pos = self.pair_distances(users, u, positives, p, exclude=positives)
        shared = (
            [(data["candidates"], data["candidate_is_positive"], data["candidate_log_q"])]
            if "candidates" in data
            else []
        )
        if "batch_is_positive" in data:
            shared.append((positives, data["batch_is_positive"], data["batch_log_q"]))
        distances, excluded, log_q = [], [], []
        b = tf.shape(users)[0]
        if shared:
            items = tf.concat([s[0] for s in shared], axis=0)  # [M]
            distances.append(self.shared_distances(users, u, items, exclude=positives))
            excluded.append(tf.concat([s[1] for s in shared], axis=1))
            # each sub-pool's log q: [m] (the same for every row) or [B, m] (row-dependent)
            log_q.append(tf.concat([tf.broadcast_to(s[2], tf.shape(s[1])) for s in shared], axis=1))
        negatives = data.get("negatives", tf.zeros([b, 0], tf.int32))
        n = self.item_vectors(negatives)
        if "negatives" in data:
            distances.append(self.pair_distances(users, u, negatives, n, exclude=positives))
            excluded.append(tf.zeros_like(distances[-1], tf.bool))
            log_q.append(data["negative_log_q"])
        temperature = tf.exp(self.log_temperature) if self.log_temperature is not None else self.temperature
        per_pair = L.sampled_softmax(
            d_pos,
            tf.concat(distances, axis=1),
            temperature,
            data["positive_log_q"],
            tf.concat(log_q, axis=1),
            tf.concat(excluded, axis=1),
        )
        ranking = tf.reduce_sum(per_pair)
        gor = tf.constant(0.0)
        if self.gor_weight > 0:
            dots = [tf.matmul(p, self.item_vectors(items), transpose_b=True)] if shared else []
            dots += [tf.reduce_sum(p[:, None, :] * n, axis=-1)] if "negatives" in data else []
            gor = L.orthogonality_of_dots(tf.concat(dots, axis=1), self.embedding_dim)
        total = ranking + self.gor_weight * gor + self._other_terms(users, u, positives, p, negatives, n, training)
        return {"total": total, "hinge": ranking, "gor": gor}

    def _other_terms(self, users, u, positives, p, negatives, n, training) -> tf.Tensor:
        """A model's own loss terms and the terms over whole tables (covariance, CML+F's feature loss)."""
        total = tf.constant(0.0)
        extra = self.extra_loss(users, u, positives, p, negatives, n)
        if extra is not None:
            total += extra
        if self.cov_loss_weight > 0:
            all_u, all_v = self.embeddings()
            total += self.cov_loss_weight * L.covariance_loss(tf.concat([all_v, all_u], axis=0))
        if self.feature_projection is not None:
            projections = self.feature_projection(training=training)
            total += self.feature_l2_reg * L.feature_loss(self.embeddings()[1], projections)
        return total

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
        per_pair = L.triplet_hinge(d_pos, d_neg, self.margin, self.hinge)
        if self.use_rank_weight:
            per_pair = per_pair * L.warp_rank_weight(d_pos, d_neg, self.margin, self.n_items)
        hinge = tf.reduce_sum(per_pair)
        context = tf.distribute.get_replica_context()  # None in cross-replica context: a whole-batch call
        if context is not None and context.num_replicas_in_sync > 1:
            return self._distributed_losses(context, users, p, n, hinge, training)
        gor = L.global_orthogonal_regularization(p, n) if self.gor_weight > 0 else tf.constant(0.0)
        total = hinge + self.gor_weight * gor + self._other_terms(users, u, positives, p, negatives, n, training)
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

    def _loss_terms(self, data, negatives, training: bool) -> dict:
        """`compute_softmax_losses` with --loss=softmax, else `compute_losses` on ``negatives``."""
        if self.loss == "softmax":
            return self.compute_softmax_losses(data, training=training)
        return self.compute_losses(data["users"], data["positives"], negatives, training=training)

    # ------------------------------------------------------------------------------ the fused softmax step
    def _fused_softmax(self, data) -> bool:
        """Whether this step's softmax can run as `_fused_softmax_gradients` (decided when the step is traced): the
        plain CML score with shared candidates only (optionally the in-batch pool), no GOR or table terms, one
        replica, and the two tables (and a learned log τ) as the only trainable variables."""
        if self.loss != "softmax" or not self._plain_scores() or "negatives" in data or "candidates" not in data:
            return False
        if data["candidates"].shape.rank != 1 or self.gor_weight > 0:
            return False
        if self.cov_loss_weight > 0 or self.feature_projection is not None:
            return False
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync > 1:
            return False
        expected = {id(self.user_embedding.embeddings), id(self.item_embedding.embeddings)}
        if self.log_temperature is not None:
            expected.add(id(self.log_temperature))
        trainable = self.trainable_variables
        return len(trainable) == len(expected) and {id(v) for v in trainable} == expected

    def _plain_scores(self) -> bool:
        """True where the score is ``−‖u − v‖²`` of the two tables' rows in the model's geometry (`MetricModel`)."""
        return False

    def _fused_softmax_gradients(self, data) -> tuple[list, dict]:
        """`compute_softmax_losses`' value and gradients, computed on the batch's looked-up rows by one XLA-compiled
        function (`_softmax_on_rows`), the gradients returned as row slices of the tables (``tf.IndexedSlices``).

        The same loss as the generic path (the same `cml_tf.models.losses` functions on the same rows; only the
        floating-point rounding of the compiled kernels differs); the tape, the per-op dispatch and the [B, M]
        intermediates of the generic path are what it saves.

        Returns:
            (gradients aligned with ``self.trainable_variables``, {"total", "hinge", "gor"}).
        """
        users, positives = data["users"], data["positives"]
        pools = [(data["candidates"], data["candidate_is_positive"], data["candidate_log_q"])]
        if "batch_is_positive" in data:
            pools.append((positives, data["batch_is_positive"], data["batch_log_q"]))
        items = tf.concat([pool[0] for pool in pools], axis=0)  # [M]
        user_table = self.user_embedding.embeddings.value
        item_table = self.item_embedding.embeddings.value
        if self._softmax_on_rows_fn is None:
            self._softmax_on_rows_fn = tf.function(self._softmax_on_rows, jit_compile=True)
        log_temperature = (
            self.log_temperature.value
            if self.log_temperature is not None
            else tf.constant(float(np.log(self.temperature)), tf.float32)
        )
        history = ()
        if self.history_ids is not None:  # the user tower: its history rows are rows of the item table too
            history_ids = tf.gather(self.history_ids, users)  # [B, P]
            history = (tf.gather(item_table, history_ids), tf.gather(self.history_valid, users))
        total, gradients = self._softmax_on_rows_fn(
            tf.gather(user_table, users),
            tf.gather(item_table, positives),
            tf.gather(item_table, items),
            [pool[1] for pool in pools],
            data["positive_log_q"],
            [pool[2] for pool in pools],
            tf.convert_to_tensor(log_temperature),
            *history,
        )
        g_user, g_positive, g_items, g_log_temperature = gradients[:4]
        item_rows, item_ids = [g_positive, g_items], [positives, items]
        if history:
            item_rows.append(tf.reshape(gradients[4], [-1, self.embedding_dim]))
            item_ids.append(tf.reshape(history_ids, [-1]))
        by_table = {
            id(self.user_embedding.embeddings): tf.IndexedSlices(g_user, users, tf.shape(user_table, tf.int32)),
            id(self.item_embedding.embeddings): tf.IndexedSlices(
                tf.concat(item_rows, axis=0), tf.concat(item_ids, axis=0), tf.shape(item_table, tf.int32)
            ),
        }
        if self.log_temperature is not None:
            by_table[id(self.log_temperature)] = g_log_temperature
        gradients = [by_table[id(v)] for v in self.trainable_variables]
        return gradients, {"total": total, "hinge": total, "gor": tf.constant(0.0)}

    def _softmax_on_rows(
        self,
        user_rows,
        positive_rows,
        pool_rows,
        excluded,
        positive_log_q,
        log_q,
        log_temperature,
        history_rows=None,
        history_valid=None,
    ):
        """The summed sampled softmax of a batch from its raw rows, and its gradients with respect to them.

        Args:
            user_rows: [B, d] raw user rows; positive_rows: [B, d]; pool_rows: [M, d] the shared pool's rows.
            excluded: list of [B, m_k] bool, the pool's parts (masked: positives of the row's user).
            positive_log_q: [B]; log_q: list of [m_k] or [B, m_k], each part's log q.
            log_temperature: scalar log τ.
            history_rows: with the user tower, [B, P, d] raw rows of the users' history items, and history_valid
                [B, P] bool their real slots (`MetricModel.tower`); None without.

        Returns:
            (loss scalar, [d loss / d user_rows, d loss / d positive_rows, d loss / d pool_rows, d loss / d log τ]
            and, with the tower, d loss / d history_rows).
        """
        inputs = [user_rows, positive_rows, pool_rows, log_temperature]
        if history_rows is not None:
            inputs.append(history_rows)
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            if history_rows is None:
                u = self._geometry(user_rows)
            else:
                u = self.tower(user_rows, history_rows, history_valid)
            d_pos = L.squared_distances(u, self._geometry(positive_rows))
            distances = L.squared_distance_matrix(u, self._geometry(pool_rows))
            log_q = [tf.broadcast_to(q, tf.shape(x)) for q, x in zip(log_q, excluded)]  # [m] or [B, m] -> [B, m]
            per_pair = L.sampled_softmax(
                d_pos,
                distances,
                tf.exp(log_temperature),
                positive_log_q,
                tf.concat(log_q, axis=1),
                tf.concat(excluded, axis=1),
            )
            total = tf.reduce_sum(per_pair)
        return total, tape.gradient(total, inputs)

    def train_step(self, data):
        users = data["users"]
        variables = self.trainable_variables
        if self._fused_softmax(data):
            gradients, terms = self._fused_softmax_gradients(data)
        else:
            negatives = None if self.loss == "softmax" else self.select_negatives(data)  # no gradient: outside the tape
            with tf.GradientTape() as tape:
                terms = self._loss_terms(data, negatives, training=True)
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
        users = data["users"]
        negatives = None if self.loss == "softmax" else self.select_negatives(data)
        terms = self._loss_terms(data, negatives, training=False)
        batch = terms.get("batch", tf.cast(tf.shape(users)[0], terms["total"].dtype))
        self.loss_tracker.update_state(terms.get("loss", terms["total"]) / batch)
        self.hinge_tracker.update_state(terms["hinge"] / batch)
        self.gor_tracker.update_state(terms["gor"])
        return self._step_outputs()
