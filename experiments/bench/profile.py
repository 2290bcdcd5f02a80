"""Where a training step's time goes, part by part, for any preset (issue 38's breakdown of ``--preset=accurate``).

    python -m experiments.bench profile --preset=accurate --users=7947 --items=25975
    python -m experiments.bench profile --users=7947 --items=25975            # the default 2-stage hinge

On one fixed batch of the run's own `TrainingStream` (synthetic Zipf data of the given shape), each part is timed in
its own ``tf.function`` (20 calls per timing, less the cost of calling a tf.function that does nothing with the same
arguments; medians over ``--rounds`` alternating rounds):

* the batch's input work, each piece alone: stage 1's C candidates (``ItemSampler.sample_without_replacement``), the
  [B, C] positives mask (``PositiveIndex.candidate_mask``), the softmax's log q gathers, the whole ``_make_batch``;
* the model: stage 2 (the hinge's negatives; the softmax has none), the loss forward, forward + backward (where the
  step runs the fused softmax, both are its compiled function, which computes the gradients with the loss), the
  optimizer's update alone (on gradients computed once), ``train_step`` whole;
* Keras' ``fit`` on the batch repeated (the step plus Keras' bookkeeping, ``steps_per_execution`` = 20) and on the
  real pipeline (what a run pays per step), and the pipeline alone (batches pulled, no model);
* the speed floor of the loss (../shared/bench/floor.py or floor_softmax.py), in a fresh process;
* one validation pass of the evaluator over ``--eval_users`` users (what a run pays every ``eval_every`` steps).
"""

from __future__ import annotations

import time

import numpy as np

from experiments.bench.flags import common, fields
from experiments.bench.report import Table, median, spread
from experiments.bench.timing import alternate, run_floor, synthetic_train, time_training

CALLS = 20


def add_arguments(p) -> None:
    """The profile's flags."""
    common(p, users=7947, items=25975, nnz=1_000_000, batch_size=256, steps=400, rounds=3)
    p.add_argument("--preset", default=None, help="the Config preset profiled, e.g. accurate (none: the defaults)")
    p.add_argument(
        "--overrides",
        type=fields,
        default={},
        help='JSON: Config fields changed from the preset, e.g. {"gor_weight": 1}',
    )
    p.add_argument("--eval_users", type=int, default=5000, help="users of the timed validation pass (0: skip it)")


def _timer(fn, *args):
    """A measure: ms per call of ``fn(*args)`` (a tf.function) less the cost of calling a tf.function that does
    nothing with the same arguments (Python dispatch and argument checks, about 0.2-3 ms a call for a batch dict on
    this machine), over `CALLS` calls after two warm-up calls."""
    import tensorflow as tf

    nothing = tf.function(lambda *a: tf.constant(0))

    def per_call(f) -> float:
        start = time.perf_counter()
        for _ in range(CALLS):
            out = f(*args)
        _block(out)
        return (time.perf_counter() - start) / CALLS * 1e3

    def measure() -> float:
        return per_call(fn) - per_call(nothing)

    for f in (fn, fn, nothing, nothing):
        _block(f(*args))
    return measure


def _block(out) -> None:
    import tensorflow as tf

    for t in tf.nest.flatten(out):
        if hasattr(t, "numpy"):
            t.numpy()


