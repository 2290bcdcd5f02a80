"""The Table 2 runner (experiments/table2.py), its baselines and its tables, on a tiny synthetic data set."""

import csv
import dataclasses
import json
import os

import numpy as np
import pandas as pd
import pytest

from experiments import tables

TINY = ["--dataset=synthetic", "--num_users=120", "--num_items=200", "--num_interactions=2400"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """One tiny grid: uniform b=64 and 2-stage b=32, |N_ij| = 1, 2 folds, popularity + ALS; run twice."""
    from experiments import table2

    root = tmp_path_factory.mktemp("table2")
    argv = [
        "table2",
        *TINY,
        f"--out_dir={root / 'runs'}",
        f"--results_dir={root / 'results'}",
        "--folds=0,1",
        "--num_folds=2",
        "--samplers=uniform,2stage",
        "--uniform_batch_sizes=64",
        "--batch_size=32",
        "--num_negatives=1",
        "--max_steps=6",
        "--evals_per_run=2",
        "--embedding_dim=8",
        "--num_candidates=50",
        "--baselines=popularity,als",
        "--baseline_trials=2",
        "--baseline_factors=8",
        "--num_threads=1",
        "--rec_users=20",
        "--rec_k=5",
    ]
    assert table2.cli(argv) == 0
    results_files = sorted((root / "runs").rglob("results.json"))
    first = {p: os.stat(p).st_mtime_ns for p in results_files}
    assert table2.cli(argv) == 0
    second = {p: os.stat(p).st_mtime_ns for p in sorted((root / "runs").rglob("results.json"))}
    return root, first, second


def test_results_csv_has_one_row_per_cell_and_fold(grid):
    root, _, _ = grid
    df = pd.read_csv(root / "results" / "results.csv")
    for column in (
        "dataset",
        "method",
        "sampler",
        "batch_size",
        "num_negatives",
        "fold",
        "map@50",
        "ndcg@50",
        "recall@50",
        "mmr",
        "train_seconds",
        "pairs_per_sec",
        "steps",
    ):
        assert column in df.columns
    cml = df[df.method == "cml"]
    assert sorted(zip(cml.sampler, cml.batch_size, cml.fold)) == [
        ("2stage", 32, 0),
        ("2stage", 32, 1),
        ("uniform", 64, 0),
        ("uniform", 64, 1),
    ]
    assert (cml.steps == 6).all() and (cml.num_negatives == 1).all()
    assert sorted(df[df.method != "cml"].method) == ["als", "als", "popularity", "popularity"]
    assert df["ndcg@50"].between(0, 1).all() and (df.dataset == "synthetic").all()
    run = root / "runs" / "2stage-b32-n1" / "fold1"
    config = json.loads((run / "config.json").read_text())
    assert (config["split"], config["fold"], config["num_folds"], config["eval_every"]) == ("kfold", 1, 2, 3)
    recs = np.load(run / "recommendations.npz")
    assert recs["items"].shape == (20, 5) and recs["item_train_count"].shape == (200,)
    command = (root / "results" / "command.txt").read_text()
    assert "--samplers=uniform,2stage" in command and "git commit:" in command


def test_second_call_does_not_retrain(grid):
    _, first, second = grid
    assert len(first) == 8 and first == second


def test_markdown_and_latex_tables(grid):
    root, _, _ = grid
    md = (root / "results" / "table2.md").read_text()
    for label in ("CML Uniform (b=64)", "CML 2-stage (b=32)", "Popularity", "ALS (implicit)", "N=1 MAP@50 (%)"):
        assert label in md
    assert "±" in md and "**" in md
    tex = (root / "results" / "table2.tex").read_text()
    assert "\\textbf{" in tex and "$|N_{ij}| = 1$" in tex


def test_table_bold_and_layout():
    rows = []
    for fold, (a, b) in enumerate([(0.10, 0.20), (0.12, 0.22)]):
        for sampler, batch, value, mmr in (("uniform", 4096, a, 30.0), ("2stage", 256, b, 20.0)):
            for n in (1, 5):
                rows.append(
                    dict(
                        method="cml",
                        sampler=sampler,
                        batch_size=batch,
                        num_negatives=n,
                        fold=fold,
                        **{"map@50": value / 2, "ndcg@50": value, "mmr": mmr + n},
                    )
                )
        rows.append(
            dict(
                method="popularity",
                sampler="",
                batch_size=np.nan,
                num_negatives=np.nan,
                fold=fold,
                **{"map@50": 0.01, "ndcg@50": 0.05, "mmr": 99.0},
            )
        )
    md = tables.render_markdown(pd.DataFrame(rows))
    lines = [line for line in md.splitlines() if line.startswith("| CML") or line.startswith("| Popularity")]
    assert [line.split(" | ")[0] for line in lines] == [
        "| CML Uniform (b=4096)",
        "| CML 2-stage (b=256)",
        "| Popularity",
    ]
    two_stage = lines[1].split(" | ")
    assert two_stage[2] == "**21.00 ± 1.41**" and two_stage[3] == "**21.0 ± 0.0**"  # best NDCG, lowest MMR
    assert lines[2].count("5.00 ± 0.00") == 2  # the baseline repeats in each |N_ij| group
    assert "N=5 MMR" in md


def test_baseline_tuning_picks_best_validation_trial(tmp_path):
    from cml_tf.data.loaders import synthetic
    from cml_tf.data.splits import kfold_split
    from experiments import baselines

    split = kfold_split(synthetic.generate(120, 200, 2400).matrix, num_folds=2, fold=0)
    res = baselines.run_baseline(
        "bpr", split, str(tmp_path / "bpr"), config={"fold": 0}, trials=3, factors=8, num_threads=1
    )
    scores = [t["valid"]["ndcg@50"] for t in res["trials"]]
    assert len(scores) == 3 and res["budget"] == 3
    assert res["params"] == res["trials"][int(np.argmax(scores))]["params"]
    assert res["trials"][0]["params"] == baselines.DEFAULT_PARAMS["bpr"]
    saved = json.loads((tmp_path / "bpr" / "results.json").read_text())
    assert saved["params"] == res["params"] and 0 <= saved["ndcg@50"] <= 1
    with pytest.raises(baselines.BaselineError):
        baselines.run_baseline("bpr", split, str(tmp_path / "bpr"), config={"fold": 0}, trials=4, factors=8)


def test_bench_grid_prints_training_and_ratio_tables(capsys, tmp_path):
    """`python -m experiments.bench grid` on tiny catalogs: one row per grid cell, the 1M/26k-style ratio table,
    and the run appended to <out>/grid.md and grid.csv."""
    from experiments.bench.__main__ import main

    main(
        [
            "grid",
            "--parts=train",
            "--catalogs=3000,6000",
            "--samplers=uniform,2stage",
            "--negatives=1",
            "--batches=64",
            "--users=200",
            "--nnz=4000",
            "--steps=20",
            "--repeats=1",
            f"--out={tmp_path}",
        ]
    )
    out = capsys.readouterr().out
    assert out.startswith("## bench grid: ") and "commit " in out and " cores, TF " in out
    rows = [line for line in out.splitlines() if line.startswith("| 3000 |") or line.startswith("| 6000 |")]
    assert len(rows) == 4
    for line in rows:
        pairs_per_s = float(line.split("|")[6].replace(",", ""))
        assert pairs_per_s > 0
    assert "Step time at 6,000 items / step time at 3,000 items" in out
    ratio_rows = [line for line in out.splitlines() if line.startswith("| uniform | 1 | 64 |")]
    assert len(ratio_rows) == 1 and float(ratio_rows[0].split("|")[4]) > 0
    assert (tmp_path / "grid.md").read_text() == out
    cells = list(csv.DictReader((tmp_path / "grid.csv").open()))
    assert {c["column"] for c in cells} >= {"items", "sampler", "pairs_per_s", "ratio"}
    assert all(float(c["value"]) > 0 for c in cells if c["column"] == "pairs_per_s")


def test_bench_report_renders_and_appends_hand_made_rows(tmp_path):
    from experiments.bench.report import Stamp, Table, render, write_results

    stamp = Stamp("2 cores, TF 2.21.0, Keras 3.15.1", "abc1234", "2026-12-07 12:00 UTC")
    rows = [
        {"code": "floor", "pairs/s": 38157.4, "min..max": "35,475..40,860", "/ floor": 1.0},
        {"code": "a | b", "pairs/s": 34303.0, "min..max": "32,695..36,428", "/ floor": 0.899, "n": 5},
    ]
    table = Table("2-stage end to end", ["code", "pairs/s", "min..max", "/ floor", "n"], rows, ["* a note"])
    expected = (
        "## bench end_to_end: 2 cores, TF 2.21.0, Keras 3.15.1, commit abc1234, 2026-12-07 12:00 UTC\n\n"
        "`python -m experiments.bench end_to_end --rounds=5`\n\n"
        "### 2-stage end to end\n\n"
        "| code | pairs/s | min..max | / floor | n |\n"
        "|---|---:|---|---:|---:|\n"
        "| floor | 38,157 | 35,475..40,860 | 1.00 |  |\n"
        "| a \\| b | 34,303 | 32,695..36,428 | 0.90 | 5 |\n\n"
        "* a note\n"
    )
    command = "python -m experiments.bench end_to_end --rounds=5"
    assert render("end_to_end", command, [table], stamp) == expected
    write_results(str(tmp_path), "end_to_end", command, [table], stamp)
    write_results(str(tmp_path), "end_to_end", command, [table], stamp)
    assert (tmp_path / "end_to_end.md").read_text() == expected + "\n" + expected
    lines = (tmp_path / "end_to_end.csv").read_text().splitlines()
    assert lines[0] == "date,commit,machine,command,table,row,column,value"
    assert len(lines) == 1 + 2 * 9  # 4 + 5 filled cells per run, twice
    assert lines[1] == (
        '2026-12-07 12:00 UTC,abc1234,"2 cores, TF 2.21.0, Keras 3.15.1",'
        "python -m experiments.bench end_to_end --rounds=5,2-stage end to end,0,code,floor"
    )
    assert lines[2].endswith(",0,pairs/s,38157.4")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "error: the following arguments are required: subcommand"),
        (["speed"], "error: argument subcommand: invalid choice: 'speed'"),
        (["grid", "--rounds=0"], "error: argument --rounds: expected an integer >= 1, got 0"),
        (["grid", "--parts=train,gpu"], "error: --parts: unknown gpu"),
        (["step", "--variants=[1]"], "error: argument --variants: expected a JSON object"),
        (["end_to_end", "--floor=linear"], "error: argument --floor: invalid choice: 'linear'"),
        (["end_to_end", "--preset=fastest"], "error: --preset: unknown 'fastest'"),
        (["floor", "--bogus=1"], "error: unrecognized arguments: --bogus=1"),
    ],
)
def test_bench_bad_subcommand_or_flag_is_one_line(argv, message, capsys, tmp_path):
    from experiments.bench.__main__ import main

    with pytest.raises(SystemExit) as stop:
        main([*argv, f"--out={tmp_path}"] if argv else argv)
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_bench_end_to_end_alternates_the_softmax_floor_and_the_preset(capsys, monkeypatch):
    """`end_to_end --preset=accurate --floor=softmax` on a tiny catalog: floor and cml_tf rounds alternate, the ratio
    is the medians' and the target note names it."""
    from experiments.bench import end_to_end, timing
    from experiments.bench.__main__ import main

    calls = []
    monkeypatch.setattr(end_to_end, "run_floor", lambda *a: calls.append(("floor", a)) or {"pairs_per_s": 100.0})
    monkeypatch.setattr(end_to_end, "time_tree", lambda tree, args, kw: calls.append(("tree", kw)) or 80.0)
    main(["end_to_end", "--preset=accurate", "--floor=softmax", "--target=0.7", "--rounds=2", "--items=3000", "--out="])
    assert [c[0] for c in calls] == ["floor", "tree", "floor", "tree"]
    assert calls[0][1] == ("softmax", 31500, 3000, 256, 1)
    assert calls[1][1] == {"preset": "accurate", "overrides": {}}
    out = capsys.readouterr().out
    assert "| softmax floor | 100 | 100..100 | 1.00 |" in out
    assert "0.80 of the softmax floor (target >= 0.7: met)" in out
    assert timing.floor_script("softmax") == timing.FLOORS["softmax"]
    assert timing.floor_script("hinge", 5) == timing.FLOOR_N


