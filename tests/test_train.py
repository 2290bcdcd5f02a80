"""The training command and `cml_tf.training.train`: run directory, resume, determinism, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT, kill_training, run_command, tiny_config

from cml_tf import training
from cml_tf.data import loaders
from cml_tf.training.callbacks import NonFiniteLoss
from cml_tf.training.config import PRESETS, Config
from cml_tf.training.data import TooLittleData, load_data, split_data
from cml_tf.training.outputs import RunError, read_metrics_csv
from cml_tf.training.run import Schedule


def run_cli(*args, timeout=300, env=None):
    """The command as a user runs it (no TF_CPP_MIN_LOG_LEVEL of ours), from the project root, stdout a pipe."""
    return run_command("cml_tf.train", *args, timeout=timeout, env=env, user_env=True)


TINY_FLAGS = ["--num_users=300", "--num_items=500", "--num_interactions=6000", "--batch_size=64"]
TINY_FLAGS.append("--num_candidates=200")
TF_STARTUP = ("cuInit", "absl::InitializeLog", "cudart_stub", "I0000", "E0000", "W0000", "oneDNN")


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
    rows = read_metrics_csv(os.path.join(model_dir, "metrics.csv"))
    assert [int(r["step"]) for r in rows] == [20, 40, 60]
    for column in ("step", "epoch", "loss", "ndcg@50", "map@50", "mmr", "pairs_per_sec"):
        assert column in rows[0]
    assert results["steps"] == 60
    best = max(rows, key=lambda r: r["ndcg@50"])
    assert results["best_step"] == int(best["step"])


def test_max_steps_is_exact_when_not_a_multiple_of_the_period(tmp_path):
    results = training.train(tiny_config(sampler="uniform", max_steps=47, eval_every=20), str(tmp_path), verbose=0)
    rows = read_metrics_csv(os.path.join(tmp_path, "metrics.csv"))
    assert [int(r["step"]) for r in rows] == [20, 40, 47]
    assert results["steps"] == 47


def test_a_time_budget_stops_the_run_at_the_first_validation_past_it(tmp_path):
    results = training.train(tiny_config(sampler="uniform", max_train_seconds=1e-9), str(tmp_path), verbose=0)
    rows = read_metrics_csv(os.path.join(tmp_path, "metrics.csv"))
    assert [int(r["step"]) for r in rows] == [20]  # of max_steps=60: the budget ended it after the first period
    assert results["steps"] == 20 and results["best_step"] == 20
    assert training.train(tiny_config(sampler="uniform", max_train_seconds=1e-9), str(tmp_path), verbose=0) == results
    rows = read_metrics_csv(os.path.join(tmp_path, "metrics.csv"))
    assert [int(r["step"]) for r in rows] == [20]  # finished: not trained again


def test_an_interrupted_run_over_its_budget_is_not_trained_further_and_a_larger_budget_goes_on(tmp_path):
    from cml_tf.training.callbacks import budget_spent

    rows = [{"step": 20, "train_seconds": 1.5}, {"step": 40, "train_seconds": 3.0}]
    assert budget_spent(rows, 3.0) and budget_spent(rows, 2.0)
    assert not budget_spent(rows, 3.5) and not budget_spent(rows, None) and not budget_spent([], 1.0)
    # an interrupted run (results.json removed after the first period) resumes under a larger budget: the length
    # fields, the budget among them, may change
    training.train(tiny_config(sampler="uniform", max_train_seconds=1e-9), str(tmp_path), verbose=0)
    os.unlink(os.path.join(tmp_path, "results.json"))
    results = training.train(tiny_config(sampler="uniform", max_train_seconds=1e6), str(tmp_path), verbose=0)
    rows = read_metrics_csv(os.path.join(tmp_path, "metrics.csv"))
    assert [int(r["step"]) for r in rows] == [20, 40, 60] and results["steps"] == 60


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
    rows = read_metrics_csv(os.path.join(part_dir, "metrics.csv"))
    assert [int(r["step"]) for r in rows] == [20, 40, 60]
    for key in ("map@50", "ndcg@50", "recall@50"):
        assert resumed[key] == pytest.approx(full[key], rel=1e-4, abs=1e-6), key
    np.testing.assert_allclose(
        np.load(os.path.join(part_dir, "embeddings", "item_embeddings.npy")),
        np.load(os.path.join(tmp_path, "full", "embeddings", "item_embeddings.npy")),
        atol=1e-5,
    )


def test_finished_run_says_so_with_its_results(finished_run, caplog):
    model_dir, results = finished_run
    with caplog.at_level("INFO", logger="cml_tf"):
        assert training.train(tiny_config(sampler="2stage"), model_dir, verbose=0) == results
    assert f"{model_dir}: already finished; results: ndcg@50 {results['ndcg@50']:.4f}, map@50 " in caplog.text
    assert f"(best step {results['best_step']})" in caplog.text


def test_num_candidates_above_the_catalog_is_lowered_with_a_notice_and_saved(tmp_path, caplog):
    with caplog.at_level("INFO", logger="cml_tf"):
        training.train(tiny_config(num_candidates=10_000, max_steps=20), str(tmp_path), verbose=0)
    assert "num_candidates=10000 exceeds the 500 items: using num_candidates=500" in caplog.text  # Python: fields
    assert Config.load(str(tmp_path / "config.json")).num_candidates == 500
    # the same config again is the same run (finished), not "a different config"
    training.train(tiny_config(num_candidates=10_000, max_steps=20), str(tmp_path), verbose=0)


def test_batch_larger_than_the_training_pairs_fails_before_the_run_directory(tmp_path):
    with pytest.raises(TooLittleData, match=r"^batch_size=5000 exceeds the 3,993 training pairs"):
        training.train(tiny_config(batch_size=5000), str(tmp_path / "run"), verbose=0)
    assert not (tmp_path / "run").exists()


def test_a_directory_whose_run_never_checkpointed_is_not_refused(tmp_path):
    # e.g. left by a run killed before its first checkpoint (or by an older version that failed late)
    os.makedirs(tmp_path / "tensorboard")
    with open(tmp_path / "config.json", "w") as f:
        json.dump(tiny_config(batch_size=32).resolved().to_dict(), f)
    results = training.train(tiny_config(max_steps=20), str(tmp_path), verbose=0)
    assert results["steps"] == 20
    assert Config.load(str(tmp_path / "config.json")).batch_size == 64


def _loss_turns_infinite_at(monkeypatch, step: int):
    """From (1-based) training step ``step`` on the loss is -inf (the weights' gradients stay finite)."""
    import tensorflow as tf

    from cml_tf.models import CML

    original = CML.compute_losses

    def compute_losses(self, users, positives, negatives, training=True):
        terms = original(self, users, positives, negatives, training=training)
        late = tf.cast(self.optimizer.iterations + 1 >= step, terms["total"].dtype)
        terms["total"] = terms["total"] + tf.math.log(1.0 - late)
        return terms

    monkeypatch.setattr(CML, "compute_losses", compute_losses)


def test_a_non_finite_loss_stops_the_run_at_its_step(tmp_path, monkeypatch):
    _loss_turns_infinite_at(monkeypatch, 25)
    with pytest.raises(NonFiniteLoss) as e:
        training.train(tiny_config(sampler="uniform"), str(tmp_path), verbose=0)
    assert e.value.step == 25
    assert str(e.value) == (
        "the training loss is not finite (NaN or infinite) at step 25: training stopped; the last checkpoint "
        "(step 20) is kept; lower --learning_rate=0.001 or check the data"
    )
    # stopped at the end of that execution (steps 21-30), not at the end of the period or of the run
    rows = read_metrics_csv(str(tmp_path / "metrics.csv"))
    assert [int(r["step"]) for r in rows] == [20]
    assert not (tmp_path / "results.json").exists()


def test_a_run_that_stops_before_its_first_checkpoint_leaves_nothing(tmp_path, monkeypatch):
    _loss_turns_infinite_at(monkeypatch, 3)
    model_dir = tmp_path / "run"
    with pytest.raises(NonFiniteLoss, match="at step 3: training stopped; lower --learning_rate"):
        training.train(tiny_config(sampler="uniform"), str(model_dir), verbose=0)
    assert not model_dir.exists()
    os.makedirs(model_dir)
    (model_dir / "notes.txt").write_text("mine")
    with pytest.raises(NonFiniteLoss):
        training.train(tiny_config(sampler="uniform"), str(model_dir), verbose=0)
    assert os.listdir(model_dir) == ["notes.txt"]  # what the run wrote is gone, the user's file is not


def test_progress_is_one_line_per_period_when_stdout_is_not_a_terminal(tmp_path, capsys):
    training.train(tiny_config(sampler="uniform", max_steps=47, eval_every=20), str(tmp_path))
    lines = capsys.readouterr().out.splitlines()
    # 3,993 training pairs, batch 64: epoch = step * 64 / 3,993
    assert [line.split(":")[0] for line in lines] == [
        "period 1/3 (steps 1-20, epoch 0.321 of 0.753)",
        "period 2/3 (steps 21-40, epoch 0.641 of 0.753)",
        "period 3/3 (steps 41-47, epoch 0.753 of 0.753)",
    ]
    assert all(" val ndcg@50 " in line and line.endswith(" pairs/s") for line in lines)


def test_a_different_config_in_the_same_directory_is_refused(tmp_path, finished_run):
    model_dir, _ = finished_run
    with pytest.raises(RunError, match="different config.*batch_size"):
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
    killed = kill_training(args, model_dir)
    assert killed, "the first run ended before it could be killed: nothing was resumed"
    import tensorflow as tf

    done = int(tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).rsplit("-", 1)[1])
    # the resume point: the last checkpoint, at a validation (metrics.csv is written just before it; on an idle
    # machine the run may pass one or two more validations before the kill lands)
    assert 40 <= done < 400 and done % 40 == 0
    out = run_cli(*args)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"{model_dir}: resuming from step {done} of 400" in out.stderr
    results = json.loads(out.stdout[out.stdout.index("{") :])
    rows = read_metrics_csv(os.path.join(model_dir, "metrics.csv"))
    steps = [int(r["step"]) for r in rows]
    assert steps == list(range(40, 401, 40)), steps  # no row lost, none repeated
    assert results["steps"] == 400 and results["model_dir"] == model_dir
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{model_dir}: already finished; results: ndcg@50 {results['ndcg@50']:.4f}" in again.stderr
    assert json.loads(again.stdout[again.stdout.index("{") :]) == results


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
        ("--learning_rate=inf", "error: --learning_rate must be a finite number, got inf"),
        ("--margin=nan", "error: --margin must be a finite number, got nan"),
        ("--split=original --fold=2", "error: --fold does not apply to --split=original"),
        ("--split=original --valid_fraction=0.2", "error: --valid_fraction does not apply to --split=original"),
        ("--sampler=uniform --num_candidates=50", "error: --num_candidates does not apply to --sampler=uniform"),
        ("--sampler=uniform --beta=0.5", "error: --beta does not apply to --sampler=uniform"),
        ("--feature_l2_reg=0.5", "error: --feature_l2_reg does not apply without --features"),
        ("--dataset=echonest --data_path=/nonexistent/t.txt", "error: /nonexistent/t.txt: no such file or directory"),
        ("--batch_size=abc", "error: flag --batch_size=abc"),
        ("--sampler=uniform --stage2_cutoff=0.5", "error: --stage2_cutoff does not apply to --sampler=uniform"),
        ("--sampler=popular --stage2_weight_cap=4", "error: --stage2_weight_cap does not apply to --sampler=popular"),
        ("--stage2_uniform_mix=1.5", "error: --stage2_uniform_mix must be in [0, 1], got 1.5"),
        ("--popularity_uniform_mix=-0.1", "error: --popularity_uniform_mix must be in [0, 1], got -0.1"),
        (
            "--sampler=uniform --popularity_uniform_mix=0.5",
            "error: --popularity_uniform_mix does not apply to --sampler=uniform",
        ),
        ("--hinge=max", "error: flag --hinge=max"),
        ("--sampler=uniform --stage2_replacement", "error: --stage2_replacement does not apply to --sampler=uniform"),
        ("--batch_distinct_negatives", "error: --batch_distinct_negatives does not apply to --sampler=2stage"),
        ("--temperature=0.5", "error: --temperature does not apply to --loss=hinge (only softmax)"),
        ("--loss=softmax --temperature=0", "error: --temperature must be positive, got 0.0"),
        ("--loss=softmax --stage2_weight_cap=2", "error: --stage2_weight_cap does not apply to --loss=softmax"),
        ("--loss=softmax --sampler=dns", "error: --sampler=dns picks hinge negatives by the current scores"),
        ("--loss=softmax --strategy=mirrored", "error: --loss=softmax runs on one device"),
        ("--dns_k=4", "error: --dns_k does not apply to --sampler=2stage (only dns)"),
        ("--loss=softmax --num_negatives=5", "error: --num_negatives does not apply to --loss=softmax with --sampler"),
        ("--preset=accurate --num_negatives=5", "error: --num_negatives does not apply to --loss=softmax with"),
        ("--loss=softmax --hinge=min", "error: --hinge does not apply to --loss=softmax"),
        ("--preset=accurate --preset=collmetric", "error: --preset given 2 times"),
        ("--max_train_seconds=0", "error: --max_train_seconds must be positive, got 0.0"),
        (
            "--preset=accurate --temperature=0.3 --temperature_probe=0.5,0.2",
            "error: --temperature and --temperature_probe: give one",
        ),
        ("--preset=accurate --temperature_probe=warm", "error: --temperature_probe: expected comma-separated numbers"),
        ("--preset=accurate --temperature_probe=0.5", "error: --temperature_probe needs 2 or more distinct values"),
        ("--preset=accurate --temperature_probe=0.5,0", "error: --temperature_probe values must be positive"),
        ("--temperature_probe=0.5,0.2", "error: --temperature_probe does not apply to --loss=hinge (only softmax)"),
        (
            "--loss=softmax --temperature_probe_epochs=2",
            "error: --temperature_probe_epochs does not apply without --temperature_probe",
        ),
        ("--user_history_weight=1", "error: --user_history_weight must be in [0, 1), got 1.0"),
        ("--model=lrml --user_history_weight=0.5", "error: --user_history_weight applies only to --model=cml"),
        ("--user_history_size=5", "error: --user_history_size does not apply without --user_history_weight"),
        ("--user_history_weight=0.5 --user_history_size=0", "error: --user_history_size must be positive, got 0"),
    ],
)
def test_cli_bad_flags_fail_before_training_with_the_flag_named(flag, message, tmp_path):
    out = run_cli(*flag.split(), f"--model_dir={tmp_path / 'run'}", timeout=120)
    assert out.returncode == 1
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr  # one line, no traceback, no TensorFlow lines
    assert not os.path.exists(tmp_path / "run")


