"""Every notebook in notebooks/ runs top to bottom against the committed fixture (notebooks/fixtures/), notebooks
01-05 also on a directory of plain ``python -m cml_tf.train`` runs, and with nothing to read they stop with one line."""

import glob
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
RUN_NOTEBOOKS = [p for p in NOTEBOOKS if os.path.basename(p)[:2] in ("01", "02", "03", "04", "05")]
FIXTURES = os.path.join(ROOT, "notebooks", "fixtures")
ENV = (
    "CML_TF_RESULTS",
    "CML_TF_RUNS",
    "CML_TF_RUN",
    "CML_TF_FOLD",
    "CML_TF_HLR",
    "CML_TF_COLD_START",
    "CML_TF_SIDE_INFO",
    "CML_TF_TTA",
)


def execute(path, monkeypatch, **env):
    """Runs a notebook as `jupyter lab` would, from its own directory, with this checkout's cml_tf importable."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("matplotlib")
    for var in ENV:
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": os.path.dirname(path)}}
    )
    client.execute()  # raises CellExecutionError naming the cell if any cell fails
    return nb


def outputs(nb) -> str:
    text = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text.append(out.get("text", "") or str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(text)


def test_there_are_notebooks_and_a_fixture():
    names = {os.path.basename(p) for p in NOTEBOOKS}
    assert len(NOTEBOOKS) >= 8 and {"06_stage2_sweep.ipynb", "07_models.ipynb", "08_side_info.ipynb"} <= names
    assert os.path.exists(os.path.join(FIXTURES, "results", "results.csv"))
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(FIXTURES) for f in fs)
    assert size < 1_000_000, f"the notebook fixture is {size:,} bytes; keep it under 1 MB"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_is_committed_without_outputs(path):
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path}: clear the outputs before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_on_the_fixture(path, monkeypatch):
    execute(
        path,
        monkeypatch,
        CML_TF_SWEEP=os.path.join(FIXTURES, "stage2_sweep"),
        CML_TF_HLR=os.path.join(FIXTURES, "hlr_table"),
        CML_TF_COLD_START=os.path.join(FIXTURES, "cold_start"),
        CML_TF_SIDE_INFO=os.path.join(FIXTURES, "side_info"),
        CML_TF_TTA=os.path.join(FIXTURES, "time_to_accuracy"),
    )


@pytest.fixture(scope="module")
def plain_runs(tmp_path_factory):
    """Two finished runs in the layout `python -m cml_tf.train` writes: runs/<default name>/."""
    from helpers import synthetic_config

    from cml_tf import training

    runs = tmp_path_factory.mktemp("plain") / "runs"
    for sampler in ("uniform", "2stage"):
        config = synthetic_config(
            200,
            300,
            4000,
            sampler=sampler,
            batch_size=64,
            num_candidates=100,
            embedding_dim=16,
            max_steps=40,
            eval_every=20,
            learning_rate=1e-2,
        )
        # the name `python -m cml_tf.train` gives (cml_tf.train itself is not imported here: experiments.table2,
        # imported by other tests, defines flags of the same names)
        training.train(config, str(runs / f"synthetic-{sampler}-b64-n1-kfold0"), verbose=0)
    return str(runs)


@pytest.mark.parametrize("path", RUN_NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_on_a_directory_of_plain_train_runs(path, plain_runs, monkeypatch):
    nb = execute(path, monkeypatch, CML_TF_RUNS=plain_runs)
    text = outputs(nb)
    assert f"runs: {plain_runs}; results: none" in text
    if os.path.basename(path).startswith("01"):
        assert "2 rows: {'cml': 2}" in text
    if os.path.basename(path).startswith("02"):
        assert "2 runs of fold 0" in text
    if os.path.basename(path).startswith("03"):
        assert "2 runs; 300 items" in text
    if os.path.basename(path).startswith("05"):
        assert "synthetic-2stage-b64-n1-kfold0: 200 users, 300 items, d=16" in text


@pytest.mark.parametrize("path", RUN_NOTEBOOKS, ids=os.path.basename)
def test_notebook_with_nothing_to_read_stops_with_one_line(path, tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    with pytest.raises(nbclient.exceptions.CellExecutionError) as e:
        execute(path, monkeypatch, CML_TF_RUNS=str(tmp_path))
    message = str(e.value)
    assert f"nothing to show: no runs in {tmp_path}" in message
    assert "Traceback" not in message and "pandas" not in message


def test_time_to_accuracy_notebook_scores_each_budget_from_the_fixture_and_stops_with_one_line_without_it(
    tmp_path, monkeypatch
):
    import pandas as pd

    path = os.path.join(ROOT, "notebooks", "09_time_to_accuracy.ipynb")
    fixture = os.path.join(FIXTURES, "time_to_accuracy")
    nb = execute(path, monkeypatch, CML_TF_TTA=fixture)
    text = outputs(nb)
    curves = pd.read_csv(os.path.join(fixture, "curves.csv"))
    assert f"{curves.groupby(['dataset', 'setting']).ngroups} runs on" in text
    for dataset, sub in curves.groupby("dataset"):  # the leader within 1 minute, from the definition
        within = sub[sub.train_seconds <= 60.0]
        leader = within.loc[within.val_ndcg.idxmax(), "setting"]
        assert f"{dataset} leads: 1 min: {leader};" in text
    nbclient = pytest.importorskip("nbclient")
    with pytest.raises(nbclient.exceptions.CellExecutionError) as e:
        execute(path, monkeypatch, CML_TF_TTA=str(tmp_path))
    assert f"no curves.csv in {tmp_path}: run python -m experiments.time_to_accuracy first" in str(e.value)


def test_side_info_notebook_with_nothing_to_read_stops_with_one_line(tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    path = os.path.join(ROOT, "notebooks", "08_side_info.ipynb")
    with pytest.raises(nbclient.exceptions.CellExecutionError) as e:
        execute(path, monkeypatch, CML_TF_COLD_START=str(tmp_path), CML_TF_SIDE_INFO=str(tmp_path))
    message = str(e.value)
    assert f"nothing to show: no results.csv in {tmp_path}: run python -m experiments.cold_start" in message
    assert "Traceback" not in message


@pytest.mark.parametrize("name", ["01_results.ipynb", "03_popularity_bias.ipynb"])
def test_notebook_on_runs_of_several_data_sets_and_losses(name, tmp_path, monkeypatch):
    """runs/ holding movielens (3 items) and synthetic (5 items) runs, on synthetic a hinge run in folds 0 and 1 and a
    softmax run (test_rundirs builds them by hand): 03 reads each run against its own catalogue (item 4 of a synthetic
    run is out of movielens' 3), 01 averages only the two hinge folds."""
    from test_rundirs import _mixed

    nb = execute(os.path.join(ROOT, "notebooks", name), monkeypatch, CML_TF_RUNS=_mixed(tmp_path))
    text = outputs(nb)
    if name.startswith("01"):
        assert "3 configurations: " in text
        assert "2-stage b=256 synthetic loss=hinge |N|=1: 2 run(s)" in text
        assert "2-stage b=256 synthetic loss=softmax |N|=0: 1 run(s)" in text
    else:
        assert "movielens: 1 runs; 3 items" in text and "synthetic: 2 runs; 5 items" in text
