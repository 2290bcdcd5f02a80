"""`cml_tf.training.run`'s temperature probe: a short run at each τ; the best on validation goes on."""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import pytest
from helpers import tiny_config

from cml_tf import training
from cml_tf.training.config import Config
from cml_tf.training.outputs import read_metrics_csv
from cml_tf.training.run import PROBE_DIR, probe_steps


def probe_config(**kw) -> Config:
    """The sampled softmax on the tiny synthetic set: 60 steps validated every 20, a probe of 40 steps (at 64 pairs a
    step, one epoch is about 63 steps: 0.6 epochs round to two periods). τ = 0.05 learns far slower here than
    τ = 0.5 (validation NDCG@50 .062 against .092 at step 40), so the probe must choose the second value."""
    values = dict(sampler="2stage", loss="softmax", temperature_probe=(0.05, 0.5), temperature_probe_epochs=0.6)
    values.update(kw)
    return tiny_config(**values)


def _probe_results(model_dir, tau) -> dict:
    with open(os.path.join(model_dir, PROBE_DIR, f"tau-{tau:g}", "results.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def probed_run(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("probed"))
    return model_dir, training.train(probe_config(), model_dir, verbose=0)


def test_the_probe_length_is_whole_validation_periods_within_the_run():
    pairs = 6400  # 100 steps of 64 pairs an epoch
    config = probe_config(max_steps=None, epochs=10.0, temperature_probe_epochs=0.5)
    assert probe_steps(config, pairs) == 60  # 50 steps: 2.5 periods of 20, rounded half up to 3
    assert probe_steps(dataclasses.replace(config, temperature_probe_epochs=0.05), pairs) == 20  # at least one
    assert probe_steps(dataclasses.replace(config, temperature_probe_epochs=20.0), pairs) == 1000  # at most the run


def test_the_probe_chooses_the_tau_with_the_best_validation_and_records_it(probed_run):
    model_dir, results = probed_run
    probes = {tau: _probe_results(model_dir, tau) for tau in (0.05, 0.5)}
    valid = {tau: r["valid"]["ndcg@50"] for tau, r in probes.items()}
    assert valid[0.5] > valid[0.05]  # the second value wins: not merely the first
    record = results["temperature_probe"]
    assert record["chosen"] == 0.5 and record["steps"] == 40
    assert record["valid"] == {"0.05": valid[0.05], "0.5": valid[0.5]}
    assert record["train_seconds"] == {"0.05": probes[0.05]["train_seconds"], "0.5": probes[0.5]["train_seconds"]}
    with open(os.path.join(model_dir, PROBE_DIR, "choice.json"), encoding="utf-8") as f:
        assert json.load(f) == record
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        saved = json.load(f)
    assert saved["temperature"] == 0.5 and saved["temperature_probe"] == [0.05, 0.5]
    steps = [r["step"] for r in read_metrics_csv(os.path.join(model_dir, PROBE_DIR, "tau-0.05", "metrics.csv"))]
    assert steps == [20, 40]


def test_the_chosen_tau_goes_on_exactly_as_a_run_at_that_tau_from_the_start(probed_run, tmp_path):
    model_dir, results = probed_run
    plain = training.train(probe_config(temperature=0.5, temperature_probe=()), str(tmp_path), verbose=0)
    rows = read_metrics_csv(os.path.join(model_dir, "metrics.csv"))
    plain_rows = read_metrics_csv(os.path.join(tmp_path, "metrics.csv"))
    assert [r["step"] for r in rows] == [r["step"] for r in plain_rows] == [20, 40, 60]
    for row, want in zip(rows, plain_rows):
        assert row["ndcg@50"] == pytest.approx(want["ndcg@50"], rel=1e-4, abs=1e-6)
    assert results["ndcg@50"] == pytest.approx(plain["ndcg@50"], rel=1e-4, abs=1e-6)
    # the chosen probe's periods are the run's first; their seconds carry the other probe's training
    probe_rows = read_metrics_csv(os.path.join(model_dir, PROBE_DIR, "tau-0.5", "metrics.csv"))
    other = _probe_results(model_dir, 0.05)["train_seconds"]
    for row, probe_row in zip(rows[:2], probe_rows, strict=True):
        assert row["train_seconds"] == pytest.approx(probe_row["train_seconds"] + other)
    assert results["train_seconds"] == pytest.approx(rows[-1]["train_seconds"]) and results["train_seconds"] > other


def test_a_finished_probed_run_is_read_not_trained(probed_run, caplog):
    model_dir, results = probed_run
    mtime = os.path.getmtime(os.path.join(model_dir, "results.json"))
    with caplog.at_level(logging.INFO, logger="cml_tf"):
        assert training.train(probe_config(), model_dir, verbose=0) == results
    assert os.path.getmtime(os.path.join(model_dir, "results.json")) == mtime
    assert "already finished" in caplog.text


def test_an_interrupted_probed_run_resumes_at_its_tau_without_probing_again(tmp_path, caplog):
    model_dir = str(tmp_path)
    training.train(probe_config(max_steps=40), model_dir, verbose=0)  # the run is its chosen probe
    os.unlink(os.path.join(model_dir, "results.json"))  # as if killed after step 40
    probe_mtimes = [
        os.path.getmtime(os.path.join(model_dir, PROBE_DIR, d, "results.json")) for d in ("tau-0.05", "tau-0.5")
    ]
    with caplog.at_level(logging.INFO, logger="cml_tf"):
        results = training.train(probe_config(), model_dir, verbose=0)  # the full length: the run goes on
    assert "temperature probe: tau" not in caplog.text and "resuming from step 40" in caplog.text
    assert [r["step"] for r in read_metrics_csv(os.path.join(model_dir, "metrics.csv"))] == [20, 40, 60]
    assert results["temperature_probe"]["chosen"] == 0.5
    again = [os.path.getmtime(os.path.join(model_dir, PROBE_DIR, d, "results.json")) for d in ("tau-0.05", "tau-0.5")]
    assert again == probe_mtimes


def test_overwrite_discards_the_probes_and_a_stale_probe_is_trained_again(tmp_path, caplog):
    model_dir = str(tmp_path)
    # a probe of another config (another learning rate) left where this run's τ = 0.5 probe goes; the run has
    # not started, so the probe is trained again rather than refused
    stale = probe_config(temperature=0.5, temperature_probe=(), max_steps=40, learning_rate=1e-2)
    training.train(stale, os.path.join(model_dir, PROBE_DIR, "tau-0.5"), verbose=0)
    with caplog.at_level(logging.INFO, logger="cml_tf"):
        first = training.train(probe_config(), model_dir, verbose=0)
    assert "holds a probe of another config: it is trained again" in caplog.text
    with open(os.path.join(model_dir, PROBE_DIR, "tau-0.5", "config.json"), encoding="utf-8") as f:
        assert json.load(f)["learning_rate"] == 1e-3
    # --overwrite with other probe values: the old probes go, the new ones are trained
    results = training.train(probe_config(temperature_probe=(0.5, 0.2)), model_dir, overwrite=True, verbose=0)
    assert sorted(os.listdir(os.path.join(model_dir, PROBE_DIR))) == ["choice.json", "tau-0.2", "tau-0.5"]
    assert set(results["temperature_probe"]["valid"]) == {"0.5", "0.2"}
    assert first["temperature_probe"]["valid"]["0.5"] == results["temperature_probe"]["valid"]["0.5"]


def test_a_probe_needs_validation_pairs_and_touches_nothing_without(tmp_path):
    with pytest.raises(ValueError, match="chooses τ on validation, and this split has none"):
        training.train(probe_config(valid_fraction=0.0), str(tmp_path / "run"), verbose=0)
    assert not os.path.exists(tmp_path / "run")


def test_ctrl_c_during_the_probe_says_the_probes_are_kept(tmp_path):
    from cml_tf.training.outputs import interrupted_message

    model_dir = tmp_path / "run"
    assert interrupted_message(str(model_dir)).startswith("interrupted before the first checkpoint: nothing was saved")
    (model_dir / PROBE_DIR / "tau-0.5").mkdir(parents=True)
    (model_dir / PROBE_DIR / "tau-0.2").mkdir()  # the probe being trained, before its first checkpoint
    assert interrupted_message(str(model_dir)).startswith("interrupted before the first checkpoint")
    (model_dir / PROBE_DIR / "tau-0.5" / "results.json").write_text("{}")  # one probe finished
    assert interrupted_message(str(model_dir)) == (
        f"interrupted during the temperature probe: run the same command to go on in {model_dir} (the probes trained "
        "so far are kept)"
    )
