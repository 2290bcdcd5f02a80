"""Finding run directories for the notebooks: both layouts, paths resolved against the repository or $PWD."""

from __future__ import annotations

import json
import os

import numpy as np
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


def test_a_runs_temperature_probes_are_part_of_it_not_runs_of_their_own(tmp_path):
    run = tmp_path / "lastfm-accurate-2stage-softmax-b256-given"
    _run(run, sampler="2stage", loss="softmax", temperature=0.2, split="given")
    for tau in ("0.5", "0.2"):
        _run(run / "temperature_probe" / f"tau-{tau}", sampler="2stage", loss="softmax", split="given")
    assert [r.key for r in rundirs.find_runs(str(run))] == [run.name]  # the run itself as runs_dir
    assert [r.key for r in rundirs.find_runs(str(tmp_path))] == [run.name]


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


def _finished(path, ndcg, n_items, items, **config):
    """A finished run by hand: config.json, results.json and recommendations.npz over a catalogue of n_items."""
    _run(path, **config)
    with open(os.path.join(path, "results.json"), "w") as f:
        json.dump({"ndcg@50": ndcg}, f)
    counts = np.arange(1, n_items + 1, dtype=np.int64)  # item j was seen by j + 1 users
    users = np.array([0, 1], np.int32)
    np.savez(
        os.path.join(path, "recommendations.npz"), users=users, items=np.array(items, np.int32), item_train_count=counts
    )


def _mixed(tmp_path):
    """Two data sets; on synthetic a hinge run in two folds (with its own seed each) and a softmax run."""
    base = {"sampler": "2stage", "batch_size": 256, "loss": "hinge"}
    _finished(tmp_path / "ml-hinge-kfold0", 0.5, 3, [[0, 2], [1, 2]], dataset="movielens", **base)
    _finished(tmp_path / "syn-hinge-kfold0", 0.1, 5, [[4, 3], [0, 1]], dataset="synthetic", **base)
    _finished(tmp_path / "syn-hinge-kfold1", 0.3, 5, [[4, 4], [2, 1]], dataset="synthetic", fold=1, seed=7, **base)
    _finished(
        tmp_path / "syn-softmax-kfold0",
        0.9,
        5,
        [[3, 3], [3, 3]],
        dataset="synthetic",
        **{**base, "loss": "softmax", "num_negatives": None},  # as config.json holds a field the run does not read
    )
    return str(tmp_path)


def test_results_rows_average_only_folds_of_one_configuration(tmp_path):
    rows = rundirs.results_rows(rundirs.find_runs(_mixed(tmp_path)))
    by_run = {r["run"]: r for r in rows}
    # the two synthetic hinge folds differ only in fold and seed: one configuration, one label
    assert by_run["syn-hinge-kfold0"]["configuration"] == by_run["syn-hinge-kfold1"]["configuration"]
    assert (
        by_run["syn-hinge-kfold0"]["label"]
        == by_run["syn-hinge-kfold1"]["label"]
        == "2-stage b=256 synthetic loss=hinge"
    )
    # the softmax run and the other data set are configurations of their own, labelled apart
    assert by_run["syn-softmax-kfold0"]["label"] == "2-stage b=256 synthetic loss=softmax"
    assert by_run["ml-hinge-kfold0"]["label"] == "2-stage b=256 movielens"
    assert len({r["configuration"] for r in rows}) == len({r["label"] for r in rows}) == 3
    # what a notebook averaging by label gets: the hinge folds' mean (0.1 + 0.3) / 2, the softmax run alone
    means = {}
    for r in rows:
        means.setdefault(r["label"], []).append(r["ndcg@50"])
    assert {k: sum(v) / len(v) for k, v in means.items()} == pytest.approx(
        {
            "2-stage b=256 synthetic loss=hinge": 0.2,
            "2-stage b=256 synthetic loss=softmax": 0.9,
            "2-stage b=256 movielens": 0.5,
        }  # fmt: skip
    )


def test_configuration_labels_name_at_most_three_fields_and_stay_distinct(tmp_path):
    for i, (lr, dim, margin, clip) in enumerate([(0.1, 8, 1.0, 1.0), (0.2, 16, 0.5, 2.0), (0.2, 16, 0.5, 3.0)]):
        _run(tmp_path / f"r{i}", learning_rate=lr, embedding_dim=dim, margin=margin, clip_norm=clip, fold=i)
    labels = rundirs.configuration_labels(rundirs.find_runs(str(tmp_path)))
    # four fields differ; the first three (sorted) are named, then "+1 more"; r1 and r2 agree on those three
    assert labels == [
        "Uniform b=64 clip_norm=1, embedding_dim=8, learning_rate=0.1 +1 more",
        "Uniform b=64 clip_norm=2, embedding_dim=16, learning_rate=0.2 +1 more",
        "Uniform b=64 clip_norm=3, embedding_dim=16, learning_rate=0.2 +1 more",
    ]
    _run(
        tmp_path / "r3", learning_rate=0.2, embedding_dim=16, margin=0.7, clip_norm=3.0
    )  # differs from r2 in margin only
    labels = rundirs.configuration_labels(rundirs.find_runs(str(tmp_path)))
    assert len(set(labels)) == 4 and labels[3].endswith("#2")


def test_recommendations_are_read_against_their_own_catalogue(tmp_path):
    catalogues = rundirs.recommendations_by_catalogue(_mixed(tmp_path), fold=0)
    # the softmax run reads no |N_ij| (None in its config.json): its label has none
    assert sorted((c.name, c.item_train_count.size, sorted(c.recommendations)) for c in catalogues) == [
        ("movielens", 3, ["2-stage b=256 |N|=1 (ml-hinge-kfold0)"]),
        ("synthetic", 5, ["2-stage b=256 (syn-softmax-kfold0)", "2-stage b=256 |N|=1 (syn-hinge-kfold0)"]),
    ]
    syn = next(c for c in catalogues if c.name == "synthetic")
    # item 4 exists only in the synthetic catalogue (5 users saw it there); the hinge run's items 4, 3, 0, 1
    pop = syn.item_train_count[syn.recommendations["2-stage b=256 |N|=1 (syn-hinge-kfold0)"]["items"].ravel()]
    assert pop.tolist() == [5, 4, 1, 2]
    # a second split of a data set is a catalogue of its own, named apart
    _finished(tmp_path / "syn-original", 0.2, 4, [[0, 1], [2, 3]], dataset="synthetic", split="original")
    names = [c.name for c in rundirs.recommendations_by_catalogue(str(tmp_path), fold=0)]
    assert sorted(names) == ["movielens", "synthetic", "synthetic (2)"]
