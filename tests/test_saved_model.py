"""`cml_tf.serving` / `python -m cml_tf.export`: a SavedModel that loads without cml_tf and answers as
`Recommender` does; unknown ids get the documented popularity fallback; bad input is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import fake_run
import numpy as np
import pytest
from helpers import run_command

from cml_tf.serving.recommender import Recommender
from cml_tf.serving.runs import RecommendError
from cml_tf.serving.saved_model import export_saved_model

# Runs in a fresh interpreter where importing cml_tf fails, from a directory without it.
LOAD_WITHOUT_CML_TF = textwrap.dedent(
    """
    import json, sys
    sys.modules["cml_tf"] = None  # any import of cml_tf now raises ImportError
    import tensorflow as tf
    model = tf.saved_model.load(sys.argv[1])
    out = {}
    for name, arg in (("serving_default", "users"), ("similar_items", "items")):
        result = model.signatures[name](**{arg: tf.constant(json.loads(sys.argv[2 if arg == "users" else 3]))})
        out[name] = {
            "items": [[i.decode() for i in row] for row in result["items"].numpy()],
            "scores": [[None if s != s else float(s) for s in row] for row in result["scores"].numpy()],
            "known": result["known"].numpy().tolist(),
        }
    assert not any(m == "cml_tf" or m.startswith("cml_tf.") for m in sys.modules if sys.modules[m] is not None)
    print(json.dumps(out))
    """
)


def _load_elsewhere(export_dir, users, items, cwd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_CML_TF, export_dir, json.dumps(users), json.dumps(items)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**env, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""},
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    model_dir, config = fake_run.make_run(root)
    rec = Recommender.from_run(model_dir)
    export_dir = str(root / "export" / "1")
    export_saved_model(rec, export_dir, k=5)
    users = ["dee", "ann", "nobody", "cy", "bob"]
    items = ["i2", "unknown-item"]
    return rec, config, export_dir, users, items, _load_elsewhere(export_dir, users, items, str(root))


def test_export_loads_without_cml_tf_and_matches_recommend(exported):
    rec, _, _, users, _, out = exported
    serving = out["serving_default"]
    for row, user in enumerate(users):
        if user == "nobody":
            continue
        (want,) = rec.recommend(user, k=5)
        got_items = [i for i in serving["items"][row] if i]
        assert got_items == list(want.items), user
        np.testing.assert_allclose(serving["scores"][row][: len(got_items)], want.scores, atol=1e-5)
        assert serving["known"][row]


def test_export_excludes_seen_items_and_pads_short_rows(exported):
    _, config, _, users, _, out = exported
    seen = fake_run.seen_items(config)
    serving = out["serving_default"]
    for row, user in enumerate(users):
        if user != "nobody":
            assert not set(serving["items"][row]) & seen[user]
    assert all(serving["items"][users.index("cy")])  # cy has 7 unseen items: k = 5 are filled


def test_unknown_ids_get_the_most_popular_items_with_nan_scores(exported):
    rec, _, _, users, items, out = exported
    popularity = rec.popularity()
    order = np.lexsort((np.arange(rec.n_items), -popularity))[:5]
    popular = [rec.items.strings[i] for i in order]
    row = users.index("nobody")
    assert out["serving_default"]["known"][row] is False
    assert out["serving_default"]["items"][row] == popular
    assert out["serving_default"]["scores"][row] == [None] * 5  # NaN
    assert out["similar_items"]["known"] == [True, False]
    assert out["similar_items"]["items"][1] == popular


def test_similar_items_signature_matches_similar_items(exported):
    rec, _, _, _, _, out = exported
    want = rec.similar_items("i2", k=5)
    assert out["similar_items"]["items"][0] == list(want.items)
    np.testing.assert_allclose(out["similar_items"]["scores"][0], want.scores, atol=1e-5)


def test_serving_blocks_and_padding_inside_the_saved_model(tmp_path):
    import tensorflow as tf

    model_dir, config = fake_run.make_run(tmp_path)
    rec = Recommender.from_run(model_dir)
    export_dir = str(tmp_path / "blocks")
    export_saved_model(rec, export_dir, k=7, memory_bytes=8 * rec.n_items * 3)  # blocks of 3 users
    model = tf.saved_model.load(export_dir)
    users = ["ann", "bob", "cy", "dee", "ann"]
    out = model.signatures["serving_default"](users=tf.constant(users))
    for row, user in enumerate(users):
        (want,) = rec.recommend(user, k=7)
        items = [i.decode() for i in out["items"][row].numpy()]
        assert items[: len(want.items)] == list(want.items)
        assert all(i == "" for i in items[len(want.items) :])  # fewer than k unseen: "" and -inf
        assert np.isneginf(out["scores"][row].numpy()[len(want.items) :]).all()
    empty = model.signatures["serving_default"](users=tf.constant([], tf.string))
    assert empty["items"].shape == (0, 7)
    with open(os.path.join(export_dir, "cml_tf_export.json"), encoding="utf-8") as f:
        assert json.load(f)["k"] == 7


def test_bad_export_requests_are_refused(tmp_path):
    model_dir, _ = fake_run.make_run(tmp_path)
    rec = Recommender.from_run(model_dir)
    with pytest.raises(RecommendError, match="^k must be a positive integer, got 0"):
        export_saved_model(rec, str(tmp_path / "a"), k=0)
    with pytest.raises(RecommendError, match=r"^k=8 exceeds the catalogue less the queried item \(7 items\)"):
        export_saved_model(rec, str(tmp_path / "a"), k=8)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(RecommendError, match="exists and is not empty; use overwrite"):
        export_saved_model(rec, str(tmp_path / "full"), k=2)
    export_saved_model(rec, str(tmp_path / "full"), k=2, overwrite=True)
    assert os.path.isfile(tmp_path / "full" / "saved_model.pb")


def _export_cli(*args):
    return run_command("cml_tf.export", *args)


def test_export_command_and_its_errors(tmp_path):
    model_dir, _ = fake_run.make_run(tmp_path)
    r = _export_cli(f"--model_dir={model_dir}", f"--export_dir={tmp_path / 'out' / '1'}", "--k=3")
    assert r.returncode == 0, r.stderr
    assert "exported" in r.stdout and os.path.isfile(tmp_path / "out" / "1" / "saved_model.pb")
    unfinished, _ = fake_run.make_run(tmp_path, "unfinished", finished=False)
    for args, message in [
        ([f"--model_dir={unfinished}", f"--export_dir={tmp_path / 'x'}"], "training has not finished"),
        ([f"--model_dir={model_dir}", f"--export_dir={tmp_path / 'x'}", "--k=0"], "--k must be a positive"),
        ([f"--model_dir={model_dir}", f"--export_dir={tmp_path / 'x'}", "--k=9"], "--k=9 exceeds the catalogue"),
        ([f"--model_dir={model_dir}"], "--export_dir is required"),
    ]:
        r = _export_cli(*args)
        assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith("error: "), r.stderr
        assert message in r.stderr and "Traceback" not in r.stderr