@pytest.mark.slow  # a whole runner / processes end to end (default run kept under 10 minutes)
def test_bench_end_to_end_times_a_tree_with_the_accurate_preset():
    """The child process end_to_end runs per round, on this tree with the softmax preset (tiny sizes)."""
    import argparse

    from experiments.bench import end_to_end
    from experiments.bench.report import ROOT

    args = argparse.Namespace(users=100, items=2500, nnz=2000, batch_size=32, num_negatives=1, steps=20)
    assert end_to_end.time_tree(ROOT, args, {"preset": "accurate", "overrides": {"num_candidates": 500}}) > 0


def test_ease_equals_the_closed_form_by_hand():
    from experiments import baselines

    # 4 users x 3 items: XᵀX = [[2,1,1],[1,3,1],[1,1,2]]
    x = np.array([[1, 1, 0], [0, 1, 1], [1, 1, 1], [0, 0, 0]], np.float32)
    lam = 2.0
    p = np.linalg.inv(x.T @ x + lam * np.eye(3))
    ref = np.eye(3) - p / np.diag(p)[None, :]  # B = I − P·diag(1/diag(P))
    got = baselines.fit_ease(sp_csr(x), lam)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    np.testing.assert_array_equal(np.diag(got), 0.0)
    # a slow reference from the definition: B minimises ‖X − XB‖² + λ‖B‖² with diag(B) = 0, column by column
    for j in range(3):
        others = [i for i in range(3) if i != j]
        a = x[:, others]
        col = np.linalg.solve(a.T @ a + lam * np.eye(2), a.T @ x[:, j])
        np.testing.assert_allclose(got[others, j], col, atol=1e-5)