def test_cli_checks_flags_and_files_before_tensorflow_is_imported(tmp_path):
    code = (
        "import sys\n"
        "from cml_tf import train\n"
        "try:\n"
        "    train.run(sys.argv)\n"
        "except SystemExit as e:\n"
        "    print('exit', e.code, 'tensorflow' in sys.modules)\n"
    )
    for args in (["--dataset=echonest", f"--data_path={tmp_path}/none.txt"], ["--learning_rate=-1"]):
        out = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert out.stdout.strip() == "exit 1 False", (args, out.stdout, out.stderr)
        assert out.stderr.startswith("error: ")


def test_cli_help_shows_the_data_flags_first_and_exits_0():
    out = run_cli("--help", timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for flag in ("--dataset", "--data_path", "--min_playcount", "--min_user_interactions", "--min_item_users"):
        assert f"  {flag}" in text, flag
    order = [text.index(f"\n  --{name}") for name in ("dataset", "data_path", "min_playcount", "sampler", "seed")]
    assert order == sorted(order)
    assert "default 1e-3 on the sphere, 1/sqrt(d) in the ball" in text  # not "1/sqrt(d)" alone
    assert "kfold<fold> or original" in text and "-f<fold>" not in text
    assert "d: dimension of the user and item embeddings" in text
    assert "no_cache" not in text and "--[no]use_cache" in text
    assert "-v 1" in text and "--helpfull" in text
    assert text.count("-D²(u,v)/τ") == 2 and "-D(u,v)/τ" not in text  # the softmax logits: squared distances


def test_cli_prints_only_its_own_lines_and_one_line_per_period_into_a_file(tmp_path):
    args = [*TINY_FLAGS, "--max_steps=40", "--eval_every=20", f"--model_dir={tmp_path / 'run'}"]
    out = run_cli(*args)
    assert out.returncode == 0, out.stderr[-2000:]
    for marker in TF_STARTUP:
        assert marker not in out.stderr, (marker, out.stderr)
    assert out.stderr.splitlines() == [
        "synthetic: 300 users x 500 items, 6,000 pairs; split kfold, fold 0 of 4: 3,993 training, 402 validation, "
        "1,605 test pairs"
    ]
    lines = out.stdout[: out.stdout.index("{")].splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("period 1/2 (steps 1-20, epoch 0.321 of 0.641): loss ")  # 20 x 64 / 3,993 pairs
    assert lines[1].startswith("period 2/2 (steps 21-40, epoch 0.641 of 0.641): loss ")
    assert "val ndcg@50 " in lines[1] and "pairs/s" in lines[1]
    assert "\r" not in out.stdout and "\x08" not in out.stdout and "Epoch" not in out.stdout
    verbose = run_cli(*args, "-v", "1", "--overwrite")  # asked for: TensorFlow's own start-up lines
    assert verbose.returncode == 0, verbose.stderr[-2000:]
    assert any(marker in verbose.stderr for marker in TF_STARTUP), verbose.stderr


def test_cli_a_run_that_fails_on_the_data_claims_no_directory_and_names_the_filters(shared_data, tmp_path):
    sample = os.path.join(shared_data, "echonest", "train_triplets_sample.txt")
    model_dir = tmp_path / "run"
    out = run_cli("--dataset=echonest", f"--data_path={sample}", f"--model_dir={model_dir}")
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1] == (
        "error: --batch_size=256 exceeds the 73 training pairs (the data has 29 users x 16 items after its "
        "filters); use --batch_size=73 or less; or loosen the filters: --min_playcount (now 5), "
        "--min_user_interactions (now 21), --min_item_users (now 5)"
    )
    assert not model_dir.exists()
    # nothing left at all: the filter flags again, before TensorFlow
    out = run_cli("--dataset=echonest", f"--data_path={sample}", "--min_playcount=100000", f"--model_dir={model_dir}")
    assert out.returncode == 1 and "no interactions left after filtering" in out.stderr
    assert "loosen the filters: --min_playcount (now 100000), --min_user_interactions (now 21)" in out.stderr
    assert not model_dir.exists()


