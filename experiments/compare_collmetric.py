"""Compare cml_tf with the original CollMetric code on the identical split and the same number of training pairs.

::

    python -m experiments.compare_collmetric --collmetric_dir=/path/to/CollMetric \\
        --dataset=citeulike --data_path=/path/to/citeulike-t --pairs=3000000

``--collmetric_dir`` is YOUR checkout of https://github.com/changun/CollMetric (``CML.py``, ``sampler.py``,
``evaluator.py``, ``utils.py``); nothing of it is copied into this repository. Three implementations run, one
after the other, each in its own child process (so graph-mode TF1 never shares a process with Keras 3, and each
one's peak memory is its own ``ru_maxrss``):

1. ``original``: the checkout's ``CML`` model and ``WarpSampler``, imported unchanged under TensorFlow 2: a shim
   module stands in for ``tensorflow`` in ``sys.modules`` (``tf.compat.v1`` with v2 behaviour disabled, plus the
   pieces TF2 dropped: ``tf.layers.dense`` / ``dropout`` with TF1 semantics, ``tf.contrib.layers``
   initialisers), and a ``toolz`` stand-in if that package is missing. Settings are CML.py's ``__main__`` ones
   (d=100, margin 1.9, clip_norm 1, AdaGrad 0.1, WARP rank weight, no covariance loss, 20 negatives with
   positive rejection, batches of 50,000 pairs). The sampler's worker processes are forked with distinct seeds
   (CML.py's 5 workers all fork the same NumPy state and so emit identical batch streams).
2. ``preset``: ``cml_tf.training.train`` with ``--preset=collmetric``.
3. ``2stage``: the same preset with ``sampler=2stage`` (``--num_candidates`` candidates per batch).

All three get the same train/valid matrices (``cml_tf.data.splits.original_split``, seed 1, which the original worker
checks against the checkout's own ``utils.split_data``), the same number of training pairs (``--pairs`` rounded
down to whole batches), and are evaluated by `cml_tf.evaluation.Evaluator` on the same validation users: the
1,000 that CML.py's ``optimize()`` samples (``numpy.random.choice`` right after ``split_data``). The original's
own ``RecallEvaluator`` Recall@50 on those users is reported too.

Output (printed, and saved under ``--output_dir``): ``comparison.md`` (the table), ``comparison.json`` (all
figures), ``<impl>/worker.log``, ``<impl>/result.json`` and the embeddings. Columns: Recall@50, NDCG@50, MAP@50
(validation, same users), the original's own Recall@50, training seconds, seconds per 1M training pairs (all
training steps, first included), peak resident memory of the process (MB).

Measured on citeulike-t, 5M pairs each (100 steps of 50,000), 2 shared CPU cores (experiments/COLLMETRIC.md):
original Recall@50 0.2253 / NDCG@50 0.1052 / MAP@50 0.0468, 54.6 s per 1M pairs, 2853 MB; cml_tf preset 0.2257 /
0.1075 / 0.0501, 48.5 s, 2786 MB; cml_tf + 2stage 0.0602 / 0.0250 / 0.0103, 71.7 s, 5008 MB.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported: no C++ INFO lines

import json
import os
import subprocess
import sys
import time
import types

import numpy as np
import scipy.sparse as sp
from absl import app, flags

from cml_tf.cli import data_flags  # noqa: F401  (defines --dataset, --data_path and the filter flags)

IMPLEMENTATIONS = ("original", "preset", "2stage")
ORIGINAL_FILES = ("CML.py", "sampler.py", "evaluator.py", "utils.py")


def define_flags() -> None:
    """Defines this command's flags (at run time, not import, so other commands' flags never collide with them)."""
    if "collmetric_dir" in flags.FLAGS:
        return
    flags.DEFINE_string("collmetric_dir", None, "Your checkout of github.com/changun/CollMetric (holds CML.py).")
    flags.DEFINE_integer("pairs", 3_000_000, "Training pairs per implementation (rounded down to whole batches).")
    flags.DEFINE_integer("batch_size", None, "Pairs per step for every implementation (default: the preset's 50000).")
    flags.DEFINE_integer("num_candidates", 2000, "2stage: stage-1 candidates per batch.")
    flags.DEFINE_list(
        "twostage_overrides",
        [],
        "Config overrides for the 2stage run, key=value (JSON values), e.g. "
        'beta=0,geometry="sphere" or use_rank_weight=false.',
    )
    flags.DEFINE_integer("eval_users", 1000, "Validation users sampled as CML.py's optimize() does.")
    flags.DEFINE_integer("k", 50, "Cut-off of the metrics.")
    flags.DEFINE_integer("seed", 1, "Split seed (CollMetric: 1); also seeds initialisation and sampling.")
    flags.DEFINE_integer("original_workers", 2, "Sampler processes of the original WarpSampler (CML.py: 5).")
    flags.DEFINE_list("implementations", list(IMPLEMENTATIONS), "Which of original, preset, 2stage to run.")
    flags.DEFINE_string("output_dir", "runs/compare_collmetric", "Where the table, logs and embeddings go.")
    flags.DEFINE_integer("worker_timeout", 3600, "Seconds before a worker process is killed.")
    flags.DEFINE_bool("check_split", True, "original worker: check utils.split_data against cml_tf's split.")
    flags.DEFINE_enum("_worker", "", ["", *IMPLEMENTATIONS], "Internal: run one implementation in this process.")


FLAGS = flags.FLAGS


class CompareError(RuntimeError):
    """A comparison that cannot run as asked (bad checkout, failed worker)."""


# --------------------------------------------------------------------------------------------------- checkout
def check_collmetric_dir(path: str | None) -> str:
    """The absolute checkout path, or CompareError saying what is missing."""
    if not path:
        raise CompareError("--collmetric_dir is required: a checkout of https://github.com/changun/CollMetric")
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(path):
        raise CompareError(f"--collmetric_dir={path}: no such directory")
    missing = [f for f in ORIGINAL_FILES if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise CompareError(
            f"--collmetric_dir={path} is not a CollMetric checkout: missing {', '.join(missing)} "
            "(expected the repository root of github.com/changun/CollMetric)"
        )
    return path


# --------------------------------------------------------------------------------------------------- TF1 shim
def _v1_dense(
    inputs,
    units,
    activation=None,
    use_bias=True,
    kernel_initializer=None,
    bias_initializer=None,
    name=None,
    reuse=None,
    **unused,
):
    """``tf.layers.dense`` of TF1 (glorot-uniform kernel, zero bias, variables ``<name>/kernel|bias``)."""
    import tensorflow as real_tf

    v1 = real_tf.compat.v1
    with v1.variable_scope(name, default_name="dense", reuse=reuse):
        n_in = int(inputs.shape[-1])
        kernel = v1.get_variable(
            "kernel", [n_in, units], initializer=kernel_initializer or v1.glorot_uniform_initializer()
        )
        out = v1.matmul(inputs, kernel)
        if use_bias:
            bias = v1.get_variable("bias", [units], initializer=bias_initializer or v1.zeros_initializer())
            out = v1.nn.bias_add(out, bias)
        return activation(out) if activation is not None else out


def _v1_dropout(inputs, rate=0.5, noise_shape=None, seed=None, training=False, name=None):
    """``tf.layers.dropout`` of TF1: the identity unless ``training`` is true (its default is False)."""
    import tensorflow as real_tf

    v1 = real_tf.compat.v1
    if isinstance(training, bool):
        if not training:
            return v1.identity(inputs, name=name)
        return v1.nn.dropout(inputs, rate=rate, noise_shape=noise_shape, seed=seed, name=name)
    return v1.cond(
        training,
        lambda: v1.nn.dropout(inputs, rate=rate, noise_shape=noise_shape, seed=seed),
        lambda: v1.identity(inputs),
    )


def tf1_shim() -> types.ModuleType:
    """A module that reads as TF1's ``tensorflow``: ``tf.compat.v1`` with v2 behaviour off, and the TF1 pieces
    (``layers.dense``/``dropout``, ``contrib.layers`` initialisers) TF2 no longer has."""
    import tensorflow as real_tf

    v1 = real_tf.compat.v1
    v1.disable_v2_behavior()

    class _Shim(types.ModuleType):
        def __getattr__(self, name):
            return getattr(v1, name)

    shim = _Shim("tensorflow", "tf.compat.v1 standing in for TensorFlow 1 (experiments.compare_collmetric)")
    shim.__path__ = list(getattr(real_tf, "__path__", []))
    shim.__version__ = real_tf.__version__
    shim.layers = types.SimpleNamespace(dense=_v1_dense, dropout=_v1_dropout)
    contrib_layers = types.SimpleNamespace(
        xavier_initializer=lambda uniform=True, seed=None, dtype=real_tf.float32: (
            v1.glorot_uniform_initializer(seed=seed, dtype=dtype)
            if uniform
            else v1.glorot_normal_initializer(seed=seed, dtype=dtype)
        ),
        variance_scaling_initializer=v1.variance_scaling_initializer,
        l2_regularizer=lambda scale, scope=None: lambda w: scale * v1.nn.l2_loss(w),
        dense=_v1_dense,
        fully_connected=lambda inputs, num_outputs, activation_fn=v1.nn.relu, **kw: _v1_dense(
            inputs, num_outputs, activation=activation_fn
        ),
    )
    shim.contrib = types.SimpleNamespace(layers=contrib_layers)
    return shim


def _toolz_stand_in() -> types.ModuleType:
    """What CML.py uses of toolz (``partition_all``), for environments without the package."""
    mod = types.ModuleType("toolz")

    def partition_all(n, seq):
        seq = list(seq)
        for i in range(0, len(seq), n):
            yield tuple(seq[i : i + n])

    mod.partition_all = partition_all
    return mod


def import_original(collmetric_dir: str, sampler_seed: int) -> dict:
    """Imports the checkout's CML, WarpSampler, RecallEvaluator and split_data under the TF1 shim.

    Their files are not touched: ``tensorflow`` (and ``toolz`` if absent) are replaced in ``sys.modules`` before
    the import, and ``sampler.Process`` is replaced by a Process whose ``start()`` reseeds NumPy's global RNG
    first, so forked sampler workers draw distinct streams (reproducibly).
    """
    import multiprocessing

    shim = tf1_shim()
    sys.modules["tensorflow"] = shim
    try:
        import toolz  # noqa: F401
    except ImportError:
        sys.modules["toolz"] = _toolz_stand_in()
    sys.path.insert(0, collmetric_dir)
    import CML as cml_module  # noqa: N813  (their module name)
    import evaluator as evaluator_module
    import sampler as sampler_module
    import utils as utils_module

    for mod in (cml_module, evaluator_module, sampler_module, utils_module):
        if not os.path.abspath(mod.__file__).startswith(collmetric_dir):
            raise CompareError(f"imported {mod.__name__} from {mod.__file__}, not from {collmetric_dir}")
    counter = {"n": 0}

    class SeededProcess(multiprocessing.get_context("fork").Process):
        def start(self):
            counter["n"] += 1
            np.random.seed(sampler_seed * 7919 + counter["n"])  # noqa: NPY002 - their workers use the global RNG
            super().start()

    sampler_module.Process = SeededProcess
    sampler_module.Queue = multiprocessing.get_context("fork").Queue
    return {
        "tf": shim,
        "CML": cml_module.CML,
        "WarpSampler": sampler_module.WarpSampler,
        "RecallEvaluator": evaluator_module.RecallEvaluator,
        "split_data": utils_module.split_data,
        "cml_module": cml_module,
    }


# --------------------------------------------------------------------------------------------------- shared
def original_valid_users(
    matrix: sp.spmatrix, valid: sp.spmatrix, size: int = 1000, seed: int = 1, min_items: int = 5
) -> np.ndarray:
    """The validation users CML.py's ``optimize()`` samples: NumPy's global RNG right after
    ``split_data(seed=1)`` (one ``shuffle`` per user with >= 5 items), then
    ``numpy.random.choice(list(set(valid.nonzero()[0])), size=1000, replace=False)``."""
    counts = np.diff(sp.csr_matrix(matrix).indptr)
    rs = np.random.RandomState(seed)
    for n in counts[counts >= min_items]:
        rs.shuffle(np.arange(int(n)))  # consumes what shuffling that user's item list does
    users = list(set(int(u) for u in sp.csr_matrix(valid).nonzero()[0]))
    return np.asarray(rs.choice(users, size=min(size, len(users)), replace=False), dtype=np.int64)


def _save_split(path, split) -> None:
    arrays = {}
    for name in ("train", "valid", "test"):
        m = sp.csr_matrix(getattr(split, name))
        arrays.update({f"{name}_indptr": m.indptr, f"{name}_indices": m.indices, f"{name}_shape": np.array(m.shape)})
    np.savez(path, **arrays)


def _load_split(path):
    from cml_tf.data.splits import Split

    z = np.load(path)
    parts = []
    for name in ("train", "valid", "test"):
        indices = z[f"{name}_indices"]
        parts.append(
            sp.csr_matrix(
                (np.ones(indices.size, np.float32), indices, z[f"{name}_indptr"]), shape=tuple(z[f"{name}_shape"])
            )
        )
    return Split(*parts)


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _batch_size() -> int:
    from cml_tf.training.config import PRESETS

    return int(FLAGS.batch_size or PRESETS["collmetric"]["batch_size"])


def _steps() -> int:
    steps = FLAGS.pairs // _batch_size()
    if steps < 1:
        raise CompareError(f"--pairs={FLAGS.pairs} is below one batch of {_batch_size()} pairs")
    return steps


# --------------------------------------------------------------------------------------------------- workers
def run_original(work_dir: str) -> dict:
    """The checkout's CML.py model + WarpSampler on the saved split (CML.py ``__main__`` settings)."""
    collmetric_dir = check_collmetric_dir(FLAGS.collmetric_dir)
    interactions = data_flags.load_interactions_from_flags(FLAGS)
    split = _load_split(os.path.join(work_dir, "..", "split.npz"))
    valid_users = np.load(os.path.join(work_dir, "..", "valid_users.npy"))
    orig = import_original(collmetric_dir, FLAGS.seed)
    tf = orig["tf"]
    checks = {}
    if FLAGS.check_split:
        # Their own split_data on the same matrix, and the users their optimize() would sample after it.
        import contextlib
        import io

        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            t, v, s = orig["split_data"](sp.dok_matrix(interactions.matrix))  # seeds np.random with 1
        candidates = list(set(v.nonzero()[0]))
        their_users = np.random.choice(candidates, size=min(FLAGS.eval_users, len(candidates)), replace=False)  # noqa: NPY002
        same = all(
            (sp.csr_matrix(a, dtype=np.float32) != b).nnz == 0
            for a, b in ((t, split.train), (v, split.valid), (s, split.test))
        )
        checks = {
            "split_identical": bool(same),
            "valid_users_identical": bool(np.array_equal(their_users, valid_users)),
        }
        print(f"check against utils.split_data: {checks}", flush=True)
        if not same:
            raise CompareError("the checkout's utils.split_data differs from cml_tf.data.splits.original_split")

    batch_size, steps = _batch_size(), _steps()
    n_users, n_items = split.train.shape
    np.random.seed(FLAGS.seed)  # noqa: NPY002 - the original's sampler draws from the global RNG
    sampler = orig["WarpSampler"](
        split.train, batch_size=batch_size, n_negative=20, n_workers=FLAGS.original_workers, check_negative=True
    )
    try:
        tf.set_random_seed(FLAGS.seed)
        model = orig["CML"](
            n_users,
            n_items,
            features=None,
            embed_dim=100,
            margin=1.9,
            clip_norm=1,
            master_learning_rate=0.1,
            use_rank_weight=True,
            use_cov_loss=False,
            cov_loss_weight=1,
        )
        sess = tf.Session()
        sess.run(tf.global_variables_initializer())
        losses, step_seconds, wait_seconds = [], [], 0.0
        start = time.perf_counter()
        for step in range(steps):
            t0 = time.perf_counter()
            user_pos, neg = sampler.next_batch()
            t1 = time.perf_counter()
            _, loss = sess.run(
                (model.optimize, model.loss), {model.user_positive_items_pairs: user_pos, model.negative_samples: neg}
            )
            t2 = time.perf_counter()
            wait_seconds += t1 - t0
            step_seconds.append(t2 - t0)
            losses.append(float(loss))
            if step % 10 == 0 or step == steps - 1:
                print(
                    f"step {step + 1}/{steps} loss {loss:.1f} ({t2 - t0:.2f}s, sampler wait {t1 - t0:.2f}s)", flush=True
                )
        train_seconds = time.perf_counter() - start
    finally:
        sampler.close()
    user_vectors, item_vectors = sess.run((model.user_embeddings, model.item_embeddings))
    recall_evaluator = orig["RecallEvaluator"](model, split.train, split.valid)
    own = []
    for i in range(0, len(valid_users), 100):
        own.extend(recall_evaluator.eval(sess, valid_users[i : i + 100], k=FLAGS.k))
    np.save(os.path.join(work_dir, "user_embeddings.npy"), user_vectors)
    np.save(os.path.join(work_dir, "item_embeddings.npy"), item_vectors)
    return {
        "steps": steps,
        "pairs": steps * batch_size,
        "train_seconds": train_seconds,
        "first_step_seconds": step_seconds[0],
        "sampler_wait_seconds": wait_seconds,
        "final_loss": losses[-1],
        "own_recall": float(np.mean(own)),
        **checks,
    }


