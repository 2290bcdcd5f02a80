"""The public-splits runner (experiments/public_splits.py) and its baselines under the reference protocol, on a tiny
LightGCN-format directory whose popularity ranking is known by hand."""

import json
import os

import numpy as np
import pandas as pd
import pytest

K = 20


def popularity_dir(directory) -> str:
    """30 users x 30 items where user u trains items u..29, so item j has j + 1 training users (no ties): a user's
    popularity ranking of the items it did not train is u-1, u-2, ..., 0. Its valid item is u-1 (ranked first: a
    miss under the reference protocol, masked under cml_tf's own); its test items are up to 3 of 0..u-2."""
    rng = np.random.default_rng(0)
    lines = {"train": [], "valid": [], "test": []}
    for u in range(30):
        lines["train"].append(" ".join(map(str, [u, *range(u, 30)])))
        if u >= 1:
            lines["valid"].append(f"{u} {u - 1}")
        if u >= 2:
            test = sorted(rng.choice(u - 1, min(3, u - 1), replace=False).tolist())
            lines["test"].append(" ".join(map(str, [u, *test])))
    os.makedirs(directory, exist_ok=True)
    for part, rows in lines.items():
        with open(os.path.join(directory, f"{part}.txt"), "w") as f:
            f.write("\n".join(rows) + "\n")
    return str(directory)


def load(directory):
    from cml_tf.training.config import Config
    from cml_tf.training.data import load_data

    return load_data(Config(dataset="lightgcn", data_path=str(directory), split="given"))[1]


def popularity_by_hand(split, masked) -> dict:
    """Recall@20 / NDCG@20 of ranking by training count with ``masked``'s items removed, by numpy loops from the
    reference definitions (Recall = hits / |T_u|; NDCG's ideal DCG has min(|T_u|, 20) hits; mean over test users)."""
    counts = np.asarray(split.train.sum(0)).ravel()
    recalls, ndcgs = [], []
    for u in range(split.test.shape[0]):
        truth = set(split.test[u].indices.tolist())
        if not truth:
            continue
        seen = set(masked[u].indices.tolist())
        ranked = [int(i) for i in np.argsort(-counts, kind="stable") if int(i) not in seen][:K]
        gains = [1.0 if i in truth else 0.0 for i in ranked]
        recalls.append(sum(gains) / len(truth))
        dcg = sum(g / np.log2(r + 2) for r, g in enumerate(gains))
        ndcgs.append(dcg / sum(1 / np.log2(r + 2) for r in range(min(len(truth), K))))
    return {f"recall@{K}": float(np.mean(recalls)), f"ndcg@{K}": float(np.mean(ndcgs))}


@pytest.mark.parametrize("protocol", ["reference", "cml"])
def test_baseline_test_masks_what_the_protocol_says(tmp_path, protocol):
    """Reference: train items only (the valid item is ranked first, a miss); cml (own splits, the default): train +
    valid, and config.json as before (no protocol key)."""
    from experiments import baselines

    split = load(popularity_dir(tmp_path / "data"))
    kwargs = {"protocol": protocol} if protocol == "reference" else {}
    got = baselines.run_baseline("popularity", split, str(tmp_path / "pop"), config={}, k=K, **kwargs)
    masked = split.train if protocol == "reference" else (split.train + split.valid).tocsr()
    want = popularity_by_hand(split, masked)
    assert got[f"recall@{K}"] == pytest.approx(want[f"recall@{K}"], abs=1e-6)
    assert got[f"ndcg@{K}"] == pytest.approx(want[f"ndcg@{K}"], abs=1e-6)
    other = popularity_by_hand(split, (split.train + split.valid).tocsr() if protocol == "reference" else split.train)
    assert abs(other[f"ndcg@{K}"] - want[f"ndcg@{K}"]) > 0.05  # the two protocols differ here
    saved = json.loads((tmp_path / "pop" / "config.json").read_text())
    assert saved.get("protocol") == kwargs.get("protocol")
    with pytest.raises(ValueError, match="--protocol: unknown 'lightgcn'"):
        baselines.run_baseline("popularity", split, str(tmp_path / "x"), config={}, protocol="lightgcn")


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """The runner on a tiny 'lastfm' split: uniform CML at d = 64 for 4 steps and popularity; run twice."""
    from experiments import public_splits

    root = tmp_path_factory.mktemp("public_splits")
    data = popularity_dir(root / "data" / "lastfm-lightgcn")
    argv = [
        "--splits=lastfm",
        "--methods=uniform-d64,popularity",
        f"--data_root={root / 'data'}",
        f"--out_dir={root / 'out'}",
        f"--runs_dir={root / 'runs'}",
        "--max_steps=4",
    ]
    assert public_splits.main(argv) == 0
    files = sorted((root / "runs").rglob("results.json")) + [root / "out" / "results.csv"]
    first = {p: os.stat(p).st_mtime_ns for p in files}
    assert public_splits.main(argv) == 0
    second = {p: os.stat(p).st_mtime_ns for p in files[:-1]}
    return root, data, first, second