def sp_csr(dense):
    import scipy.sparse as sp

    return sp.csr_matrix(dense)


@pytest.mark.parametrize("shape", [(30, 80), (80, 30)])
def test_ease_dual_scores_equal_the_primal_form(shape):
    from experiments import baselines

    rng = np.random.default_rng(shape)
    dense = (rng.random(shape) < 0.2).astype(np.float32)
    dense[0] = 0.0  # a user without items
    dense[:, 1] = 0.0  # an item without users
    x = sp_csr(dense)
    for lam in (0.5, 10.0, 500.0):
        want = np.asarray(x @ baselines.fit_ease(x, lam))
        np.testing.assert_allclose(baselines.fit_ease_scores(x, lam), want, atol=1e-4)  # float32
    fitted = baselines.fit("ease", x, {"l2": 10.0}, factors=8, seed=0)
    assert fitted[0] == ("user_scores" if shape[0] < shape[1] else "item_item")
    users = np.array([3, 0, 7])
    want = np.asarray(x @ baselines.fit_ease(x, 10.0))[users]
    np.testing.assert_allclose(baselines.score_function(fitted)(users), want, atol=1e-5)


@pytest.mark.parametrize("block", [1, 3, 4, 10, 64])
def test_ease_symmetrises_the_inverse_block_by_block(block):
    from experiments import baselines

    a = np.random.default_rng(block).standard_normal((10, 10)).astype(np.float32)
    want = np.tril(a) + np.tril(a, -1).T
    assert baselines.symmetrise_lower(a, block=block) is a
    np.testing.assert_array_equal(a, want)