def run_cml_tf(work_dir: str, sampler: str) -> dict:
    """cml_tf.training.train with --preset=collmetric (and sampler=2stage for the 2-stage run)."""
    from cml_tf import training
    from cml_tf.training.config import PRESETS, Config

    interactions = data_flags.load_interactions_from_flags(FLAGS)
    split = _load_split(os.path.join(work_dir, "..", "split.npz"))
    name, options = data_flags.options_from_flags(FLAGS)
    steps = _steps()
    values = dict(PRESETS["collmetric"])
    values.update(
        dataset=name,
        data_path=FLAGS.data_path,
        dataset_options=options,
        batch_size=_batch_size(),
        max_steps=steps,
        eval_every=steps,
        eval_users=FLAGS.eval_users,
        k=FLAGS.k,
        seed=FLAGS.seed,
    )
    if sampler == "2stage":
        values.update(sampler="2stage", num_candidates=FLAGS.num_candidates)
        values.update(parse_overrides(FLAGS.twostage_overrides))
    config = Config(**values)
    results = training.train(
        config, os.path.join(work_dir, "run"), data=(interactions, split), overwrite=True, verbose=0
    )
    emb = os.path.join(work_dir, "run", "embeddings")
    for name in ("user_embeddings.npy", "item_embeddings.npy"):
        os.replace(os.path.join(emb, name), os.path.join(work_dir, name))
    return {
        "steps": steps,
        "pairs": steps * config.batch_size,
        "train_seconds": results["train_seconds"],
        "config": {k: v for k, v in config.resolved().to_dict().items() if k in values},
    }


