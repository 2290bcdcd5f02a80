"""Data-parallel training with ``tf.distribute``: strategy construction, the distributed input, sharded evaluation.

``--strategy``:

* ``default``: one device, no distribution (the fast path; nothing here is used).
* ``mirrored``: `tf.distribute.MirroredStrategy` over the local devices (GPUs; or logical CPU devices in tests).
* ``multi_worker``: `tf.distribute.MultiWorkerMirroredStrategy`, configured by the ``TF_CONFIG`` environment
  variable (validated here with errors that say what is wrong).

Semantics (chosen so that a distributed run IS the single-device run at the same global batch, computed in
parallel; results do not depend on the number of replicas):

* Input: every input pipeline (one per worker) builds the single-device `TrainingStream` at the GLOBAL batch size B
  and hands each of its local replicas its slice of rows ``[r·B/R, (r+1)·B/R)`` of every global batch. The
  pairs, the uniform/popular negatives and the 2-stage stage-1 candidate set are therefore exactly the ones the
  single-device run draws; the 2-stage candidate set is shared by all replicas of a global batch (one set per
  batch, as in the paper), not drawn per replica.
* Stage 2 runs per replica on the current (replicated) embeddings, seeded by (step, replica id): same
  distribution as single-device, different draws. With uniform/popular samplers a distributed run equals the
  single-device run up to float summation order.
* Losses: the hinge is a SUM over the batch, Keras all-reduces gradients with SUM, so per-replica sums add up to
  the global sum. GOR is computed from cross-replica moments (see `CML.compute_losses`), terms over whole tables
  (covariance, CML+F feature loss) are divided by the number of replicas.

Cost: each worker's input pipeline builds the whole global batch (R_local slices are kept, the other workers'
rows are dropped), so the input work per worker equals the single-device input work — it does not shrink with
more workers.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import tensorflow as tf

from cml_tf.evaluation.evaluator import result_dict
from cml_tf.sampling.pipeline import input_options

STRATEGIES = ("default", "mirrored", "multi_worker")


class DistributeError(ValueError):
    """A strategy that cannot be built as configured (e.g. a bad ``TF_CONFIG``)."""


# --------------------------------------------------------------------------------------------------- strategy
def parse_tf_config(environ=None) -> dict:
    """The validated ``TF_CONFIG`` of a multi-worker run.

    Returns:
        the parsed dict (``cluster``, ``task``).

    Raises:
        DistributeError: with what is missing or inconsistent.
    """
    environ = os.environ if environ is None else environ
    raw = environ.get("TF_CONFIG")
    example = (
        'TF_CONFIG=\'{"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", "index": 0}}\''
    )
    if not raw:
        raise DistributeError(f"--strategy=multi_worker needs the TF_CONFIG environment variable, e.g. {example}")
    try:
        tf_config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise DistributeError(f"TF_CONFIG is not valid JSON ({e}): {raw!r}") from None
    if not isinstance(tf_config, dict):
        raise DistributeError(f"TF_CONFIG must be a JSON object with 'cluster' and 'task', got {raw!r}")
    cluster, task = tf_config.get("cluster"), tf_config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise DistributeError(f"TF_CONFIG has no 'cluster' object, e.g. {example}")
    unknown = sorted(set(cluster) - {"chief", "worker", "evaluator"})
    if unknown:
        raise DistributeError(
            f"TF_CONFIG cluster has job(s) {', '.join(unknown)}; MultiWorkerMirroredStrategy takes only 'chief' and "
            "'worker' (parameter servers are not supported)"
        )
    if not cluster.get("worker") and not cluster.get("chief"):
        raise DistributeError("TF_CONFIG cluster lists no 'worker' (or 'chief') addresses")
    seen = set()
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses:
            raise DistributeError(
                f"TF_CONFIG cluster[{job!r}] must be a non-empty list of 'host:port', got {addresses!r}"
            )
        if job == "chief" and len(addresses) != 1:
            raise DistributeError(f"TF_CONFIG cluster['chief'] must list exactly one address, got {addresses!r}")
        for address in addresses:
            host, _, port = str(address).rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise DistributeError(f"TF_CONFIG cluster[{job!r}]: {address!r} is not 'host:port'")
            if address in seen:
                raise DistributeError(f"TF_CONFIG cluster: address {address!r} is listed twice")
            seen.add(address)
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise DistributeError(f"TF_CONFIG has no 'task' with 'type' and 'index', e.g. {example}")
    job, index = task["type"], task["index"]
    if job not in cluster or job == "evaluator":
        raise DistributeError(
            f"TF_CONFIG task type {job!r} is not a training job of the cluster ({', '.join(cluster)})"
        )
    if not isinstance(index, int) or not 0 <= index < len(cluster[job]):
        raise DistributeError(
            f"TF_CONFIG task index {index!r} is out of range for the {len(cluster[job])} {job!r} address(es)"
        )
    return tf_config


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy for ``--strategy`` (create it before any other TensorFlow work: the
    multi-worker strategy configures the runtime's collective ops, which must happen at program start)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        parse_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise DistributeError(f"--strategy: unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}")


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return bool(getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)())


def task_info(strategy: tf.distribute.Strategy) -> tuple[str | None, int | None]:
    """(task type, task id) of this process; (None, None) outside a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not is_multi_worker(strategy):
        return None, None
    return resolver.task_type, resolver.task_id


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run directory: the 'chief' task, else worker 0, else True (one process)."""
    task_type, task_id = task_info(strategy)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


def write_dir(model_dir: str, strategy: tf.distribute.Strategy) -> str:
    """Where this process writes: ``model_dir`` on the chief, ``model_dir/workertemp_<id>`` on the others.

    The Keras multi-worker checkpointing pattern: every worker must take part in saving (checkpoints may read
    synchronised variables), but only the chief's copy is kept.
    """
    if is_chief(strategy):
        return model_dir
    task_type, task_id = task_info(strategy)
    return os.path.join(model_dir, f"{task_type}temp_{task_id}")


def remove_worker_dir(path: str, keep: tuple[str, ...] = ("embeddings",)) -> None:
    """Deletes a non-chief worker's temporary run dir, except ``keep`` (its final embeddings, to compare)."""
    if not os.path.isdir(path):
        return
    for name in os.listdir(path):
        if name in keep:
            continue
        p = os.path.join(path, name)
        shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)


