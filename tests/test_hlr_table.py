"""experiments/hlr_table.py: the learning-rate screen on validation, --lr_from, test-user samples, resuming and the
table that keeps every invocation's data sets."""

from __future__ import annotations

import csv
import json
import os

import pytest

from experiments import hlr_table

ARGS = ["--seeds=0,1", "--epochs=2", "--evals=2", "--eval_users=60", "--baseline_trials=1", "--methods=cml-uniform"]


@pytest.fixture()
def two_datasets(monkeypatch):
    # a second (differently seeded) synthetic set stands for another data set
    name, path, options = hlr_table.DATASETS["synthetic"]
    monkeypatch.setitem(hlr_table.DATASETS, "synthetic2", (name, path, {**options, "seed": 7}))


def read_csv(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # a whole runner / processes end to end (default run kept under 10 minutes)
def test_screen_picks_best_validation_rate_and_lr_from_reuses_it(tmp_path, two_datasets):
    out, res = str(tmp_path / "runs"), str(tmp_path / "res")
    dirs = [f"--out_dir={out}", f"--results_dir={res}"]
    # the reference rate (0: 7.5e-4) against a large one: at 2 epochs the large one validates far better
    args = [*ARGS, "--learning_rates=0,0.05", "--baselines=popularity"]
    assert hlr_table.cli(["--datasets=synthetic", *args, *dirs]) == 0
    valid = {}
    for rate in ("lr0", "lr0.05"):
        with open(os.path.join(out, "synthetic", "cml-uniform", rate, "seed0", "results.json")) as f:
            valid[rate] = json.load(f)["valid"]["ndcg@10"]
    best = max(valid, key=valid.get)
    assert best == "lr0.05"
    # the second seed ran only at the chosen rate
    assert os.path.exists(os.path.join(out, "synthetic", "cml-uniform", best, "seed1", "results.json"))
    assert not os.path.exists(os.path.join(out, "synthetic", "cml-uniform", "lr0", "seed1"))
    rows = read_csv(os.path.join(res, "results.csv"))
    assert [(r["method"], r["seed"], r["lr"]) for r in rows if r["kind"] == "model"] == [
        ("cml-uniform", "0", "0.05"),
        ("cml-uniform", "1", "0.05"),
    ]
    screen = read_csv(os.path.join(res, "lr_screen.csv"))
    assert {(r["lr"], r["chosen"]) for r in screen} == {("0.0", "False"), ("0.05", "True")}

    # a row of a method this version does not know (an earlier table's) is kept and sorted last
    with open(os.path.join(res, "results.csv"), "a", encoding="utf-8") as f:
        f.write("synthetic,retired-model,0,0.01,runs/x,0.1,0.1,0.1,0.1,0.1,0.1,1.0,0.1,1,1,1,1,10,model\n")

    # another data set with the rate chosen on the first one, a sample of 40 test users (models and baselines)
    args2 = [*ARGS, "--learning_rates=0,0.05", "--lr_from=synthetic", "--test_users=40", "--baselines=popularity"]
    assert hlr_table.cli(["--datasets=synthetic2", *args2, *dirs]) == 0
    assert sorted(os.listdir(os.path.join(out, "synthetic2", "cml-uniform"))) == ["lr0.05"]
    rows = read_csv(os.path.join(res, "results.csv"))
    assert sorted({r["dataset"] for r in rows}) == ["synthetic", "synthetic2"]  # the first data set is kept
    assert {r["test_users"] for r in rows if r["dataset"] == "synthetic2"} == {"40"}
    table = open(os.path.join(res, "hlr_table.md"), encoding="utf-8").read()
    assert "### synthetic\n" in table and "### synthetic2\n" in table and "**" in table
    assert open(os.path.join(res, "command.txt")).read().count("command: ") == 2  # both invocations

    # an invocation with other methods adds their rows and keeps the rest
    control = [a for a in args if not a.startswith("--methods")] + ["--methods=cml-margin0.2", "--baselines="]
    assert hlr_table.cli(["--datasets=synthetic", *control, *dirs]) == 0
    rows = read_csv(os.path.join(res, "results.csv"))
    assert [r["method"] for r in rows if r["dataset"] == "synthetic"][-1] == "retired-model"
    assert {(r["dataset"], r["method"]) for r in rows} == {
        ("synthetic", "retired-model"),
        ("synthetic", "cml-uniform"),
        ("synthetic", "cml-margin0.2"),
        ("synthetic", "popularity"),
        ("synthetic2", "cml-uniform"),
        ("synthetic2", "popularity"),
    }
    assert {r["method"] for r in read_csv(os.path.join(res, "lr_screen.csv"))} == {"cml-uniform", "cml-margin0.2"}

    # a finished table trains nothing again
    mtime = os.path.getmtime(os.path.join(out, "synthetic", "cml-uniform", best, "seed1", "results.json"))
    assert hlr_table.cli(["--datasets=synthetic", *args, *dirs]) == 0
    assert os.path.getmtime(os.path.join(out, "synthetic", "cml-uniform", best, "seed1", "results.json")) == mtime


def test_lr_from_without_its_screen_says_so(tmp_path, two_datasets):
    dirs = [f"--out_dir={tmp_path / 'runs'}", f"--results_dir={tmp_path / 'res'}"]
    with pytest.raises(SystemExit, match="--lr_from=synthetic: the cml-uniform screen on synthetic has not finished"):
        hlr_table.cli(["--datasets=synthetic2", *ARGS, "--lr_from=synthetic", "--baselines=", *dirs])


@pytest.mark.parametrize(
    "flag, message",
    [("--learning_rates=a", "--learning_rates"), ("--lr_from=nope", "--lr_from"), ("--test_users=0", "--test_users")],
)
def test_bad_flags_are_one_line(flag, message, capsys):
    with pytest.raises(SystemExit):
        hlr_table.parse_args([flag])
    assert message in capsys.readouterr().err
