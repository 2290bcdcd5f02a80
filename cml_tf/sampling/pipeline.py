"""tf.data pipelines of training batches for each sampler.

An element is a dict of tensors consumed by `CML.train_step`:

* every sampler: ``users`` [B] int32, ``positives`` [B] int32 — a batch of training pairs;
* ``uniform`` / ``popular``: ``negatives`` [B, N] int32, drawn here from each user's non-positives;
* ``side_info``: ``negatives`` [B, N] int32, drawn here among the items sharing a group (genre, tag) with the
  positive (`cml_tf.sampling.side_info_sampler.SideInfoSampler`; needs ``item_groups``);
* ``2stage``: ``candidates`` [C] int32 (stage 1, sorted ascending) and ``candidate_is_positive`` [B, C] bool;
  stage 2 runs in the training step on the current embeddings. With ``candidate_groups`` = R > 1 (one group per
  replica of a distributed run) ``candidates`` is [R, C]: row block r of the batch (B/R rows) has its own set.
* ``softmax``: ``positive_log_q`` [B] (the positive's own logit), ``candidate_log_q`` [C], ``negative_log_q``
  [B, N] and, with the in-batch pool, ``batch_is_positive`` [B, B] bool and ``batch_log_q`` [B, B] (row i's log q of
  the batch's positive k): log E_i(j), the expected times item j enters row i's pool (`TrainingStream._pool_log_q`).

Pairs are shuffled per epoch by a stateless permutation seeded by (seed, epoch); every random draw for batch g is
seeded by (seed, g). So the stream is a pure function of (data, config, seed): the same seed gives the same batches,
parallel map calls cannot reorder or duplicate them, and a run resumed at step s sees exactly the batches
s, s+1, … that the uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from cml_tf.sampling import negatives
from cml_tf.sampling.side_info_sampler import SideInfoSampler


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """What to draw for each batch.

    Attributes:
        sampler: 'uniform', 'popular', '2stage' or 'side_info'.
        batch_size: positive pairs per batch (per replica when distributed).
        num_negatives: |N_ij|.
        num_candidates: C, the 2-stage candidate set size.
        beta: popularity exponent β.
        popularity_smoothing: added to item counts before ^β (0 = the original's behaviour).
        popularity_uniform_mix: ε, popular and 2-stage draw from (1 − ε)·popularity^β + ε·uniform (0 = off).
        dns_k: dns: the uniform draws per negative the training step picks the hardest of.
        softmax: the batch carries what the sampled softmax loss needs: the log q of its pool's items (the log
            expected number of times the item enters the ROW's pool of negatives, `TrainingStream._pool_log_q`: the
            sampling-bias correction), and for the in-batch pool which batch positives are positives of each row's
            user.
        in_batch: softmax only: the batch's positives join the pool of negatives (``in_batch`` sampler: always).
        batch_distinct: popular only: the batch's B·N negatives are distinct items, drawn successively (without
            replacement over the whole batch) by the sampler's weights, and a draw that is a positive of its row's user
            is replaced by an exact draw from the user's complement: the original popular sampler's
            ``np.random.choice(size=(B, N), replace=False, p)`` followed by its redraw of positives.
    """

    sampler: str = "2stage"
    batch_size: int = 256
    num_negatives: int = 1
    num_candidates: int = 2000
    beta: float = 1.0
    popularity_smoothing: float = 1.0
    popularity_uniform_mix: float = 0.0
    batch_distinct: bool = False
    dns_k: int = 8
    softmax: bool = False
    in_batch: bool = False

    def validate(self, n_items: int, num_pairs: int) -> None:
        """Raises ValueError naming the flag for inconsistent values."""
        if self.sampler not in negatives.SAMPLERS:
            raise ValueError(
                f"--sampler: unknown sampler {self.sampler!r}; expected one of {', '.join(negatives.SAMPLERS)}"
            )
        if self.batch_size <= 0:
            raise ValueError(f"--batch_size must be positive, got {self.batch_size}")
        if self.batch_size > num_pairs:
            raise ValueError(f"--batch_size={self.batch_size} exceeds the {num_pairs} training pairs")
        if self.num_negatives <= 0:
            raise ValueError(f"--num_negatives must be positive, got {self.num_negatives}")
        if self.sampler == "2stage":
            if not 0 < self.num_candidates <= n_items:
                raise ValueError(f"--num_candidates must be in [1, {n_items}] (the catalog), got {self.num_candidates}")
            if self.num_negatives > self.num_candidates:
                raise ValueError(
                    f"--num_negatives={self.num_negatives} exceeds --num_candidates={self.num_candidates}: "
                    "2-stage draws negatives without replacement among the candidates"
                )
        if self.num_negatives >= n_items:
            raise ValueError(f"--num_negatives={self.num_negatives} must be below the {n_items} items")
        if self.beta < 0:
            raise ValueError(f"--beta must be >= 0, got {self.beta}")
        if self.sampler == "dns" and self.dns_k < 1:
            raise ValueError(f"--dns_k must be positive, got {self.dns_k}")
        if self.popularity_smoothing < 0:
            raise ValueError(f"--popularity_smoothing must be >= 0, got {self.popularity_smoothing}")
        if not 0 <= self.popularity_uniform_mix <= 1:
            raise ValueError(f"--popularity_uniform_mix must be in [0, 1], got {self.popularity_uniform_mix}")


class TrainingStream:
    """Builds the batch stream for one training matrix and sampler spec.

    Args:
        train: [n_users, n_items] scipy CSR of training positives.
        spec: the sampler spec.
        seed: the run's seed.
        candidate_groups: 2-stage only: independent stage-1 candidate sets per batch, one per block of
            ``batch_size / candidate_groups`` rows (a distributed run gives each replica its own set).
        item_groups: side_info only: [n_items, G] sparse 0/1 item groups (genres, tags).
    """

    def __init__(
        self,
        train: sp.csr_matrix,
        spec: SamplerSpec,
        seed: int = 0,
        candidate_groups: int = 1,
        item_groups: sp.spmatrix | None = None,
    ):
        if candidate_groups < 1 or spec.batch_size % candidate_groups:
            raise ValueError(f"--batch_size={spec.batch_size} must be divisible by the {candidate_groups} replicas")
        self.candidate_groups = int(candidate_groups)
        train = sp.csr_matrix(train)
        train.sort_indices()
        self.spec = spec
        self.seed = int(seed)
        self.n_users, self.n_items = train.shape
        self.num_pairs = int(train.nnz)
        spec.validate(self.n_items, self.num_pairs)
        self.batches_per_epoch = self.num_pairs // spec.batch_size
        self.users = tf.constant(np.repeat(np.arange(self.n_users, dtype=np.int32), np.diff(train.indptr)))
        self.items = tf.constant(train.indices.astype(np.int32))
        self.positive_index = negatives.PositiveIndex(train)
        counts = np.bincount(train.indices, minlength=self.n_items)
        log_w = None
        if spec.sampler in ("popular", "2stage"):
            log_w = negatives.popularity_log_weights(
                counts, spec.beta, spec.popularity_smoothing, spec.popularity_uniform_mix
            )
        if spec.sampler == "side_info":
            if item_groups is None:
                raise ValueError("--sampler=side_info needs item side information (genres or tags)")
            self.negative_sampler = SideInfoSampler(train, item_groups)
        elif spec.sampler != "2stage":
            self.negative_sampler = negatives.NegativeSampler(train, log_w)  # dns, in_batch: uniform
            if spec.batch_distinct and spec.sampler == "popular":
                self.item_sampler = negatives.ItemSampler(log_w, self.n_items)
                drawable = self.item_sampler.num_drawable
                if spec.batch_size * spec.num_negatives > drawable:
                    raise ValueError(
                        f"--batch_distinct_negatives: --batch_size x --num_negatives = "
                        f"{spec.batch_size * spec.num_negatives} exceeds the {drawable} drawable items"
                    )
        else:
            self.item_sampler = negatives.ItemSampler(log_w, self.n_items)
            if spec.num_candidates > self.item_sampler.num_drawable:
                raise ValueError(
                    f"--num_candidates={spec.num_candidates} exceeds the {self.item_sampler.num_drawable} items with "
                    "non-zero popularity weight (raise --popularity_smoothing above 0)"
                )
        if spec.softmax:
            shared = self._shared_expected_counts(counts, log_w)
            self.shared_counts = tf.constant(shared)  # [n_items] float64
            with np.errstate(divide="ignore"):
                self.log_q = tf.constant(np.log(np.maximum(shared, 1e-30)).astype(np.float32))

    def _in_batch_pool(self) -> bool:
        """Whether the batch's positives join the softmax's pool of negatives."""
        return self.spec.in_batch or self.spec.sampler == "in_batch"

    def _shared_expected_counts(self, counts: np.ndarray, log_w: np.ndarray | None) -> np.ndarray:
        """[n_items] the row-independent part of `_pool_log_q`'s E_i(j): π_j + (B − 1)·c_j / (P − 1)."""
        spec = self.spec
        expected = np.zeros(self.n_items)
        if spec.sampler == "2stage":
            expected += np.exp(negatives.inclusion_log_probs(log_w, self.n_items, spec.num_candidates))
        if self._in_batch_pool():
            expected += (spec.batch_size - 1) * counts / max(self.num_pairs - 1, 1)
        return expected

    def _pool_log_q(self, users: tf.Tensor, positives: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
        """log E_i(j): the log expected number of times item j enters row i's pool of softmax negatives.

        Each sub-pool in use adds its expected count, for an item j that is not a positive of row i's user u (the
        only items the pool keeps; the softmax masks the others):

        * the 2stage candidates (shared by the batch): π_j, stage 1's inclusion probability of C without replacement;
        * the row's N per-row negatives (uniform, popular, side_info: drawn exactly from u's complement, only into
          row i's pool): N·q_j(i), q_j(i) the sampler's draw probability for the row (uniform 1 / (n − |P_u|),
          popular w_j / Σ_{k ∉ P_u} w_k, side_info P(j | u, positive); ``batch_distinct`` popular negatives are
          taken as the same complement draws, exact as B·N / n → 0);
        * the batch's positives (``--softmax_in_batch``, ``--sampler=in_batch``): the other B − 1 rows hold a uniform
          draw of the other P − 1 training pairs, so (B − 1)·c_j / (P − 1), c_j the item's training pairs.

        The positive's own logit takes E_i at the positive, the same sum as if it could be drawn for the row.

        Args:
            users: [B] int user of each row.
            positives: [B] int positive of each row.
            items: [B, M] int items of each row's pool.

        Returns:
            [B, M] float32 log expected counts (row-independent where no per-row sampler is in use).
        """
        spec = self.spec
        if spec.sampler in ("uniform", "popular"):
            per_draw = self.negative_sampler.draw_probs(users, items)
        elif spec.sampler == "side_info":
            per_draw = self.negative_sampler.draw_probs(users, positives, items)
        else:  # 2stage, in_batch: every sub-pool is shared by the batch
            return tf.gather(self.log_q, items)
        expected = tf.gather(self.shared_counts, items) + spec.num_negatives * per_draw
        return tf.cast(tf.math.log(tf.maximum(expected, 1e-30)), tf.float32)

    def _epoch_batches(self, epoch: tf.Tensor) -> tf.data.Dataset:
        perm = tf.random.experimental.stateless_shuffle(
            tf.range(self.num_pairs, dtype=tf.int64), seed=tf.stack([tf.constant(self.seed, tf.int64), epoch])
        )
        nb, bs = self.batches_per_epoch, self.spec.batch_size
        batches = tf.reshape(perm[: nb * bs], [nb, bs])
        steps = epoch * nb + tf.range(nb, dtype=tf.int64)
        return tf.data.Dataset.from_tensor_slices((steps, batches))

    def _make_batch(self, step: tf.Tensor, pair_ids: tf.Tensor) -> dict:
        spec = self.spec
        users = tf.gather(self.users, pair_ids)
        positives = tf.gather(self.items, pair_ids)
        seed = tf.stack([tf.constant(self.seed, tf.int64) + 1_000_003, step])
        out = {"users": users, "positives": positives}
        if spec.sampler == "2stage":
            groups = self.candidate_groups
            if groups == 1:
                # ascending, as candidate_mask's search needs
                candidates = self.item_sampler.sample_without_replacement(spec.num_candidates, seed, ordered=False)
                out["candidates"] = tf.cast(candidates, tf.int32)
                out["candidate_is_positive"] = self.positive_index.candidate_mask(users, candidates)
            else:
                blocks = tf.reshape(users, [groups, -1])
                sets, masks = [], []
                for g in range(groups):
                    group_seed = tf.random.experimental.stateless_fold_in(seed, g)
                    sets.append(
                        self.item_sampler.sample_without_replacement(spec.num_candidates, group_seed, ordered=False)
                    )
                    masks.append(self.positive_index.candidate_mask(blocks[g], sets[-1]))
                out["candidates"] = tf.cast(tf.stack(sets), tf.int32)  # [groups, C]
                out["candidate_is_positive"] = tf.concat(masks, axis=0)  # [B, C]
        elif spec.sampler == "side_info":
            negatives = self.negative_sampler.sample(users, positives, spec.num_negatives, seed)
            out["negatives"] = tf.cast(negatives, tf.int32)
        elif spec.sampler == "dns":
            pool = self.negative_sampler.sample(users, spec.num_negatives * spec.dns_k, seed)
            out["negative_pool"] = tf.reshape(tf.cast(pool, tf.int32), [-1, spec.num_negatives, spec.dns_k])
        elif spec.sampler == "in_batch":
            out["batch_is_positive"] = self.positive_index.contains(users[:, None], positives[None, :])  # [B, B]
            if not spec.softmax:
                out["negatives"] = self._in_batch(users, positives, out["batch_is_positive"], seed)
        else:
            negatives = self.negative_sampler.sample(users, spec.num_negatives, seed)
            if spec.batch_distinct and spec.sampler == "popular":
                negatives = self._batch_distinct(users, negatives, seed)
            out["negatives"] = tf.cast(negatives, tf.int32)
        if spec.softmax:
            if spec.in_batch and "batch_is_positive" not in out:
                out["batch_is_positive"] = self.positive_index.contains(users[:, None], positives[None, :])
            out["positive_log_q"] = self._pool_log_q(users, positives, positives[:, None])[:, 0]
            if "candidates" in out:  # 2stage: no per-row sub-pool, so row-independent: [C] (or [R, C])
                out["candidate_log_q"] = tf.gather(self.log_q, out["candidates"])
            if "negatives" in out:
                out["negative_log_q"] = self._pool_log_q(users, positives, out["negatives"])
            if "batch_is_positive" in out:
                batch = tf.broadcast_to(positives[None, :], tf.shape(out["batch_is_positive"]))
                out["batch_log_q"] = self._pool_log_q(users, positives, batch)
        return out

    def _in_batch(self, users, positives, batch_is_positive, seed) -> tf.Tensor:
        """[B, N] negatives drawn uniformly (with replacement) among the batch's positives that are not positives of
        the row's user; a row without any takes exact uniform draws from its user's complement."""
        allowed = ~batch_is_positive
        logits = tf.where(allowed, 0.0, -np.inf)
        seeds = tf.random.experimental.stateless_split(seed, 2)
        columns = tf.random.stateless_categorical(logits, self.spec.num_negatives, seeds[0], dtype=tf.int32)
        drawn = tf.gather(positives, tf.minimum(columns, tf.shape(positives)[0] - 1))  # a row with no column: any
        fallback = tf.cast(self.negative_sampler.sample(users, self.spec.num_negatives, seeds[1]), drawn.dtype)
        return tf.where(tf.reduce_any(allowed, axis=1, keepdims=True), drawn, fallback)

    def _batch_distinct(self, users: tf.Tensor, complement_draws: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """[B, N] distinct items drawn successively over the batch; where one is a positive of its row's user, the
        exact complement draw ``complement_draws`` [B, N] stands in (the original redraws it until it is not)."""
        shape = tf.shape(complement_draws)
        distinct = self.item_sampler.sample_without_replacement(
            self.spec.batch_size * self.spec.num_negatives, tf.random.experimental.stateless_fold_in(seed, 7)
        )
        distinct = tf.reshape(tf.cast(distinct, complement_draws.dtype), shape)
        rows = tf.broadcast_to(tf.cast(users, tf.int64)[:, None], shape)
        return tf.where(self.positive_index.contains(rows, distinct), complement_draws, distinct)

    def dataset(self, start_step: int = 0, num_steps: int | None = None) -> tf.data.Dataset:
        """The batch stream from global step ``start_step`` on (infinite unless ``num_steps`` is given).

        Args:
            start_step: first global batch index (resume point).
            num_steps: number of batches to yield; None repeats epochs forever.
        """
        nb = self.batches_per_epoch
        first_epoch, skip = divmod(int(start_step), nb)
        ds = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max).flat_map(self._epoch_batches).skip(skip)
        if num_steps is not None:
            ds = ds.take(int(num_steps))
        workers = input_parallelism()
        ds = ds.map(self._make_batch, num_parallel_calls=workers, deterministic=True)
        return ds.prefetch(2 * workers).with_options(input_options())


def input_parallelism() -> int:
    """Parallel batch builders: one per two CPU cores, 1 to 8 (the step itself needs the other cores)."""
    return int(min(8, max(1, (os.cpu_count() or 1) // 2)))


def input_options() -> tf.data.Options:
    """Deterministic order and fixed parallelism, with tf.data's autotuner off.

    On a 2-core machine the autotuner, in some runs and at some point of the run, settled into a configuration that
    made every training step wait: the 2-stage step then took 13 ms instead of 6.8 ms for the rest of the run (same
    model, data and seed; see experiments/BENCHMARKS.md). A batch costs
    about 2 ms to build, a step 5-7 ms, so one builder per two cores with a short prefetch queue keeps the step fed
    without competing with it for the cores.
    """
    options = tf.data.Options()
    options.deterministic = True
    options.autotune.enabled = False
    return options