def parse_overrides(items) -> dict:
    """``["beta=0", "geometry=sphere"]`` -> ``{"beta": 0, "geometry": "sphere"}`` (JSON values, else strings)."""
    from cml_tf.training.config import Config

    names = {f.name for f in __import__("dataclasses").fields(Config)}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in names:
            raise CompareError(f"--twostage_overrides: {item!r} is not key=value with a Config field as key")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def worker_main(kind: str) -> int:
    work_dir = os.path.join(FLAGS.output_dir, kind)
    os.makedirs(work_dir, exist_ok=True)
    result = (
        run_original(work_dir)
        if kind == "original"
        else run_cml_tf(work_dir, "uniform" if kind == "preset" else "2stage")
    )
    result["peak_rss_mb"] = _peak_rss_mb()
    with open(os.path.join(work_dir, "result.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, sort_keys=True)
    return 0


# --------------------------------------------------------------------------------------------------- parent
def _run_worker(kind: str) -> dict:
    work_dir = os.path.join(FLAGS.output_dir, kind)
    os.makedirs(work_dir, exist_ok=True)
    result_path = os.path.join(work_dir, "result.json")
    if os.path.exists(result_path):
        os.unlink(result_path)
    argv = [a for a in sys.argv[1:] if not a.startswith(("--_worker", "--output_dir"))]
    command = [
        sys.executable,
        "-m",
        "experiments.compare_collmetric",
        *argv,
        f"--_worker={kind}",
        f"--output_dir={os.path.abspath(FLAGS.output_dir)}",
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    log_path = os.path.join(work_dir, "worker.log")
    print(f"[{kind}] running ({log_path})", flush=True)
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            proc.wait(timeout=FLAGS.worker_timeout)
        except subprocess.TimeoutExpired as e:
            proc.kill()
            proc.wait()
            raise CompareError(f"[{kind}] killed after --worker_timeout={FLAGS.worker_timeout}s; see {log_path}") from e
    if proc.returncode != 0 or not os.path.exists(result_path):
        with open(log_path, encoding="utf-8", errors="replace") as f:
            tail = f.read()[-3000:]
        raise CompareError(f"[{kind}] failed (exit {proc.returncode}); last lines of {log_path}:\n{tail}")
    with open(result_path, encoding="utf-8") as f:
        result = json.load(f)
    result["wall_seconds"] = time.perf_counter() - start
    return result


LABELS = {
    "original": "CollMetric CML.py (TF1 via compat.v1)",
    "preset": "cml_tf --preset=collmetric",
    "2stage": "cml_tf collmetric + 2stage sampler",
}


def format_table(rows: dict, k: int) -> str:
    header = (
        f"| implementation | Recall@{k} | NDCG@{k} | MAP@{k} | own Recall@{k} | pairs | train s "
        "| s / 1M pairs | peak MB |"
    )
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for kind, r in rows.items():
        own = f"{r['own_recall']:.4f}" if "own_recall" in r else "–"
        lines.append(
            f"| {LABELS.get(kind, kind)} | {r[f'recall@{k}']:.4f} | {r[f'ndcg@{k}']:.4f} | {r[f'map@{k}']:.4f} | "
            f"{own} | {r['pairs']:,} | {r['train_seconds']:.1f} | {r['seconds_per_1m_pairs']:.1f} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def compare() -> dict:
    """Prepares the shared split and users, runs the workers, evaluates every embedding the same way."""
    from cml_tf.data.splits import original_split

    for kind in FLAGS.implementations:
        if kind not in IMPLEMENTATIONS:
            raise CompareError(f"--implementations: unknown {kind!r}; expected some of {', '.join(IMPLEMENTATIONS)}")
    if "original" in FLAGS.implementations:
        check_collmetric_dir(FLAGS.collmetric_dir)
    steps = _steps()
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    interactions = data_flags.load_interactions_from_flags(FLAGS)
    split = original_split(interactions.matrix, seed=FLAGS.seed)
    split.validate()
    valid_users = original_valid_users(interactions.matrix, split.valid, FLAGS.eval_users, FLAGS.seed)
    _save_split(os.path.join(FLAGS.output_dir, "split.npz"), split)
    np.save(os.path.join(FLAGS.output_dir, "valid_users.npy"), valid_users)
    print(
        f"{interactions.n_users:,} users x {interactions.n_items:,} items; split {split.summary()}; "
        f"{steps} steps of {_batch_size():,} pairs; {len(valid_users)} validation users",
        flush=True,
    )

    results = {kind: _run_worker(kind) for kind in FLAGS.implementations}

    from cml_tf.evaluation.evaluator import Evaluator  # TensorFlow only in the parent once every worker is done

    evaluator = Evaluator(split.train, split.valid, k=FLAGS.k, users=valid_users)
    k = FLAGS.k
    for kind, r in results.items():
        work_dir = os.path.join(FLAGS.output_dir, kind)
        u = np.load(os.path.join(work_dir, "user_embeddings.npy"))
        v = np.load(os.path.join(work_dir, "item_embeddings.npy"))
        m = evaluator.evaluate(u, v)
        r.update({f"{name}@{k}": float(m[f"{name}@{k}"]) for name in ("recall", "ndcg", "map", "precision")})
        r["eval_users"] = int(m["users"])
        r["seconds_per_1m_pairs"] = r["train_seconds"] / r["pairs"] * 1e6
    table = format_table(results, k)
    summary = {
        "dataset": interactions.name if hasattr(interactions, "name") else FLAGS.dataset,
        "split": split.summary(),
        "steps": steps,
        "batch_size": _batch_size(),
        "valid_users": len(valid_users),
        "results": results,
        "table": table,
    }
    with open(os.path.join(FLAGS.output_dir, "comparison.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    with open(os.path.join(FLAGS.output_dir, "comparison.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    print(table, flush=True)
    return summary


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        if FLAGS._worker:
            return worker_main(FLAGS._worker)
        compare()
    except CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def run():
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