def test_ease_refuses_naming_the_memory_it_would_need():
    from experiments import baselines

    x = sp_csr(np.eye(2000, dtype=np.float32))
    with pytest.raises(baselines.BaselineError, match=r"2,000 x 2,000 item matrices need 0\.0 GiB, more than"):
        baselines.fit_ease(x, 10.0, max_bytes=1_000_000)
    with pytest.raises(baselines.BaselineError, match=r"2,000 x 2,000 user matrices need 0\.1 GiB, more than"):
        baselines.fit_ease_scores(x, 10.0, max_bytes=1_000_000)
    assert baselines.ease_memory_bytes(25_975) == 3 * 4 * 25_975**2  # citeulike-t, primal: 8.1 GB
    # citeulike-t's 7,947 users: the dual needs 3.0 GB
    assert baselines.ease_memory_bytes(25_975, 7_947) == 8 * 7_947**2 + 12 * 7_947 * 25_975


def test_ease_baseline_is_tuned_on_validation_and_beats_popularity(tmp_path):
    from cml_tf.data.loaders import synthetic
    from cml_tf.data.splits import kfold_split
    from experiments import baselines

    split = kfold_split(synthetic.generate(200, 300, 5000).matrix, num_folds=2, fold=0)
    ease = baselines.run_baseline("ease", split, str(tmp_path / "ease"), config={"fold": 0}, trials=6)
    pop = baselines.run_baseline("popularity", split, str(tmp_path / "pop"), config={"fold": 0})
    scores = [t["valid"]["ndcg@50"] for t in ease["trials"]]
    # one hyper-parameter: at most MAX_TRIALS["ease"] = 4 draws; the chosen trial is the final model
    assert ease["trials"][0]["params"] == {"l2": 500.0} and len(scores) == 4 and ease["budget"] == 4
    assert ease["train_seconds"] == ease["trials"][int(np.argmax(scores))]["fit_seconds"]
    assert ease["params"] == ease["trials"][int(np.argmax(scores))]["params"]
    assert ease["ndcg@50"] > 1.2 * pop["ndcg@50"], (ease["ndcg@50"], pop["ndcg@50"])