def test_runner_writes_our_rows_beside_the_published_ones(table, capsys):
    from experiments.public_splits import PUBLISHED

    root, _, _, _ = table
    df = pd.read_csv(root / "out" / "results.csv")
    assert list(df.columns) == [
        "split",
        "method",
        "family",
        "d",
        f"recall@{K}",
        f"ndcg@{K}",
        f"valid_ndcg@{K}",
        "train_seconds",
        "search_seconds",
        "trials",
        "steps",
        "best_step",
        "params",
        "run",
        "note",
    ]
    assert sorted(df.method) == ["popularity", "uniform-d64"] and set(df.split) == {"lastfm"}
    cml = df[df.method == "uniform-d64"].iloc[0]
    assert cml.family == "cml" and cml.d == 64 and cml.steps == 4 and cml.train_seconds > 0
    with open(root / "runs" / cml.run / "results.json") as f:
        assert json.load(f)[f"ndcg@{K}"] == pytest.approx(cml[f"ndcg@{K}"])
    with open(root / "runs" / cml.run / "config.json") as f:
        config = json.load(f)
    fields = (config["protocol"], config["k"], config["sampler"], config["embedding_dim"])
    assert fields == ("reference", K, "uniform", 64)
    md = (root / "out" / "public_splits.md").read_text()
    assert "## LastFM" in md and "| CML uniform | 64 |" in md and "| Popularity |" in md
    for method, recall, ndcg, source in PUBLISHED["lastfm"]:
        assert f"{recall:.4f} | {ndcg:.4f}" in md and source in md and method in md
    assert "XSimGCL++ (best published)" in md
    assert "supplementary PDF" in md and "EASE^R here needs" in md
    assert "experiments.public_splits --splits=lastfm" in (root / "out" / "command.txt").read_text()


def test_runner_does_not_retrain_a_finished_table(table):
    _, _, first, second = table
    assert second and all(first[p] == t for p, t in second.items())


def test_runner_popularity_row_is_the_reference_protocol_by_hand(table):
    root, data, _, _ = table
    split = load(data)
    want = popularity_by_hand(split, split.train)
    row = pd.read_csv(root / "out" / "results.csv").set_index("method").loc["popularity"]
    assert row[f"recall@{K}"] == pytest.approx(want[f"recall@{K}"], abs=1e-6)
    assert row[f"ndcg@{K}"] == pytest.approx(want[f"ndcg@{K}"], abs=1e-6)


