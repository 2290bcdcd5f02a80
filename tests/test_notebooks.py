"""Every notebook in notebooks/ runs top to bottom against the committed fixture (notebooks/fixtures/)."""

import glob
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
FIXTURES = os.path.join(ROOT, "notebooks", "fixtures")


def test_there_are_notebooks_and_a_fixture():
    assert len(NOTEBOOKS) == 6
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
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("matplotlib")
    for var in ("CML_TF_RESULTS", "CML_TF_RUNS", "CML_TF_RUN", "CML_TF_FOLD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CML_TF_SWEEP", os.path.join(FIXTURES, "stage2_sweep"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": os.path.dirname(path)}}
    )
    client.execute()  # raises CellExecutionError naming the cell if any cell fails
