"""`python -m cml_tf.stats`: JSON / table output, exit code 1 with one-line errors; data_flags wiring."""

from __future__ import annotations

import json

import pytest
from absl import flags
from absl.testing import flagsaver
from helpers import run_command

from cml_tf.cli import data_flags
from cml_tf.data.interactions import DataError


def _stats(*args, cache_dir):
    return run_command("cml_tf.stats", f"--cache_dir={cache_dir}", *args, timeout=120)


def test_citeulike_json(shared_data, tmp_path):
    r = _stats("--dataset=citeulike", f"--data_path={shared_data}/citeulike-t", "--format=json", cache_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)  # stdout holds exactly one JSON object
    assert set(out) == {"users", "items", "interactions", "density"}
    assert (out["users"], out["items"], out["interactions"]) == (7947, 25975, 134860)
    assert out["density"] == pytest.approx(134860 / (7947 * 25975))


def test_movielens_table_and_filter_flags(shared_data, tmp_path):
    r = _stats("--dataset=movielens", f"--data_path={shared_data}/ml-100k", cache_dir=tmp_path)
    assert r.returncode == 0 and "1,682" in r.stdout and "100,000" in r.stdout
    r = _stats(
        "--dataset=movielens",
        f"--data_path={shared_data}/ml-100k",
        "--min_rating=4",
        "--format=json",
        cache_dir=tmp_path,
    )
    assert json.loads(r.stdout)["interactions"] == 55375  # ml-100k ratings >= 4


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--dataset=synthetic", "--min_playcount=3"], "--min_playcount does not apply"),
        (["--dataset=synthetic", "--num_users=-5"], "--num_users must be >= 1"),
        (["--dataset=nope"], "--dataset='nope'"),
        (["--dataset=synthetic", "--bogus_flag=1"], "bogus_flag"),
        (["--dataset=movielens", "--data_path=/definitely/not/here"], "/definitely/not/here"),
        (["--dataset=movielens"], "--data_path"),
    ],
)
def test_bad_input_exit_1_one_line(tmp_path, args, needle):
    r = _stats(*args, cache_dir=tmp_path)
    assert r.returncode == 1
    assert r.stdout == ""
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_synthetic_json_default(tmp_path):
    r = _stats("--num_users=100", "--num_items=200", "--num_interactions=1000", "--format=json", cache_dir=tmp_path)
    assert json.loads(r.stdout) == {"users": 100, "items": 200, "interactions": 1000, "density": 0.05}


def _only(**given):
    """flagsaver over every data set option flag: None (unset) unless given (other tests may have parsed some)."""
    return flagsaver.flagsaver(**{**{name: None for name in data_flags.FLAG_TO_OPTION}, **given})


def test_load_interactions_from_flags_passes_only_given_options(tmp_path):
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    p = tmp_path / "d.csv"
    p.write_text("a;x;1\na;y;5\nb;x;7\n")
    with _only(dataset="csv", data_path=str(p), csv_sep=";", csv_weight_col="2", min_weight=2.0, use_cache=False):
        x = data_flags.load_interactions_from_flags(flags.FLAGS)
    assert x.nnz == 2
    with _only(dataset="csv", data_path=str(p), min_rating=2.0):
        with pytest.raises(DataError, match="--min_rating does not apply to --dataset=csv"):
            data_flags.load_interactions_from_flags(flags.FLAGS)
    with _only(dataset="synthetic", num_users=50, num_items=60, num_interactions=300, synthetic_seed=1):
        assert data_flags.load_interactions_from_flags(flags.FLAGS).stats()["interactions"] == 300
