"""Data-parallel training on this CPU-only machine: MirroredStrategy over 2 logical CPU devices equals single-device
training at the same global batch; 2 MultiWorkerMirroredStrategy workers on 127.0.0.1 end with identical weights.

Strategies configure the TensorFlow runtime (logical devices, collective ops) once per process, so every
distributed run happens in a subprocess, bounded in time.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from cml_tf.training import distribute

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 300


def _env(**extra) -> dict:
    env = dict(os.environ)
    env.pop("TF_CONFIG", None)
    env.update(
        PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES=""
    )
    env.update(extra)
    return env


# ----------------------------------------------------------------------------------------------- TF_CONFIG
def _tf_config(cluster, task=None):
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": task or {"type": "worker", "index": 0}})}


@pytest.mark.parametrize(
    "environ, message",
    [
        ({}, "needs the TF_CONFIG"),
        ({"TF_CONFIG": "{not json"}, "not valid JSON"),
        ({"TF_CONFIG": json.dumps({"task": {"type": "worker", "index": 0}})}, "no 'cluster'"),
        (_tf_config({"ps": ["a:1"], "worker": ["b:2"]}), "parameter servers"),
        (_tf_config({"worker": ["localhost"]}), "is not 'host:port'"),
        (_tf_config({"worker": ["a:1", "a:1"]}), "listed twice"),
        (_tf_config({"worker": ["a:1", "b:2"]}, {"type": "worker", "index": 2}), "out of range"),
        (_tf_config({"worker": ["a:1"]}, {"type": "chief", "index": 0}), "not a training job"),
        ({"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1"]}})}, "no 'task'"),
    ],
)
def test_tf_config_errors_say_what_is_wrong(environ, message):
    with pytest.raises(distribute.DistributeError, match=message):
        distribute.parse_tf_config(environ)


def test_tf_config_valid():
    cfg = distribute.parse_tf_config(
        _tf_config({"chief": ["a:1"], "worker": ["b:2", "c:3"]}, {"type": "worker", "index": 1})
    )
    assert cfg["task"] == {"type": "worker", "index": 1}


def test_replica_slices_cut_rows_and_share_candidates():
    element = {
        "users": tf.range(8),
        "positives": tf.range(8) + 100,
        "candidates": tf.constant([3, 5, 9]),
        "candidate_is_positive": tf.reshape(tf.range(24) % 2 == 0, [8, 3]),
    }
    # pipeline holding replicas 2 and 3 of 4
    parts = list(distribute.replica_slices(element, first_replica=2, num_local=2, num_replicas=4))
    assert [p["users"].numpy().tolist() for p in parts] == [[4, 5], [6, 7]]
    assert [p["positives"].numpy().tolist() for p in parts] == [[104, 105], [106, 107]]
    for i, p in enumerate(parts):
        np.testing.assert_array_equal(p["candidates"], [3, 5, 9])
        np.testing.assert_array_equal(
            p["candidate_is_positive"], element["candidate_is_positive"][4 + 2 * i : 6 + 2 * i]
        )


def test_replica_slices_give_each_replica_its_own_candidate_set():
    element = {
        "users": tf.range(8),
        "positives": tf.range(8) + 100,
        "candidates": tf.constant([[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]]),
        "candidate_is_positive": tf.reshape(tf.range(24) % 3 == 0, [8, 3]),
    }
    parts = list(distribute.replica_slices(element, first_replica=2, num_local=2, num_replicas=4))
    assert [p["candidates"].numpy().tolist() for p in parts] == [[7, 8, 9], [10, 11, 12]]
    assert [p["users"].numpy().tolist() for p in parts] == [[4, 5], [6, 7]]


# ----------------------------------------------------------------------------------------------- mirrored
MIRRORED_SCRIPT = textwrap.dedent(
    """
    import dataclasses, json, os, tempfile
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np
    from cml_tf import training
    from cml_tf.training.data import load_data
    from cml_tf.training.outputs import read_metrics_csv
    from cml_tf.training import distribute
    from cml_tf.training.config import Config
    from cml_tf.evaluation.evaluator import Evaluator

    base = Config(dataset="synthetic", dataset_options=dict(num_users=200, num_items=300, num_interactions=3000),
                  sampler="uniform", batch_size=64, num_negatives=2, embedding_dim=16, max_steps=40, eval_every=10,
                  learning_rate=1e-2, gor_weight=0.01, steps_per_execution=1)
    out = {}
    runs = {}
    for name, cfg in [("single", base), ("mirrored", dataclasses.replace(base, strategy="mirrored")),
                      ("mirrored_2stage", dataclasses.replace(base, strategy="mirrored", sampler="2stage",
                                                              num_candidates=50, max_steps=20))]:
        d = tempfile.mkdtemp()
        res = training.train(cfg, d, verbose=0)
        rows = read_metrics_csv(os.path.join(d, "metrics.csv"))
        runs[name] = dict(loss=[r["loss"] for r in rows], gor=[r["gor"] for r in rows], ndcg=res["ndcg@50"],
                          items=np.load(os.path.join(d, "embeddings", "item_embeddings.npy")),
                          users=np.load(os.path.join(d, "embeddings", "user_embeddings.npy")))
    s, m = runs["single"], runs["mirrored"]
    out["loss_single"], out["loss_mirrored"] = s["loss"], m["loss"]
    out["max_loss_diff"] = float(np.max(np.abs(np.subtract(s["loss"], m["loss"]))))
    out["max_gor_diff"] = float(np.max(np.abs(np.subtract(s["gor"], m["gor"]))))
    out["max_emb_diff"] = float(max(np.abs(s["items"] - m["items"]).max(), np.abs(s["users"] - m["users"]).max()))
    out["ndcg"] = [s["ndcg"], m["ndcg"]]
    out["loss_2stage"] = runs["mirrored_2stage"]["loss"]

    # sharded evaluation over the 2 replicas equals single-device evaluation
    interactions, split = load_data(base)
    ev = Evaluator(split.train, split.test, k=10, batch_size=7)
    strategy = tf.distribute.MirroredStrategy()
    sharded = distribute.evaluator_for(ev, strategy)
    a, b = ev.evaluate(s["users"], s["items"]), sharded.evaluate(s["users"], s["items"])
    out["shards"] = [int(sh.users.size) for _, sh in sharded.shards]
    out["eval_single"], out["eval_sharded"] = a, b
    print("RESULT " + json.dumps(out))
    """
)


def test_mirrored_two_logical_cpus_matches_single_device(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT],
        cwd=str(tmp_path),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    out = json.loads(lines[-1][len("RESULT ") :])
    # uniform sampler: same pairs and negatives; GOR from cross-replica moments: equal up to float summation order
    assert len(out["loss_single"]) == 4
    assert out["max_loss_diff"] < 1e-5, out
    assert out["max_gor_diff"] < 1e-6, out
    assert out["max_emb_diff"] < 1e-4, out
    # 2-stage: stage 2 draws per replica (different draws, same distribution): it trains, losses finite
    assert len(out["loss_2stage"]) == 2 and all(np.isfinite(out["loss_2stage"])), out
    assert len(out["shards"]) == 2 and sum(out["shards"]) == out["eval_single"]["users"]
    assert out["eval_sharded"]["users"] == out["eval_single"]["users"]
    for key, value in out["eval_single"].items():
        assert out["eval_sharded"][key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


# ----------------------------------------------------------------------------------------------- multi-worker
def _free_ports(n: int) -> list[int]:
    sockets = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow  # a whole runner / processes end to end (default run kept under 10 minutes)
def test_multi_worker_two_processes_on_loopback_end_with_identical_weights(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    args = [
        sys.executable,
        "-m",
        "cml_tf.train",
        "--dataset=synthetic",
        "--num_users=200",
        "--num_items=300",
        "--num_interactions=3000",
        "--strategy=multi_worker",
        "--max_steps=20",
        "--eval_every=10",
        "--batch_size=64",
        "--embedding_dim=16",
        "--sampler=uniform",
        "--num_negatives=2",
        "--learning_rate=0.01",
        "--verbose=0",
        "--nouse_cache",
    ]
    procs = []
    for i in range(2):
        env = _env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
        log = open(tmp_path / f"worker{i}.log", "w")
        procs.append(
            (
                subprocess.Popen(
                    args + [f"--model_dir={tmp_path / f'w{i}'}"],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ),
                log,
            )
        )
    try:
        for proc, _ in procs:
            proc.wait(timeout=TIMEOUT_S)
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    logs = [(tmp_path / f"worker{i}.log").read_text()[-3000:] for i in range(2)]
    assert [p.returncode for p, _ in procs] == [0, 0], logs

    chief, other = tmp_path / "w0", tmp_path / "w1"
    # only the chief writes the run dir; the other worker keeps just its final embeddings (in its temp dir)
    assert (chief / "results.json").exists() and (chief / "metrics.csv").exists() and (chief / "checkpoints").is_dir()
    assert not (other / "results.json").exists()
    assert sorted(os.listdir(other)) == ["workertemp_1"]
    assert sorted(os.listdir(other / "workertemp_1")) == ["embeddings"]
    for name in ("user_embeddings.npy", "item_embeddings.npy"):
        a = np.load(chief / "embeddings" / name)
        b = np.load(other / "workertemp_1" / "embeddings" / name)
        np.testing.assert_array_equal(a, b)
    rows = (chief / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3  # header + 2 evaluations