def cross_worker_sum(strategy: tf.distribute.Strategy, per_replica: list[np.ndarray]) -> np.ndarray:
    """Σ over every replica of every worker of ``per_replica[local replica]`` (float64 vectors of one shape).

    A collective: every worker must call it, in the same order.
    """
    values = [np.asarray(v, np.float64) for v in per_replica]
    if strategy.num_replicas_in_sync == 1:
        return values[0]
    local = strategy.extended.worker_devices
    # replica ids of this worker's local replicas, in the order of ``worker_devices``
    first = _first_local_replica(strategy)

    def value_fn(ctx):
        return tf.constant(values[ctx.replica_id_in_sync_group - first])

    distributed = strategy.experimental_distribute_values_from_function(value_fn)
    assert len(per_replica) == len(local), (len(per_replica), len(local))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, distributed, axis=None).numpy()


def _first_local_replica(strategy: tf.distribute.Strategy) -> int:
    local = len(strategy.extended.worker_devices)
    _, task_id = task_info(strategy)
    task_type, _ = task_info(strategy)
    if task_type is None:
        return 0
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    # MultiWorkerMirroredStrategy numbers the chief first, then the workers by index
    rank = task_id + (1 if (task_type == "worker" and "chief" in cluster) else 0)
    return rank * local


def agree(strategy: tf.distribute.Strategy, values, what: str) -> None:
    """Raises RunError-like ValueError unless every worker holds the same integer ``values`` (a collective)."""
    if not is_multi_worker(strategy):
        return
    v = np.asarray(values, np.float64).ravel()
    local = len(strategy.extended.worker_devices)
    total = cross_worker_sum(strategy, [v] + [np.zeros_like(v)] * (local - 1))
    squares = cross_worker_sum(strategy, [v * v] + [np.zeros_like(v)] * (local - 1))
    workers = strategy.num_replicas_in_sync // local
    # all equal <=> variance 0
    if not np.allclose(squares * workers, total * total):
        raise DistributeError(
            f"the workers disagree on {what} (this worker: {v.tolist()}, mean over workers: "
            f"{(total / workers).tolist()}); with --strategy=multi_worker every worker must see the same run "
            "directory state — use a --model_dir on a shared file system (or start every worker afresh)"
        )