def test_runner_skips_ease_in_one_line_where_it_does_not_fit(tmp_path, monkeypatch, capsys):
    from experiments import baselines, public_splits

    popularity_dir(tmp_path / "data" / "gowalla-lightgcn")
    monkeypatch.setattr(baselines, "available_memory_bytes", lambda: 1000)
    argv = ["--splits=gowalla", "--methods=ease", f"--data_root={tmp_path / 'data'}", f"--out_dir={tmp_path / 'o'}"]
    assert public_splits.main([*argv, f"--runs_dir={tmp_path / 'runs'}"]) == 0
    out = capsys.readouterr().out
    skipped = [line for line in out.splitlines() if "skipped" in line]
    assert skipped == [
        "gowalla ease: skipped: EASE^R: the 30 x 30 item matrices need 0.0 GiB, more than the 0.0 GiB available; "
        "leave ease out of --baselines for this data set"
    ]
    md = (tmp_path / "o" / "public_splits.md").read_text()
    assert "| EASE^R | – | – | – |" in md and "not run: EASE^R" in md and "NCL++ (best published)" in md


def test_runner_flags_are_checked_in_one_line(tmp_path, capsys):
    from experiments import public_splits

    for argv, message in (
        (["--methods=accurate,lightgcn"], "--methods: unknown lightgcn"),
        ([f"--data_root={tmp_path}", "--splits=yelp"], "--splits: no LightGCN directory"),
        (["--max_steps=0"], "--max_steps must be positive"),
        (["--max_train_seconds=-5"], "--max_train_seconds must be positive"),
    ):
        with pytest.raises(SystemExit):
            public_splits.parse_args(argv)
        assert message in capsys.readouterr().err


def test_a_training_budget_reaches_the_runs_and_names_their_directories(tmp_path):
    from experiments import public_splits

    root = tmp_path / "data"
    popularity_dir(root / "lastfm-lightgcn")
    args = public_splits.parse_args([f"--data_root={root}", "--splits=lastfm", "--max_train_seconds=900"])
    config = public_splits.cml_config("accurate", str(root / "lastfm-lightgcn"), 1000, args)
    assert config.max_train_seconds == 900 and config.temperature_probe == (0.5, 0.2)  # the preset's probe
    args.out_dir = str(tmp_path / "o")
    runner = public_splits.Runner(args)
    assert runner.run_dir("lastfm", "accurate").endswith(os.path.join("lastfm", "accurate-full-900s"))
    no_budget = public_splits.parse_args([f"--data_root={root}", "--splits=lastfm", "--epochs=5"])
    assert public_splits.budget_tag(no_budget) == "epochs5"
    assert public_splits._chosen({"temperature_probe": {"chosen": 0.2}}) == {"temperature_chosen": 0.2}
    assert public_splits._chosen({}) == {}
    # the table tells a row whose τ was picked from one of the preset before its probe
    picked = {"params": json.dumps({"preset": "accurate", "temperature_chosen": 0.2})}
    assert public_splits._label("accurate", picked) == "CML --preset=accurate (τ = 0.2 picked on valid)"
    before = {"params": json.dumps({"preset": "accurate", "embedding_dim": 64})}
    assert public_splits._label("accurate-d64", before) == "CML --preset=accurate (τ = 0.5, before the probe)"
    assert public_splits._label("uniform", {"params": json.dumps({"sampler": "uniform"})}) == "CML uniform"


def test_published_rows_live_in_one_place_with_a_source_each():
    from experiments.public_splits import PUBLISHED

    assert set(PUBLISHED) == {"ml-1m", "lastfm", "gowalla"}
    best = {s: max(rows, key=lambda r: r[2])[0] for s, rows in PUBLISHED.items()}
    assert best == {"ml-1m": "NCL++", "lastfm": "XSimGCL++", "gowalla": "NCL++"}
    for rows in PUBLISHED.values():
        for method, recall, ndcg, source in rows:
            assert 0 < recall < 1 and 0 < ndcg < 1 and source.startswith("Lee et al. 2024, Table 1")
            assert ("supplementary PDF" in source) == (method in ("LightGCN", "LightGCN++"))