def test_table2_paper_2stage_cell_is_the_uncapped_weighting():
    from cml_tf.training.config import Config
    from experiments import table2

    table2.FLAGS.unparse_flags()
    try:
        argv = table2.FLAGS(["table2", *TINY, "--samplers=2stage,2stage-paper", "--max_steps=5", "--folds=0"])
        settings = table2.settings_from_flags(argv)
    finally:
        table2.FLAGS.unparse_flags()
    configs = {c.sampler: table2.cell_config(settings, c, 0, 1000) for c in settings.cells}
    assert configs["2stage-paper"].sampler == "2stage" and configs["2stage-paper"].stage2_weight_cap is None
    assert configs["2stage"].stage2_weight_cap == Config().stage2_weight_cap


def test_table2_rows_set_their_fields_and_the_softmax_rows_run_once():
    from experiments import table2

    table2.FLAGS.unparse_flags()
    try:
        argv = table2.FLAGS(
            ["table2", *TINY, "--samplers=2stage,2stage-min,dns,softmax,in_batch", "--num_negatives=1,5"]
        )
        settings = table2.settings_from_flags(argv)
    finally:
        table2.FLAGS.unparse_flags()
    assert [c.name for c in settings.cells] == [
        "2stage-b256-n1",
        "2stage-b256-n5",
        "2stage-min-b256-n1",
        "2stage-min-b256-n5",
        "dns-b256-n1",
        "dns-b256-n5",
        "softmax-b256-n1",
        "in_batch-b256-n1",
    ]
    configs = {c.name: table2.cell_config(settings, c, 0, 1000).resolved() for c in settings.cells}
    assert configs["2stage-b256-n5"].hinge == "mean" and configs["2stage-min-b256-n5"].hinge == "min"
    assert configs["dns-b256-n5"].sampler == "dns"
    softmax = configs["softmax-b256-n1"]
    assert (softmax.sampler, softmax.loss, softmax.temperature) == ("2stage", "softmax", 0.5)
    assert (configs["in_batch-b256-n1"].sampler, configs["in_batch-b256-n1"].loss) == ("in_batch", "softmax")