def _readme_echonest_command() -> list[str]:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    # a command may go on over lines that end in a backslash, as a shell reads it
    lines = text.replace("\\\n", " ").splitlines()
    lines = [line for line in lines if "train_triplets_sample.txt" in line and "cml_tf.train" in line]
    assert len(lines) == 1, lines
    command = lines[0].split("#")[0].split()
    assert command[:3] == ["python", "-m", "cml_tf.train"]
    return command[3:]


def test_readme_echonest_sample_command_runs_as_printed(shared_data, tmp_path):
    # as printed, only shortened (and in a temporary run directory) for the test
    args = _readme_echonest_command()
    out = run_cli(*args, "--max_steps=20", "--eval_every=20", f"--model_dir={tmp_path / 'run'}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "echonest: 628 users x 1,877 items" in out.stderr
    assert "--num_candidates=2000 exceeds the 1,877 items: using --num_candidates=1877" in out.stderr
    assert Config.load(str(tmp_path / "run" / "config.json")).num_candidates == 1877  # the value used is saved


def _from_flags(expression: str, argvs) -> list:
    """``expression`` (Python, over ``train``) evaluated after `python -m cml_tf.train` parsed each argv, in a fresh
    process: experiments.table2, which other tests import, defines flags of the same names, so cml_tf.train cannot
    be imported beside it."""
    code = (
        "import json, sys\n"
        "from cml_tf import train\n"
        "out = []\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    train.FLAGS.unparse_flags()\n"
        "    train.FLAGS(['train', *argv])\n"
        f"    out.append({expression})\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps([list(a) for a in argvs])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])


def _configs_from_flags(*argvs: tuple[str, ...]) -> dict[tuple[str, ...], Config]:
    """The resolved Config `python -m cml_tf.train` builds from each argv."""
    configs = _from_flags("train.config_from_flags().resolved().to_dict()", argvs)
    return {argv: Config.from_dict(c) for argv, c in zip(argvs, configs)}


def test_stage2_and_split_seed_flags_map_to_config():
    argvs = [
        (),
        ("--stage2_weight_cap=none",),
        ("--stage2_weight_cap=20",),
        ("--stage2_refresh_every=never",),
        ("--stage2_refresh_every=100",),
        ("--split=original",),
        ("--split=original", "--seed=7"),
        ("--split=original", "--split_seed=3"),
    ]
    configs = _configs_from_flags(*argvs)

    def config(*argv):
        return configs[argv]

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
    from cml_tf.data.splits import make_split

    data = loaders.load("synthetic", None, num_users=60, num_items=80, num_interactions=1500)
    reference = make_split(data.matrix, "original", seed=1)
    for seed in (0, 5):
        split = split_data(Config(split="original", seed=seed), data)
        for a, b in ((split.train, reference.train), (split.valid, reference.valid), (split.test, reference.test)):
            assert (a != b).nnz == 0


def test_cli_records_the_preset_and_refuses_no_flag_it_sets():
    configs = _configs_from_flags(("--preset=accurate",), ("--loss=softmax",), ())
    assert [configs[a].preset for a in configs] == ["accurate", "paper", "paper"]
    saved = configs[("--preset=accurate",)].resolved().to_dict()
    assert saved["hinge"] is None and saved["num_negatives"] is None and saved["preset"] == "accurate"


def test_collmetric_preset_maps_to_config():
    config = Config(**PRESETS["collmetric"]).resolved()
    assert (config.geometry, config.optimizer, config.learning_rate, config.margin) == ("ball", "adagrad", 0.1, 1.9)
    assert (config.num_negatives, config.embedding_dim, config.split) == (20, 100, "original")
    assert config.use_rank_weight and config.eval_users == 1000
    assert config.init_stddev == pytest.approx(0.1)  # 1/sqrt(d) in the ball


def test_original_preset_and_the_negatives_flags_map_to_config():
    argvs = [
        ("--preset=original",),
        ("--preset=original", "--sampler=popular"),
        ("--nostage2_mask_opposite", "--stage2_replacement", "--stage2_uniform_mix=0.25", "--hinge=mean"),
        ("--sampler=popular", "--batch_distinct_negatives"),
    ]
    configs = _configs_from_flags(*argvs)
    original = configs[argvs[0]]
    assert (original.stage2_weight_cap, original.stage2_refresh_every, original.popularity_smoothing) == (None, -1, 0.0)
    assert original.stage2_mask_opposite and not original.stage2_replacement and original.gor_weight == 0.0
    assert configs[argvs[1]].batch_distinct_negatives and configs[argvs[1]].sampler == "popular"
    options = configs[argvs[2]]
    assert not options.stage2_mask_opposite and options.stage2_replacement
    assert (options.stage2_uniform_mix, options.hinge) == (0.25, "mean")
    assert configs[argvs[3]].batch_distinct_negatives


def test_hinge_defaults_to_mean_only_for_2stage_with_several_negatives():
    argvs = [
        ("--sampler=2stage", "--num_negatives=5"),
        ("--sampler=2stage", "--num_negatives=1"),
        ("--sampler=uniform", "--num_negatives=5"),
        ("--sampler=popular", "--num_negatives=2"),
        ("--sampler=2stage", "--num_negatives=5", "--hinge=min"),  # the paper's formula, one flag away
        ("--preset=original", "--num_negatives=5"),
    ]
    configs = _configs_from_flags(*argvs)
    assert [configs[a].hinge for a in argvs] == ["mean", "min", "min", "min", "min", "min"]


def test_stage1_uniform_mix_is_off_unless_asked():
    argvs = [
        ("--sampler=2stage", "--num_negatives=5"),
        ("--sampler=popular", "--popularity_uniform_mix=0.25"),
        ("--sampler=2stage", "--num_negatives=5", "--popularity_uniform_mix=0.5"),
        ("--preset=original", "--num_negatives=5"),
    ]
    configs = _configs_from_flags(*argvs)
    assert [configs[a].popularity_uniform_mix for a in argvs] == [0.0, 0.25, 0.5, 0.0]


def test_accurate_preset_is_the_softmax_over_the_stage1_candidates():
    argvs = [
        ("--preset=accurate",),
        ("--preset=accurate", "--temperature=0.2"),
        ("--preset=accurate", "--temperature_probe=none"),
        ("--preset=accurate", "--temperature_probe=0.1,0.3,1", "--temperature_probe_epochs=2"),
    ]
    configs = _configs_from_flags(*argvs)
    accurate = configs[argvs[0]]
    assert (accurate.sampler, accurate.loss, accurate.temperature, accurate.epochs) == ("2stage", "softmax", 0.5, 50.0)
    assert accurate.gor_weight == 0.0 and accurate.num_candidates == 2000
    assert (accurate.temperature_probe, accurate.temperature_probe_epochs) == ((0.5, 0.2), 5.0)
    # an explicit τ wins, and is the τ run: no probe replaces it
    assert (configs[argvs[1]].temperature, configs[argvs[1]].temperature_probe) == (0.2, ())
    assert (configs[argvs[2]].temperature, configs[argvs[2]].temperature_probe) == (0.5, ())
    assert (configs[argvs[3]].temperature_probe, configs[argvs[3]].temperature_probe_epochs) == ((0.1, 0.3, 1.0), 2.0)


def test_loss_flags_map_to_config():
    argvs = [
        ("--loss=softmax", "--temperature=0.3", "--learn_temperature", "--softmax_in_batch"),
        ("--sampler=dns", "--dns_k=16"),
        ("--sampler=in_batch", "--loss=softmax"),
    ]
    configs = _configs_from_flags(*argvs)
    softmax = configs[argvs[0]]
    assert (softmax.loss, softmax.temperature, softmax.learn_temperature, softmax.softmax_in_batch) == (
        "softmax",
        0.3,
        True,
        True,
    )
    assert softmax.gor_weight == 0.0  # the paper's λ_g belongs to its hinge
    assert (configs[argvs[1]].sampler, configs[argvs[1]].dns_k) == ("dns", 16)
    assert configs[argvs[2]].sampler == "in_batch"


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


@pytest.mark.parametrize(
    "fields, want",
    [
        # 2 epochs of 1,000 pairs at batch 100: 20 steps; a period of 7 steps runs as one execution of 7
        ({"epochs": 2.0, "eval_every": 7, "steps_per_execution": 20}, (20, 7, 7, 3)),
        # the largest divisor of 10 up to 4 is 2 (at least half of 4): executions of 2, periods stay 10
        ({"epochs": 2.0, "eval_every": 10, "steps_per_execution": 4}, (20, 10, 2, 2)),
        # 9 has no divisor >= 4 up to 8: executions of 8, the period rounded up to 16
        ({"epochs": 2.0, "eval_every": 9, "steps_per_execution": 8}, (20, 16, 8, 2)),
        # max_steps wins over epochs; a period longer than the run is the run
        ({"max_steps": 5, "eval_every": 50, "steps_per_execution": 20}, (5, 5, 5, 1)),
    ],
)
def test_schedule_cuts_the_run_into_periods_of_whole_executions(fields, want):
    schedule = Schedule.of(Config(batch_size=100, **fields), pairs=1000)
    got = (schedule.total_steps, schedule.eval_every, schedule.steps_per_execution, schedule.num_periods)
    assert got == want


# ------------------------------------------------------------------------------ a run's data, name and length
def _interrupted(model_dir: str, config: Config, steps: int) -> None:
    """A run of ``config`` "interrupted" after ``steps`` steps: trained that far (checkpoint at ``steps``), with
    no results and ``config``'s own config.json, as a killed run leaves it."""
    import dataclasses

    training.train(dataclasses.replace(config, max_steps=steps), model_dir, verbose=0)
    os.unlink(os.path.join(model_dir, "results.json"))
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(config.resolved().to_dict(), f)


def _fewer_users(config: Config, n_users: int):
    """(interactions, split) of ``config``'s data cut to its first ``n_users`` users (as a shortened users.dat)."""
    from cml_tf.data.interactions import Interactions

    full, _ = load_data(config)
    less = Interactions(full.matrix[:n_users], full.user_ids[:n_users], full.item_ids)
    return less, split_data(config, less)


def _read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_a_run_on_other_data_is_refused_in_one_line_and_nothing_is_rewritten(tmp_path):
    import dataclasses

    config = tiny_config(sampler="uniform", max_steps=40)
    model_dir = str(tmp_path / "run")
    first = training.train(config, model_dir, verbose=0)
    other = _fewer_users(config, 250)
    saved_config, saved_results = _read(tmp_path / "run" / "config.json"), _read(tmp_path / "run" / "results.json")
    moved = dataclasses.replace(config, data_path="/elsewhere/users.dat")  # the same path is no excuse either
    for cfg in (config, moved):
        with pytest.raises(RunError) as e:
            training.train(cfg, model_dir, data=other, verbose=0)
        message = str(e.value)
        assert "\n" not in message
        assert message.startswith(f"--model_dir={model_dir} holds a run trained on other data (the run: ")
        assert "250 users x 500 items" in message and "300 users x 500 items" in message
        assert message.endswith("use another --model_dir, or --overwrite to start afresh")
    assert _read(tmp_path / "run" / "config.json") == saved_config
    assert _read(tmp_path / "run" / "results.json") == saved_results
    # the same data (its content: here under another path, as in a moved checkout) is the same finished run
    assert training.train(moved, model_dir, data=load_data(config), verbose=0) == first
    assert _read(tmp_path / "run" / "config.json") == saved_config  # a finished run is only read
    # an interrupted run: refused the same way, before config.json is written
    _interrupted(str(tmp_path / "part"), dataclasses.replace(config, max_steps=60), 20)
    saved_config = _read(tmp_path / "part" / "config.json")
    with pytest.raises(RunError, match="holds a run trained on other data"):
        training.train(dataclasses.replace(config, max_steps=60), str(tmp_path / "part"), data=other, verbose=0)
    assert _read(tmp_path / "part" / "config.json") == saved_config
    assert read_metrics_csv(str(tmp_path / "part" / "metrics.csv"))[-1]["step"] == 20


def test_a_run_from_before_data_json_resumes_from_its_data_path_and_records_the_fingerprint(tmp_path):
    import dataclasses

    config = tiny_config(sampler="uniform", max_steps=40)
    model_dir = str(tmp_path / "run")
    _interrupted(model_dir, config, 20)
    os.unlink(os.path.join(model_dir, "data.json"))  # as an older version left it
    with pytest.raises(RunError, match=r"recorded no data fingerprint .* on --data_path=None, not /moved/x"):
        training.train(dataclasses.replace(config, data_path="/moved/x"), model_dir, data=load_data(config), verbose=0)
    assert training.train(config, model_dir, verbose=0)["steps"] == 40  # same path: resumed, and now bound
    with open(os.path.join(model_dir, "data.json")) as f:
        assert json.load(f)["fingerprint"] == load_data(config)[0].fingerprint()


def test_an_interrupted_run_resumes_with_a_lower_max_steps_as_if_it_had_been_asked_from_the_start(tmp_path):
    import dataclasses

    long = tiny_config(sampler="uniform", max_steps=100, eval_every=20)
    model_dir = str(tmp_path / "part")
    _interrupted(model_dir, long, 40)
    saved = _read(tmp_path / "part" / "config.json")
    # already past the new end: said in one line, nothing rewritten
    with pytest.raises(RunError) as e:
        training.train(dataclasses.replace(long, max_steps=30), model_dir, verbose=0)
    assert str(e.value) == (
        f"--model_dir={model_dir} holds a run trained to step 40, past the end of this one (--max_steps=30: 30 "
        "steps); ask for 40 steps or more to go on with it, or use another --model_dir, or --overwrite to start afresh"
    )
    assert _read(tmp_path / "part" / "config.json") == saved
    # lowered to 60: goes on from step 40 to 60, and equals a run asked for 60 steps from the start
    short = dataclasses.replace(long, max_steps=60)
    resumed = training.train(short, model_dir, verbose=0)
    reference = training.train(short, str(tmp_path / "full"), verbose=0)
    assert [int(r["step"]) for r in read_metrics_csv(os.path.join(model_dir, "metrics.csv"))] == [20, 40, 60]
    assert Config.load(os.path.join(model_dir, "config.json")).max_steps == 60
    for key in ("ndcg@50", "map@50", "recall@50", "best_step", "steps"):
        assert resumed[key] == pytest.approx(reference[key], rel=1e-4, abs=1e-6), key
    np.testing.assert_allclose(
        np.load(tmp_path / "part" / "embeddings" / "item_embeddings.npy"),
        np.load(tmp_path / "full" / "embeddings" / "item_embeddings.npy"),
        atol=1e-5,
    )


def test_default_run_directories_tell_loss_preset_and_data_file_apart():
    sample = "../shared/data/echonest/train_triplets_sample.txt"
    readme = ("--dataset=echonest", f"--data_path={sample}", "--min_playcount=1", "--sampler=2stage")
    argvs = [
        (),
        ("--loss=softmax",),
        readme,
        (*readme, "--preset=accurate"),
        (*readme, "--preset=original"),
        ("--dataset=echonest", "--data_path=../shared/data/echonest/train_triplets_head.txt", "--min_playcount=1"),
        ("--dataset=citeulike", "--data_path=../shared/data/citeulike-t", "--sampler=uniform", "--num_negatives=5"),
        ("--sampler=in_batch", "--loss=softmax"),
    ]
    dirs = _from_flags("train.default_model_dir(train.config_from_flags(), train.FLAGS.preset)", argvs)
    names = [os.path.relpath(p, "runs") for p in dirs]
    assert names == [
        "synthetic-2stage-b256-n1-kfold0",  # the README's first run
        "synthetic-2stage-softmax-b256-kfold0",  # |N_ij| is not read by the softmax over the candidates
        "echonest-train_triplets_sample-2stage-b256-n1-kfold0",  # the README's Echonest run
        "echonest-train_triplets_sample-accurate-2stage-softmax-b256-kfold0",
        "echonest-train_triplets_sample-original-2stage-b256-n1-kfold0",
        "echonest-train_triplets_head-2stage-b256-n1-kfold0",
        "citeulike-uniform-b256-n5-kfold0",  # a directory as --data_path: no file name
        "synthetic-in_batch-softmax-b256-kfold0",
    ]
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    assert f"runs/{names[0]}/" in text and f"runs/{names[2]}/" in text


def test_cli_ctrl_c_before_the_first_checkpoint_says_nothing_was_saved(tmp_path):
    import signal
    import time

    model_dir = tmp_path / "run"
    args = [*TINY_FLAGS, "--max_steps=100000", "--eval_every=100000", "--verbose=0", f"--model_dir={model_dir}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cml_tf.train", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""},
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (model_dir / "config.json").exists():
        time.sleep(0.05)
    time.sleep(1.0)  # training has started: config.json is written just before the model is built
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert err.splitlines()[-1] == (
        f"interrupted before the first checkpoint: nothing was saved; run the same command to start {model_dir} again"
    )
    assert not model_dir.exists()


def test_a_user_tower_run_saves_the_towers_user_vectors_that_reproduce_its_test_metrics(tmp_path):
    """--user_history_weight end to end: the saved user embeddings are the tower's (not the user table's rows), and
    ranking with them reproduces results.json (what recommend and the export serve)."""
    from cml_tf.evaluation.evaluator import Evaluator

    config = tiny_config(loss="softmax", sampler="2stage", user_history_weight=0.5, user_history_size=5)
    results = training.train(config, str(tmp_path / "tower"), verbose=0)
    plain = training.train(tiny_config(loss="softmax", sampler="2stage"), str(tmp_path / "plain"), verbose=0)
    assert results["ndcg@50"] != plain["ndcg@50"]
    emb = tmp_path / "tower" / "embeddings"
    users, items = np.load(emb / "user_embeddings.npy"), np.load(emb / "item_embeddings.npy")
    np.testing.assert_allclose(np.linalg.norm(users, axis=1), 1.0, rtol=1e-5)
    _, split = load_data(config.resolved())
    test = Evaluator.for_split(split, "test", "cml", k=50).evaluate(users, items)
    assert float(test["ndcg@50"]) == pytest.approx(results["ndcg@50"], rel=1e-5)
    with open(tmp_path / "tower" / "config.json", encoding="utf-8") as f:
        saved = json.load(f)
    assert (saved["user_history_weight"], saved["user_history_size"]) == (0.5, 5)
    # the best checkpoint's model: the saved users are its tower's vectors, not its normalised user rows
    import tensorflow as tf

    from cml_tf.training.run import build_model

    model = build_model(config.resolved(), *split.train.shape, train=split.train)
    best = tf.train.latest_checkpoint(str(tmp_path / "tower" / "best"))
    tf.train.Checkpoint(model=model, optimizer=model.optimizer).restore(best).expect_partial()
    rows = model.user_embedding.embeddings.numpy()
    np.testing.assert_allclose(users, model.user_vectors(tf.range(len(rows))).numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(users, rows / np.linalg.norm(rows, axis=1, keepdims=True), atol=1e-3)
