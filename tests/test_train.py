"""The training command and `cml_tf.training.train`: run directory, resume, determinism, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cml_tf import training
from cml_tf.config import PRESETS, Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"num_users": 300, "num_items": 500, "num_interactions": 6000}


def tiny_config(**kw) -> Config:
    values = dict(
        dataset="synthetic",
        dataset_options=TINY,
        batch_size=64,
        num_candidates=200,
        max_steps=60,
        eval_every=20,
        steps_per_execution=10,
        learning_rate=1e-3,
    )
    values.update(kw)
    return Config(**values)


def run_cli(*args, timeout=300, env=None):
    return subprocess.run(
        [sys.executable, "-m", "cml_tf.train", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("run"))
    results = training.train(tiny_config(sampler="2stage"), model_dir, verbose=0)
    return model_dir, results


def test_run_directory_holds_every_output(finished_run):
    model_dir, results = finished_run
    for name in ("config.json", "metrics.csv", "results.json"):
        assert os.path.isfile(os.path.join(model_dir, name)), name
    for name in ("user_embeddings.npy", "item_embeddings.npy", "user_ids.npy", "item_ids.npy"):
        np.load(os.path.join(model_dir, "embeddings", name), allow_pickle=False)
    assert os.listdir(os.path.join(model_dir, "checkpoints"))
    assert os.listdir(os.path.join(model_dir, "best"))
    assert os.listdir(os.path.join(model_dir, "tensorboard"))
    for key in ("map@50", "ndcg@50", "recall@50", "precision@50", "mmr", "train_seconds"):
        assert key in results and np.isfinite(results[key]), key
    saved = Config.load(os.path.join(model_dir, "config.json"))
    assert saved.gor_weight == 0.01 and saved.init_stddev == 1e-3  # resolved paper defaults are saved
    assert not [f for f in os.listdir(model_dir) if f.endswith(".tmp")]


def test_metrics_csv_rows_at_every_evaluation_and_exact_steps(finished_run):
    model_dir, results = finished_run
    rows = training.read_metrics_csv(os.path.join(model_dir, "metrics.csv"))
    assert [int(r["step"]) for r in rows] == [20, 40, 60]
    for column in ("step", "epoch", "loss", "ndcg@50", "map@50", "mmr", "pairs_per_sec"):
        assert column in rows[0]
    assert results["steps"] == 60
    best = max(rows, key=lambda r: r["ndcg@50"])
    assert results["best_step"] == int(best["step"])


def test_max_steps_is_exact_when_not_a_multiple_of_the_period(tmp_path):
    results = training.train(tiny_config(sampler="uniform", max_steps=47, eval_every=20), str(tmp_path), verbose=0)
    rows = training.read_metrics_csv(os.path.join(tmp_path, "metrics.csv"))
    assert [int(r["step"]) for r in rows] == [20, 40, 47]
    assert results["steps"] == 47


def test_same_seed_same_results_and_finished_run_is_not_retrained(tmp_path, finished_run):
    _, first = finished_run
    again = training.train(tiny_config(sampler="2stage"), str(tmp_path / "again"), verbose=0)
    for key in ("map@50", "ndcg@50", "recall@50", "mmr", "best_step"):
        assert again[key] == pytest.approx(first[key], rel=1e-5, abs=1e-7), key
    mtime = os.path.getmtime(tmp_path / "again" / "results.json")
    assert training.train(tiny_config(sampler="2stage"), str(tmp_path / "again"), verbose=0) == again
    assert os.path.getmtime(tmp_path / "again" / "results.json") == mtime


def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path):
    config = tiny_config(sampler="popular", max_steps=60, eval_every=20)
    full = training.train(config, str(tmp_path / "full"), verbose=0)
    # an "interrupted" run: the first 40 steps, then the same config continued in the same directory
    part_dir = str(tmp_path / "part")
    import dataclasses

    training.train(dataclasses.replace(config, max_steps=40), part_dir, verbose=0)
    os.unlink(os.path.join(part_dir, "results.json"))
    with open(os.path.join(part_dir, "config.json"), "w") as f:
        json.dump(config.resolved().to_dict(), f)
    resumed = training.train(config, part_dir, verbose=0)
    rows = training.read_metrics_csv(os.path.join(part_dir, "metrics.csv"))
    assert [int(r["step"]) for r in rows] == [20, 40, 60]
    for key in ("map@50", "ndcg@50", "recall@50"):
        assert resumed[key] == pytest.approx(full[key], rel=1e-4, abs=1e-6), key
    np.testing.assert_allclose(
        np.load(os.path.join(part_dir, "embeddings", "item_embeddings.npy")),
        np.load(os.path.join(tmp_path, "full", "embeddings", "item_embeddings.npy")),
        atol=1e-5,
    )


def test_a_different_config_in_the_same_directory_is_refused(tmp_path, finished_run):
    model_dir, _ = finished_run
    with pytest.raises(training.RunError, match="different config.*batch_size"):
        training.train(tiny_config(sampler="2stage", batch_size=32), model_dir, verbose=0)


def test_cli_trains_resumes_after_kill_and_reports(tmp_path):
    model_dir = str(tmp_path / "cli")
    args = [
        "--num_users=300",
        "--num_items=500",
        "--num_interactions=6000",
        "--batch_size=64",
        "--num_candidates=200",
        "--max_steps=400",
        "--eval_every=40",
        "--steps_per_execution=1",
        f"--model_dir={model_dir}",
        "--verbose=0",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cml_tf.train", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    metrics = os.path.join(model_dir, "metrics.csv")
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(metrics) and len(training.read_metrics_csv(metrics)) >= 2:
            break
        time.sleep(0.2)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    out = run_cli(*args)
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads(out.stdout[out.stdout.index("{") :])
    rows = training.read_metrics_csv(metrics)
    steps = [int(r["step"]) for r in rows]
    assert steps == list(range(40, 401, 40)), steps  # no row lost, none repeated
    assert results["steps"] == 400 and results["model_dir"] == model_dir


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--batch_size=-3", "--batch_size must be positive"),
        ("--sampler=foo", "--sampler: unknown sampler 'foo'"),
        ("--num_negatives=3000", "--num_negatives=3000 exceeds --num_candidates=2000"),
        ("--dataset=nope", "--dataset"),
        ("--min_playcount=3", "--min_playcount does not apply to --dataset=synthetic"),
        ("--geometry=cube", "--geometry"),
        ("--stage2_weight_cap=0.5", "--stage2_weight_cap must be >= 1"),
        ("--stage2_weight_cap=big", "--stage2_weight_cap: expected a number >= 1 or 'none'"),
        ("--stage2_refresh_every=sometimes", "--stage2_refresh_every: expected an integer >= 0 or 'never'"),
        ("--stage2_cutoff=3", "--stage2_cutoff must be in [0, 2]"),
    ],
)
def test_cli_bad_flags_fail_before_training_with_the_flag_named(flag, message, tmp_path):
    out = run_cli(flag, f"--model_dir={tmp_path}", timeout=120)
    assert out.returncode != 0
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert not os.path.exists(os.path.join(tmp_path, "config.json"))


def test_stage2_and_split_seed_flags_map_to_config():
    from cml_tf import train

    def config(*argv):
        train.FLAGS.unparse_flags()
        try:
            train.FLAGS(["train", *argv])
            return train.config_from_flags().resolved()
        finally:
            train.FLAGS.unparse_flags()

    default = config()
    assert default.stage2_weight_cap == Config().stage2_weight_cap and default.stage2_refresh_every == 0
    assert config("--stage2_weight_cap=none").stage2_weight_cap is None
    assert config("--stage2_weight_cap=20").stage2_weight_cap == 20.0
    assert config("--stage2_refresh_every=never").stage2_refresh_every == -1
    assert config("--stage2_refresh_every=100").stage2_refresh_every == 100
    # the split has its own seed: CollMetric's (1) for the original split whatever --seed says
    assert config("--split=original").split_seed == 1 and config("--split=original", "--seed=7").split_seed == 1
    assert config("--split=original", "--split_seed=3").split_seed == 3
    assert config().split_seed == 0


def test_original_split_from_the_command_line_is_collmetrics_whatever_the_seed():
    from cml_tf.splits import make_split

    data = training.datasets.load("synthetic", None, num_users=60, num_items=80, num_interactions=1500)
    reference = make_split(data.matrix, "original", seed=1)
    for seed in (0, 5):
        split = training.split_data(Config(split="original", seed=seed), data)
        for a, b in ((split.train, reference.train), (split.valid, reference.valid), (split.test, reference.test)):
            assert (a != b).nnz == 0


def test_collmetric_preset_maps_to_config():
    config = Config(**PRESETS["collmetric"]).resolved()
    assert (config.geometry, config.optimizer, config.learning_rate, config.margin) == ("ball", "adagrad", 0.1, 1.9)
    assert (config.num_negatives, config.embedding_dim, config.split) == (20, 100, "original")
    assert config.use_rank_weight and config.eval_users == 1000
    assert config.init_stddev == pytest.approx(0.1)  # 1/sqrt(d) in the ball


def test_ball_geometry_keeps_every_row_inside_the_ball(tmp_path):
    training.train(
        tiny_config(sampler="uniform", geometry="ball", optimizer="adagrad", learning_rate=0.5, init_stddev=0.5),
        str(tmp_path),
        verbose=0,
    )
    for name in ("user_embeddings.npy", "item_embeddings.npy"):
        norms = np.linalg.norm(np.load(tmp_path / "embeddings" / name), axis=1)
        assert norms.max() <= 1.0 + 1e-5, name


def test_ball_with_covariance_loss_still_clips(tmp_path):
    # the covariance loss makes the gradients dense: clipping must then come from the MaxNorm constraint
    training.train(
        tiny_config(sampler="uniform", geometry="ball", cov_loss_weight=1.0, learning_rate=0.05, init_stddev=0.5),
        str(tmp_path),
        verbose=0,
    )
    norms = np.linalg.norm(np.load(tmp_path / "embeddings" / "item_embeddings.npy"), axis=1)
    assert norms.max() <= 1.0 + 1e-5