def test_table2_run_of_part_of_the_grid_replaces_only_its_rows(tmp_path):
    from experiments import table2

    settings = table2.Settings(**{f.name: None for f in dataclasses.fields(table2.Settings) if f.name != "argv"})
    settings.results_dir, settings.dataset = str(tmp_path), "synthetic"

    def row(sampler, n, fold, ndcg):
        return {"method": "cml", "sampler": sampler, "batch_size": 256, "num_negatives": n, "fold": fold,
                "map@50": ndcg / 2, "ndcg@50": ndcg, "mmr": 5.0}  # fmt: skip

    baseline = {"method": "als", "sampler": "", "batch_size": "", "num_negatives": "", "fold": 0, "ndcg@50": 0.3}
    table2.write_outputs(settings, [row("uniform", 5, 0, 0.1), row("2stage", 5, 0, 0.2), baseline])
    earlier = table2.earlier_rows(settings)  # read back: numbers as floats, blanks as NaN
    table2.write_outputs(settings, [row("2stage", 5, 0, 0.25), row("dns", 5, 0, 0.05)], earlier)
    df = pd.read_csv(tmp_path / "results.csv")
    assert sorted(zip(df.method, df.sampler.fillna(""), df["ndcg@50"])) == [
        ("als", "", 0.3),
        ("cml", "2stage", 0.25),
        ("cml", "dns", 0.05),
        ("cml", "uniform", 0.1),
    ]


def test_best_cml_flags_are_checked_and_the_table_reads_table2(tmp_path, capsys):
    import pandas as pd

    from experiments import best_cml

    with pytest.raises(SystemExit):
        best_cml.parse_args(["--candidates=nope"])
    assert "--candidates: unknown ['nope']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        best_cml.parse_args(["--folds=0,4"])
    assert "--folds: each fold must be in 0..3" in capsys.readouterr().err

    def result(ndcg, seconds):
        return {
            "ndcg@50": ndcg,
            "map@50": ndcg / 2,
            "recall@50": 2 * ndcg,
            "mmr": 9.0,
            "train_seconds": seconds,
            "pairs_per_sec": 1000.0,
            "valid": {"ndcg@50": ndcg, "map@50": 0, "recall@50": 0, "mmr": 8.0},
        }

    screen = [
        best_cml.row("screen", "uniform-n5-lr1e-4", 0, 512, result(0.05, 10)),
        best_cml.row("screen", "uniform-n5-lr1e-3", 0, 512, result(0.07, 12)),
    ]
    final = [best_cml.row("final", "uniform-n5-lr1e-3", f, 1024, result(0.10 + 0.02 * f, 60)) for f in (0, 1)]
    t2 = tmp_path / "results.csv"
    pd.DataFrame(
        [
            {
                "method": "als",
                "sampler": "",
                "batch_size": "",
                "num_negatives": "",
                "fold": f,
                "ndcg@50": 0.15,
                "map@50": 0.07,
                "recall@50": 0.26,
                "mmr": 13.0,
                "train_seconds": 4.0,
            }
            for f in (0, 1, 2)
        ]
    ).to_csv(t2, index=False)
    timed = [best_cml.row("timed", r["candidate"], 0, 1024, result(r["valid_ndcg@50"] + 0.01, 50)) for r in screen]
    md = best_cml.markdown(screen, timed, final, str(t2), [0, 1], "uniform-n5-lr1e-3")
    assert "| uniform-n5-lr1e-3 | 512 | 7.00 |" in md
    assert "| uniform-n5-lr1e-3 **(chosen)** | 1,024 | 8.00 |" in md
    assert "| **best CML** (uniform-n5-lr1e-3, 1,024 pairs) | 11.00 ± 1.41 |" in md
    assert "| ALS (implicit, tuned) | 15.00 ± 0.00 |" in md  # only the final runs' folds 0 and 1


def test_best_cml_accurate_candidate_is_the_preset_with_its_own_epochs():
    from cml_tf.training.config import PRESETS
    from experiments import best_cml

    fields = best_cml.candidate_fields("accurate")
    assert fields == PRESETS["accurate"] and fields["loss"] == "softmax"
    # 50 passes over the fold's 1,000 training pairs, in whole batches of 256: 196 batches; others keep the budget
    assert best_cml.run_pairs("accurate", 5_000_000, 1000) == 196 * 256
    assert best_cml.run_pairs("uniform-n5-lr1e-4", 5_000, 1000) == 20 * 256
    config = best_cml.run_config("x", fields, 0, 98 * 256)
    assert (config.loss, config.temperature, config.max_steps) == ("softmax", 0.5, 98)
    row = best_cml.row("final", "accurate", 0, 1, {"steps": 98, "valid": {}})
    assert row["pairs"] == 98 * 256