# --------------------------------------------------------------------------------------------------- input
def replica_slices(element: dict, first_replica: int, num_local: int, num_replicas: int) -> tf.data.Dataset:
    """One global batch -> ``num_local`` per-replica elements (rows of replicas first_replica, …, in order).

    Row-aligned tensors (``users``, ``positives``, ``negatives``, ``candidate_is_positive``) are cut into
    ``num_replicas`` equal row blocks; 2-stage ``candidates`` come as one set per replica ([num_replicas, C], see
    `TrainingStream`'s ``candidate_groups``) and each replica takes its own; a single set [C] would be shared.
    """
    sliced = {}
    batch = tf.shape(element["users"])[0]
    for key, value in element.items():
        if key == "candidates":
            if value.shape.rank == 2:
                sliced[key] = value[first_replica : first_replica + num_local]
            else:
                sliced[key] = tf.repeat(value[None], num_local, axis=0)
            continue
        blocks = tf.reshape(value, tf.concat([[num_replicas, batch // num_replicas], tf.shape(value)[1:]], 0))
        sliced[key] = blocks[first_replica : first_replica + num_local]
    return tf.data.Dataset.from_tensor_slices(sliced)


def distributed_dataset(strategy: tf.distribute.Strategy, stream, start_step: int = 0, num_steps: int | None = None):
    """The distributed training input: each replica gets its slice of the global batches of ``stream``.

    Args:
        strategy: the strategy (its scope need not be active).
        stream: the single-device `TrainingStream` at the GLOBAL batch size (divisible by the replicas).
        start_step: first global step (resume point).
        num_steps: global steps to yield (None: forever).
    """
    replicas = strategy.num_replicas_in_sync
    if stream.spec.batch_size % replicas:
        raise DistributeError(f"--batch_size={stream.spec.batch_size} must be divisible by the {replicas} replicas")

    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        num_local = ctx.num_replicas_in_sync // ctx.num_input_pipelines
        first = ctx.input_pipeline_id * num_local
        ds = stream.dataset(start_step=start_step, num_steps=num_steps)
        ds = ds.flat_map(lambda e: replica_slices(e, first, num_local, ctx.num_replicas_in_sync))
        return ds.prefetch(2 * num_local).with_options(input_options())

    return strategy.distribute_datasets_from_function(dataset_fn)


# --------------------------------------------------------------------------------------------------- evaluation
class ShardedEvaluator:
    """An `Evaluator` whose users are split across the replicas (local devices × workers); metrics are gathered.

    Every metric is a mean of per-user values, so each replica sums its users' values and the sums are
    all-reduced: the result equals single-device evaluation up to float64 summation order. Same ``evaluate``
    interface as `Evaluator`. Under multi-worker every worker must call ``evaluate`` (a collective).
    """

    def __init__(self, evaluator, strategy: tf.distribute.Strategy):
        import copy

        self.evaluator = evaluator
        self.strategy = strategy
        self.k = evaluator.k
        devices = list(strategy.extended.worker_devices)
        shards = np.array_split(evaluator.users, strategy.num_replicas_in_sync)
        first = _first_local_replica(strategy)
        self.shards = []
        for i, device in enumerate(devices):
            shard = copy.copy(evaluator)  # shares the index tensors and the traced functions
            shard.users = shards[first + i]
            self.shards.append((device, shard))

    def evaluate(self, user_embeddings, item_embeddings) -> dict[str, float]:
        from cml_tf.evaluation import metrics

        names = (*metrics.METRIC_NAMES, "mmr")
        sums = []
        for device, shard in self.shards:
            with tf.device(device):
                per_user = shard.evaluate_per_user(user_embeddings, item_embeddings) if shard.users.size else None
            if per_user is None:
                sums.append(np.zeros(len(names) + 1))
            else:
                sums.append(np.array([per_user[n].sum() for n in names] + [per_user["users"].size], np.float64))
        total = cross_worker_sum(self.strategy, sums)
        n = int(round(total[-1]))
        mean = {name: (float(total[i] / n) if n else float("nan")) for i, name in enumerate(names)}
        return result_dict(mean, n, self.k)

    def evaluate_model(self, model) -> dict[str, float]:
        """`evaluate` of a model's tables (distributed runs are CML's: the config refuses the relational models)."""
        return self.evaluate(*model.embeddings())


def evaluator_for(evaluator, strategy: tf.distribute.Strategy):
    """``evaluator`` itself on one replica, else a `ShardedEvaluator` over the strategy's replicas."""
    if evaluator is None or strategy.num_replicas_in_sync == 1:
        return evaluator
    return ShardedEvaluator(evaluator, strategy)


# --------------------------------------------------------------------------------------------------- placement
class Devices:
    """Where a run computes, decided once at its start: the ``--strategy`` and everything that follows from it.

    A run asks this object, never the strategy itself: the scope to build the model in, the input it fits on, the
    evaluator it validates and tests with, where this process writes and what the workers must agree on. On one
    device (``default``) each of these is the plain single-device thing.

    Args:
        name: ``--strategy``: 'default', 'mirrored' or 'multi_worker' (create this before any other TensorFlow
            work: the multi-worker strategy configures the runtime's collective ops).
    """

    def __init__(self, name: str = "default"):
        self.name = name
        self.strategy = make_strategy(name)
        self.replicas = int(self.strategy.num_replicas_in_sync)
        self.distributed = name != "default"
        self.chief = is_chief(self.strategy)

    def scope(self):
        """The context to create the model and its optimizer in."""
        return self.strategy.scope()

    def write_dir(self, model_dir: str) -> str:
        """Where this process writes (``model_dir`` on the chief, a temporary copy on the other workers)."""
        return write_dir(model_dir, self.strategy)

    def agree(self, values, what: str) -> None:
        """Refuses to go on unless every worker holds the same integer ``values`` (a collective; a no-op on one)."""
        agree(self.strategy, values, what)

    def evaluator(self, evaluator):
        """``evaluator`` itself on one replica, else one sharded over the replicas (None stays None)."""
        return evaluator_for(evaluator, self.strategy)

    def dataset(self, stream, start_step: int = 0, num_steps: int | None = None):
        """The training input from ``stream`` (at the global batch): each replica gets its slice of every batch."""
        if not self.distributed:
            return stream.dataset(start_step=start_step, num_steps=num_steps)
        return distributed_dataset(self.strategy, stream, start_step=start_step, num_steps=num_steps)
