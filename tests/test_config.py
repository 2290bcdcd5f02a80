"""`cml_tf.training.config`: presets from Python, the fields a run does not read, old config.json files."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys

import pytest
from helpers import ROOT

from cml_tf.data import loaders
from cml_tf.messages import use_flag_names
from cml_tf.training.config import PRESETS, Config, config_differences
from cml_tf.training.unused import unused_fields


@pytest.fixture(autouse=True)
def python_wording():
    """Messages as a Python user reads them (a command in the same process would switch to flags)."""
    use_flag_names(False)
    yield
    use_flag_names(False)


def test_preset_from_python_takes_the_preset_then_the_fields_given():
    config = Config(preset="accurate", dataset="movielens", temperature=0.2)
    # from the definition: the dataclass defaults, the preset's values over them, the fields given over those
    # (a τ given is the τ run: the preset's temperature probe goes with it)
    want = {**dataclasses.asdict(Config()), **PRESETS["accurate"], "dataset": "movielens", "temperature": 0.2}
    want["temperature_probe"] = ()
    got = dataclasses.asdict(config)
    assert got.pop("preset") == "accurate"
    want.pop("preset")
    assert got == want
    assert (config.loss, config.temperature, config.epochs) == ("softmax", 0.2, 50.0)


def test_the_accurate_preset_probes_its_temperature_unless_one_is_given():
    assert Config(preset="accurate").temperature_probe == (0.5, 0.2)
    assert Config(preset="accurate", temperature=0.3).temperature_probe == ()
    # both given: the probe is kept (it chooses the τ run); the command refuses the pair, a caller may mean it
    assert Config(preset="accurate", temperature=0.3, temperature_probe=[0.1, 0.3]).temperature_probe == (0.1, 0.3)
    assert Config(preset="accurate", temperature_probe=()).temperature_probe == ()


def test_temperature_probe_values_are_checked_and_unused_without_the_softmax():
    for probe, message in (
        ((0.5,), "temperature_probe needs 2 or more distinct values, got 0.5"),
        ((0.5, 0.5), "temperature_probe needs 2 or more distinct values, got 0.5,0.5"),
        ((0.5, -0.2), "temperature_probe values must be positive, got 0.5,-0.2"),
        ((0.5, float("inf")), "temperature_probe values must be positive, got 0.5,inf"),
    ):
        with pytest.raises(ValueError, match=message):
            Config(loss="softmax", temperature_probe=probe).validate()
    with pytest.raises(ValueError, match="temperature_probe_epochs must be positive"):
        Config(loss="softmax", temperature_probe=(0.5, 0.2), temperature_probe_epochs=0).validate()
    hinge = unused_fields(Config(temperature_probe=(0.5, 0.2)))
    assert hinge["temperature_probe"] == hinge["temperature"] == "does not apply to --loss=hinge (only softmax)"
    assert "temperature_probe_epochs" in unused_fields(Config(loss="softmax"))
    assert "temperature_probe_epochs" not in unused_fields(Config(loss="softmax", temperature_probe=(0.5, 0.2)))


def test_a_temperature_probe_saves_as_a_list_and_loads_back_as_the_same_tuple(tmp_path):
    config = Config(preset="accurate").resolved()
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    assert json.loads(path.read_text())["temperature_probe"] == [0.5, 0.2]
    loaded = Config.load(str(path))
    assert loaded.temperature_probe == (0.5, 0.2) and loaded.resolved() == config
    assert config_differences(json.loads(path.read_text()), config) == []


def test_preset_is_exported_at_the_top_without_tensorflow():
    code = "import sys, cml_tf; c = cml_tf.Config(preset='collmetric'); print(c.geometry, 'tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["ball", "False"], out.stderr


def test_unknown_preset_is_one_line_naming_the_field():
    with pytest.raises(ValueError, match=r"^preset: unknown 'nope'; expected one of accurate, collmetric"):
        Config(preset="nope")


def test_config_json_holds_none_for_the_fields_the_run_does_not_read_and_the_preset():
    softmax = json.loads(json.dumps(Config(preset="accurate").resolved().to_dict()))
    assert softmax["preset"] == "accurate"
    assert softmax["hinge"] is None and softmax["num_negatives"] is None and softmax["margin"] is None
    assert softmax["dns_k"] is None and softmax["stage2_weight_cap"] is None  # stage 2 is the hinge's
    assert (softmax["temperature"], softmax["num_candidates"], softmax["beta"]) == (0.5, 2000, 1.0)
    hinge = json.loads(json.dumps(Config(sampler="uniform", num_negatives=5).resolved().to_dict()))
    assert hinge["preset"] is None and hinge["hinge"] == "min" and hinge["num_negatives"] == 5
    assert hinge["temperature"] is None and hinge["learn_temperature"] is None and hinge["softmax_in_batch"] is None
    assert hinge["num_candidates"] is None and hinge["beta"] is None and hinge["dns_k"] is None
    # a field the run reads is never None: every one of them, for one config of each sampler and loss
    for sampler in ("uniform", "popular", "2stage", "side_info", "dns", "in_batch"):
        for loss in ("hinge", "softmax"):
            config = Config(sampler=sampler, loss=loss, dataset="movielens")
            saved = config.resolved().to_dict()
            nones = {k for k, v in saved.items() if v is None}
            meaningful_none = {"data_path", "features", "max_steps", "max_train_seconds", "eval_users", "test_users"}
            meaningful_none.add("preset")
            assert nones - meaningful_none == set(unused_fields(config)), (sampler, loss)


def test_num_negatives_is_unused_only_where_the_softmax_pool_has_no_per_row_negatives():
    unused = {
        (s, loss): "num_negatives" in unused_fields(Config(sampler=s, loss=loss))
        for s in ("uniform", "2stage", "in_batch")
        for loss in ("hinge", "softmax")
    }
    assert [k for k, v in unused.items() if v] == [("2stage", "softmax"), ("in_batch", "softmax")]


def test_saved_config_loads_back_as_the_config_run():
    for preset in sorted(PRESETS):
        config = Config(preset=preset, dataset="citeulike").resolved()
        assert Config.from_dict(json.loads(json.dumps(config.to_dict()))) == config, preset


def _old_config_json(config: Config) -> dict:
    """config.json as the code before the `preset` field wrote it: every field's value (asdict), the hinge resolved
    for every loss, no preset key."""
    old = json.loads(json.dumps(dataclasses.asdict(config)))
    old.pop("preset")
    old["hinge"] = "min"
    old["stage2_weight_cap"] = 4.0
    return old


def test_old_config_json_loads_and_is_the_same_run(tmp_path):
    from cml_tf.serving.runs import load_run_config

    config = Config(preset="accurate", dataset="movielens", data_path="/data/ml-100k/u.data").resolved()
    old = _old_config_json(dataclasses.replace(config, num_candidates=1682))
    new = dataclasses.replace(config, num_candidates=1682)
    assert config_differences(old, new) == []  # the run resumes (or reports its results)
    assert config_differences({**old, "temperature": 0.2}, new) == ["temperature"]
    assert config_differences({**old, "data_path": "elsewhere"}, new) == []
    assert config_differences({**old, "from_the_future": 1}, new) == ["from_the_future"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    loaded = load_run_config(str(tmp_path))
    assert loaded.preset is None and loaded.loss == "softmax" and loaded.temperature == 0.5


def test_resuming_an_old_run_directory_does_not_refuse_its_config(tmp_path):
    from cml_tf.training.outputs import _prepare_run_dir

    config = Config(preset="accurate").resolved()
    (tmp_path / "results.json").write_text("{}")  # a run that got somewhere
    (tmp_path / "config.json").write_text(json.dumps(_old_config_json(config)))
    data = {"data_path": config.data_path, "fingerprint": "f", "users": 1, "items": 1, "pairs": 1}  # no data.json
    _prepare_run_dir(config, str(tmp_path), overwrite=False, data=data)
    assert json.loads((tmp_path / "config.json").read_text())["preset"] == "accurate"


def test_python_messages_name_fields_and_commands_name_flags(caplog):
    with pytest.raises(ValueError, match=r"^batch_size must be positive, got 0$"):
        Config(batch_size=0).validate()
    use_flag_names()
    with pytest.raises(ValueError, match=r"^--batch_size must be positive, got 0$"):
        Config(batch_size=0).validate()
    use_flag_names(False)
    from cml_tf.data.splits import make_split
    from cml_tf.training.data import fit_to_data

    data = loaders.load("synthetic", None, num_users=60, num_items=80, num_interactions=1500)
    split = make_split(data.matrix, "kfold", seed=0, num_folds=4, fold=0, valid_fraction=0.1)
    with caplog.at_level(logging.WARNING, logger="cml_tf"):
        fitted = fit_to_data(Config(batch_size=32), split)
    assert fitted.num_candidates == 80
    assert "num_candidates=2000 exceeds the 80 items: using num_candidates=80" in caplog.text
    assert "--" not in caplog.text


# the documented entry point, then TensorFlow's first device work (where cuInit fails on a CPU machine)
PYTHON_API = """
import os
from cml_tf.training import Config, train
import tensorflow as tf
print(float(tf.reduce_sum(tf.ones([2]))), os.environ.get("TF_CPP_MIN_LOG_LEVEL"))
"""


@pytest.mark.parametrize("user_level", [None, pytest.param("1", marks=pytest.mark.slow)])
def test_python_api_prints_no_tensorflow_start_up_lines(user_level):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    if user_level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = user_level  # the user's choice: kept, and TensorFlow's lines let through
    out = subprocess.run(
        [sys.executable, "-c", PYTHON_API], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["2.0", user_level or "3"]
    if user_level is None:
        assert out.stderr == ""  # no cudart_stub / cuInit / absl::InitializeLog / oneDNN lines