def test_accuracy_time_points_average_over_folds_and_plot(tmp_path):
    from experiments import accuracy_time

    t2 = tmp_path / "t2.csv"
    pd.DataFrame(
        [
            {
                "method": "als",
                "sampler": "",
                "batch_size": "",
                "num_negatives": "",
                "fold": f,
                "ndcg@50": v,
                "train_seconds": 4.0 + f,
            }  # fmt: skip
            for f, v in ((0, 0.15), (1, 0.17))
        ]
        + [
            {
                "method": "cml",
                "sampler": "uniform",
                "batch_size": 256,
                "num_negatives": 5,
                "fold": 0,
                "ndcg@50": 0.1,
                "train_seconds": 40.0,
            }  # fmt: skip
        ]
    ).to_csv(t2, index=False)
    (tmp_path / "best_x").mkdir()
    best = tmp_path / "best_x" / "results.csv"
    pd.DataFrame([{"candidate": "accurate", "fold": 0, "ndcg@50": 0.2, "train_seconds": 300.0}]).to_csv(best)
    rows = accuracy_time.points(str(t2), [str(best)])
    by_label = {r[0]: r for r in rows}
    assert by_label["ALS (tuned)"][2:5] == (2, 4.5, pytest.approx(16.0))
    assert by_label["uniform@256 N=5"][1:5] == ("table2", 1, 40.0, pytest.approx(10.0))
    assert by_label["accurate (best_x)"][1] == "best"
    assert accuracy_time.markdown(rows).splitlines()[2].startswith("| accurate (best_x) | best | 1 | 300 | 20.00")
    argv = [f"--table2_results={t2}", f"--best_results={tmp_path / 'best_*' / 'results.csv'}", f"--out_dir={tmp_path}"]
    assert accuracy_time.main(argv) == 0 and (tmp_path / "accuracy_time.png").stat().st_size > 0


def test_time_to_accuracy_scores_the_best_validation_within_each_budget():
    import pandas as pd

    from experiments import time_to_accuracy as tta

    def rows(setting, points):
        batch, rate = tta.parse_setting(setting)
        return [
            {
                "dataset": "d",
                "setting": setting,
                "batch_size": batch,
                "learning_rate": rate,
                "step": 10 * (i + 1),
                "epoch": 0.0,
                "train_seconds": t,
                "val_ndcg": v,
                "k": 20,
            }
            for i, (t, v) in enumerate(points)
        ]

    curves = pd.DataFrame(rows("256:1e-4", [(50, 0.1), (110, 0.3), (170, 0.2)]) + rows("1024:3e-4", [(70, 0.25)]))
    table = tta.best_within(curves, [1, 2, 3])
    assert table.loc[("d", "256:1e-4")].tolist()[:3] == [0.1, 0.3, 0.3]  # the best so far, not the last
    first = table.loc[("d", "1024:3e-4")]
    assert np.isnan(first["1 min"]) and first["2 min"] == first["3 min"] == 0.25  # no validation within 1 min
    assert first["pairs/s"] == pytest.approx(10 * 1024 / 70)
    text = tta.render(curves, [1, 2, 3])
    assert "| 256:1e-4 | **0.1000** | **0.3000** | **0.3000** |" in text
    assert "| 1024:3e-4 | — | 0.2500 | 0.2500 |" in text
    assert "Leads: 1 min: 256:1e-4; 2 min: 256:1e-4; 3 min: 256:1e-4." in text


@pytest.mark.parametrize("argv", [["--grid=1024"], ["--grid=0:1e-4"], ["--grid=256:x"], ["--datasets=yelp"]])
def test_time_to_accuracy_bad_flags_are_one_line(argv, capsys):
    from experiments import time_to_accuracy as tta

    with pytest.raises(SystemExit):
        tta.parse_args(argv)
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("python -m experiments.time_to_accuracy: error")


def test_time_to_accuracy_run_is_the_preset_with_the_setting_and_a_budget():
    from cml_tf.training.config import Config
    from experiments import time_to_accuracy as tta

    args = tta.parse_args(["--budgets=1,4", "--eval_pairs=100000"])
    config = tta.run_config("ml-1m", "1024:3e-4", args)
    preset = Config(preset="accurate")
    assert (config.loss, config.temperature, config.sampler) == (preset.loss, preset.temperature, preset.sampler)
    assert (config.batch_size, config.learning_rate, config.k) == (1024, 3e-4, 20)
    assert config.max_train_seconds == 240.0 and config.eval_every == 98 and config.split == "given"


