"""Finding run directories for the notebooks: both layouts, paths resolved against the repository or $PWD."""

from __future__ import annotations

import json
import os

import pytest

from cml_tf.training import rundirs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(path, **config):
    os.makedirs(path)
    values = {"sampler": "uniform", "batch_size": 64, "num_negatives": 1, "split": "kfold", "fold": 0, **config}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(values, f)


def test_the_fixture_is_the_table2_layout_ordered_as_the_table():
    runs = rundirs.find_runs(os.path.join(rundirs.FIXTURES, "runs"), fold=0)
    keys = [r.key for r in runs]
    assert keys[:3] == ["uniform-b1024-n1", "uniform-b1024-n2", "uniform-b1024-n5"]
    assert keys[-1] == "2stage-b64-n5" and "baselines" not in keys
    assert all(r.fold == 0 for r in runs) and len(runs) == 15
    assert runs[-1].label == "2-stage b=64 |N|=5"
    baselines = rundirs.baseline_runs(os.path.join(rundirs.FIXTURES, "runs"), 0)
    assert [method for method, _ in baselines] == ["als", "bpr", "popularity"]


def test_table2_variants_of_a_sampler_keep_their_own_label(tmp_path):
    # experiments.table2 runs "2stage-paper" cells: sampler 2stage in the config, the variant in the cell name
    _run(tmp_path / "2stage-paper-b256-n1" / "fold0", sampler="2stage", batch_size=256)
    _run(tmp_path / "2stage-b256-n1" / "fold0", sampler="2stage", batch_size=256)
    runs = rundirs.find_runs(str(tmp_path), fold=0)
    assert [(r.key, r.label) for r in runs] == [
        ("2stage-b256-n1", "2-stage b=256 |N|=1"),
        ("2stage-paper-b256-n1", "2-stage (paper) b=256 |N|=1"),
    ]


def test_plain_train_runs_and_a_single_run(tmp_path):
    _run(tmp_path / "synthetic-2stage-b256-n1-kfold0", sampler="2stage", batch_size=256)
    _run(tmp_path / "synthetic-uniform-b64-n1-kfold1", fold=1)
    _run(tmp_path / "citeulike-uniform-b64-n1-original", split="original")
    runs = rundirs.find_runs(str(tmp_path), fold=0)
    assert [(r.key, r.fold) for r in runs] == [
        ("citeulike-uniform-b64-n1-original", None),  # the original split has no fold: always shown
        ("synthetic-2stage-b256-n1-kfold0", 0),
    ]
    assert runs[1].label == "2-stage b=256 |N|=1 (synthetic-2stage-b256-n1-kfold0)"
    single = rundirs.find_runs(str(tmp_path / "synthetic-uniform-b64-n1-kfold1"))
    assert [r.key for r in single] == ["synthetic-uniform-b64-n1-kfold1"]
    os.unlink(tmp_path / "citeulike-uniform-b64-n1-original" / "config.json")
    with pytest.raises(rundirs.NothingToShow, match=r"no run of fold 3 in .* \(folds there: \[0, 1\]\)"):
        rundirs.find_runs(str(tmp_path), fold=3)


def test_nothing_to_show_is_one_line_naming_the_directory_and_the_commands(tmp_path):
    with pytest.raises(rundirs.NothingToShow) as e:
        rundirs.find_runs(str(tmp_path))
    assert str(e.value).startswith(f"no runs in {tmp_path} (no config.json in it, in <name>/ or in <cell>/fold<k>/)")
    assert "python -m cml_tf.train" in str(e.value)
    assert e.value._render_traceback_() == [f"nothing to show: {e.value}"]  # what IPython prints: no traceback


def test_relative_paths_resolve_against_the_repository_then_pwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the notebook's own directory is not where the path is
    assert rundirs.resolve_dir("notebooks/fixtures/runs") == os.path.join(ROOT, "notebooks", "fixtures", "runs")
    os.makedirs(tmp_path / "launch" / "my_runs")
    monkeypatch.setenv("PWD", str(tmp_path / "launch"))  # where `jupyter lab` was started
    assert rundirs.resolve_dir("my_runs") == str(tmp_path / "launch" / "my_runs")
    with pytest.raises(rundirs.NothingToShow, match=r"CML_TF_RUNS=nope: no such directory \(tried "):
        rundirs.resolve_dir("nope", "CML_TF_RUNS")


def test_notebook_dirs_from_the_environment(tmp_path):
    fixture = (os.path.join(rundirs.FIXTURES, "runs"), os.path.join(rundirs.FIXTURES, "results"))
    assert rundirs.notebook_dirs({}) == fixture
    assert rundirs.notebook_dirs({"CML_TF_RUNS": str(tmp_path)}) == (str(tmp_path), None)
    assert rundirs.notebook_dirs({"CML_TF_RESULTS": "experiments/results/citeulike"}) == (
        fixture[0],
        os.path.join(ROOT, "experiments", "results", "citeulike"),
    )