def run(args) -> list[Table]:
    """One table: each part's median ms, its share of ``fit`` fed by the pipeline, and the floor."""
    import json

    import scipy.sparse as sp
    import tensorflow as tf

    from cml_tf.data.splits import Split
    from cml_tf.training.config import Config
    from cml_tf.training.run import build_model, training_stream

    overrides = args.overrides
    train = synthetic_train(args.users, args.items, args.nnz)
    changed = {"batch_size": args.batch_size, **overrides}
    config = Config(preset=args.preset, **changed).resolved()
    empty = sp.csr_matrix(train.shape, dtype=np.float32)
    stream = training_stream(config, None, Split(train, empty, empty))
    model = build_model(config, *train.shape, steps_per_execution=20, train=train)
    batch = next(iter(stream.dataset()))
    spec = stream.spec
    softmax = config.loss == "softmax"
    measures = {}

    # ---- the input work, piece by piece
    seed = tf.constant([1, 2], tf.int64)
    steps = tf.constant(7, tf.int64)
    pair_ids = tf.range(spec.batch_size, dtype=tf.int64) * 37 % stream.num_pairs
    if spec.sampler == "2stage":
        sampler = stream.item_sampler
        stage1 = tf.function(lambda s: sampler.sample_without_replacement(spec.num_candidates, s, ordered=False))
        measures["input: stage 1, C candidates"] = _timer(stage1, seed)
        cands = tf.cast(batch["candidates"], tf.int64)
        mask = tf.function(lambda u, c: stream.positive_index.candidate_mask(u, c))
        measures["input: the [B, C] positives mask"] = _timer(mask, batch["users"], cands)
        if softmax:
            logq = tf.function(lambda c, u, p: (tf.gather(stream.log_q, c), stream._pool_log_q(u, p, p[:, None])))
            measures["input: log q"] = _timer(logq, cands, batch["users"], batch["positives"])
    make = tf.function(stream._make_batch)
    measures["input: one whole batch (_make_batch)"] = _timer(make, steps, pair_ids)

    # ---- the model's parts on the fixed batch
    variables = model.trainable_variables
    if not softmax and "candidates" in batch:
        measures["model: stage 2 (the negatives)"] = _timer(tf.function(model.select_negatives), batch)

    def forward(data):
        if model._fused_softmax(data):  # what train_step runs: the compiled function on the rows
            return model._fused_softmax_gradients(data)[1]["total"]
        negatives = None if softmax else model.select_negatives(data)
        return model._loss_terms(data, negatives, training=True)["total"]

    def forward_backward(data):
        if model._fused_softmax(data):
            return model._fused_softmax_gradients(data)[0]
        negatives = None if softmax else model.select_negatives(data)
        with tf.GradientTape() as tape:
            total = model._loss_terms(data, negatives, training=True)["total"]
        return tape.gradient(total, variables)

    jit = bool(getattr(model, "jit_compile", False))
    measures["model: loss forward"] = _timer(tf.function(forward, jit_compile=jit), batch)
    fb = tf.function(forward_backward, jit_compile=jit)
    measures["model: forward + backward"] = _timer(fb, batch)
    grads = fb(batch)
    apply = tf.function(lambda g: model.optimizer.apply_gradients(zip(g, variables)))
    measures["model: optimizer update alone"] = _timer(apply, grads)
    measures["model: train_step whole"] = _timer(tf.function(model.train_step, jit_compile=jit), batch)

    # ---- Keras fit, the pipeline, the floor, evaluation
    preset = args.preset
    measures["fit: the step on the batch repeated"] = lambda: time_training(
        train,
        config.sampler,
        args.batch_size,
        config.num_negatives,
        args.steps,
        overrides=changed,
        cached=True,
        preset=preset,
    )["ms_per_step"]
    measures["fit: the step fed by the pipeline"] = lambda: time_training(
        train, config.sampler, args.batch_size, config.num_negatives, args.steps, overrides=changed, preset=preset
    )["ms_per_step"]

    def pipeline_alone() -> float:
        it = iter(stream.dataset())
        for _ in range(10):
            next(it)
        start = time.perf_counter()
        for _ in range(args.steps):
            next(it)
        return (time.perf_counter() - start) / args.steps * 1e3

    measures["the input pipeline alone (per batch)"] = pipeline_alone
    floor = "softmax" if softmax else "hinge"
    measures[f"{floor} floor (fresh process)"] = lambda: run_floor(
        floor, args.users, args.items, args.batch_size, config.num_negatives
    )["ms_per_step"]
    if args.eval_users:
        measures[f"validation of {args.eval_users:,} users (per pass)"] = _eval_timer(model, train, args.eval_users)

    ms = alternate(args.rounds, measures)
    fed = median(ms["fit: the step fed by the pipeline"])
    rows = [
        {"part": name, "ms": median(values), "min..max": spread(values), "/ fit fed": median(values) / fed}
        for name, values in ms.items()
    ]
    heading = (
        f"where a step goes: --preset={preset or 'none'} {json.dumps(overrides) if overrides else ''} "
        f"(loss {config.loss}, sampler {config.sampler}, B={config.batch_size}, C={config.num_candidates}, "
        f"d={config.embedding_dim}), {args.users:,} x {args.items:,}, {args.nnz:,} pairs: median ms of "
        f"{args.rounds} alternating rounds ({CALLS} calls per timing; fit: {args.steps} steps)"
    )
    floor_ms = median(ms[f"{floor} floor (fresh process)"])
    notes = [f"fit fed by the pipeline: {floor_ms / fed:.2f} of the {floor} floor's pairs/s"]
    return [Table(heading, ["part", "ms", "min..max", "/ fit fed"], rows, notes)]


def _eval_timer(model, train, n_users: int):
    """A measure: seconds of one full-ranking validation pass (NDCG@50 etc.) over ``n_users`` users, in ms."""
    import scipy.sparse as sp

    from cml_tf.evaluation.evaluator import Evaluator

    rng = np.random.default_rng(0)
    n = min(n_users, train.shape[0])
    held = sp.random(train.shape[0], train.shape[1], density=5 / train.shape[1], format="csr", random_state=rng)
    held.data[:] = 1
    held = held - held.multiply(train)
    held.eliminate_zeros()
    evaluator = Evaluator(train, held, users=np.arange(n))

    def measure() -> float:
        start = time.perf_counter()
        evaluator.evaluate_model(model)
        return (time.perf_counter() - start) * 1e3

    return measure