def test_accurate_linear_baselines_sit_beside_the_choice_and_never_take_part():
    from experiments import accurate

    rows = []
    for dataset, hinge, soft, ease in [("a", 0.10, 0.12, 0.15), ("b", 0.20, 0.30, 0.25)]:
        for candidate, ndcg in [("hinge-uniform-n5", hinge), ("softmax-t0.5", soft), ("linear:ease", ease)]:
            rows.append(
                {"dataset": dataset, "candidate": candidate, "pairs": 100, "val_ndcg@50": ndcg, "val_mmr": 2.0}
                | {"ndcg@50": ndcg, "train_seconds": 1.0}
            )
    df = pd.DataFrame(rows)
    table = accurate.scores(df)
    assert list(table.candidate) == ["softmax-t0.5", "hinge-uniform-n5"]  # the baseline is not a candidate
    assert table.iloc[0]["val NDCG / hinge"] == pytest.approx((1.2 + 1.5) / 2)
    text = accurate.render(df)
    assert "Chosen: **softmax-t0.5**" in text
    assert "| a | 12.00 | 15.00 | 0.800 |" in text and "| b | 30.00 | 25.00 | 1.200 |" in text
    assert accurate.beside_linear(df[df.candidate != "linear:ease"], "softmax-t0.5") == []
    with pytest.raises(SystemExit):
        accurate.parse_args(["--baselines=lasso"])
    with pytest.raises(SystemExit):
        accurate.parse_args(["--baselines=ease", "--baseline_trials=0"])


@pytest.mark.slow  # a whole runner / processes end to end (default run kept under 10 minutes)
def test_bench_matmul_times_every_kernel_and_dtype_against_float32(capsys):
    from experiments.bench.__main__ import main

    (table,) = main(["matmul", "--batch_sizes=8", "--candidates=32", "--dim=4", "--rounds=2", "--calls=2", "--out="])
    assert [(r["kernels"], r["dtype"]) for r in table.rows] == [
        ("TensorFlow (oneDNN)", "float32"),
        ("TensorFlow (oneDNN)", "bfloat16"),
        ("XLA", "float32"),
        ("XLA", "bfloat16"),
    ]
    assert table.rows[0]["/ float32 TF"] == 1.0 and all(r["ms"] > 0 for r in table.rows)
    assert "The softmax step's three products (C=32, d=4)" in capsys.readouterr().out


def test_bench_matmul_products_equal_the_definition():
    import tensorflow as tf

    from experiments.bench.matmul import three_products

    u, v, g = np.arange(6.0).reshape(2, 3), np.arange(12.0).reshape(4, 3), np.arange(8.0).reshape(2, 4)
    want = (u @ v.T).sum() + (g @ v).sum() + (g.T @ u).sum()
    got = three_products(tf.float32)(*(tf.constant(x, tf.float32) for x in (u, v, g)))
    assert float(got) == pytest.approx(want)


def test_bench_step_prints_the_step_alone_fed_and_the_pipeline(capsys):
    from experiments.bench.__main__ import main

    argv = ["step", "--users=300", "--items=3000", "--nnz=6000", "--steps=20", "--rounds=1", "--num_negatives=2"]
    main(argv + ['--variants={"default": {}, "no GOR": {"gor_weight": 0}}', "--out="])
    rows = {
        line.split("|")[1].strip(): line.split("|")[2:] for line in capsys.readouterr().out.splitlines() if "|" in line
    }
    for name in ("default", "no GOR"):
        alone, fed = float(rows[f"{name}: the step alone"][0]), float(rows[f"{name}: the step fed by the pipeline"][0])
        assert alone > 0 and fed > 0
        assert float(rows[f"{name}: the step fed by the pipeline"][3]) == pytest.approx(
            fed - alone, abs=0.02
        )  # each cell rounded to 0.01
    assert float(rows["the 2-stage input pipeline alone"][0]) > 0
