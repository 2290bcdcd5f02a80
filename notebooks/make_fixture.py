"""Regenerates notebooks/fixtures/: a small Table 2 run on synthetic data that the notebooks read by default.

    python notebooks/make_fixture.py        # from the repository root; about 2-3 minutes on 2 CPU cores

It runs ``experiments.table2`` on a 300 users x 400 items synthetic data set with the paper's grid scaled down
(uniform at batch 1024 / 256 / 64, popular and 2-stage at 64, |N_ij| in {1, 2, 5}, d = 8, 2 folds, 40k training
pairs per run) plus the three baselines, into a temporary directory, then copies only what the notebooks read
(config.json, metrics.csv, results.json, recommendations.npz, and embeddings/*.npy of fold 0 only; no checkpoints
or TensorBoard logs)
into ``notebooks/fixtures/runs`` and the results (results.csv, table2.md, table2.tex, command.txt) into
``notebooks/fixtures/results``. The whole fixture stays well under 1 MB.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "notebooks", "fixtures")
KEEP = ("config.json", "metrics.csv", "results.json", "recommendations.npz")
EMBEDDINGS_FOLD = 0  # embeddings are kept for this fold only (size); notebooks 04 / 05 read fold 0 by default

ARGS = [
    "--dataset=synthetic",
    "--num_users=300",
    "--num_items=400",
    "--num_interactions=8000",
    "--folds=0,1",
    "--num_folds=2",
    "--uniform_batch_sizes=1024,256,64",
    "--batch_size=64",
    "--num_negatives=1,2,5",
    "--pairs_per_run=40000",
    "--evals_per_run=5",
    "--learning_rate=0.02",
    "--embedding_dim=8",
    "--num_candidates=100",
    "--baseline_trials=3",
    "--baseline_factors=8",
    "--num_threads=1",
    "--rec_users=60",
    "--rec_k=10",
]


def main() -> None:
    sys.path.insert(0, ROOT)
    from experiments import table2

    with tempfile.TemporaryDirectory() as tmp:
        runs, results = os.path.join(tmp, "runs"), os.path.join(tmp, "results")
        code = table2.cli(["table2", *ARGS, f"--out_dir={runs}", f"--results_dir={results}"])
        if code:
            raise SystemExit(code)
        shutil.rmtree(FIXTURES, ignore_errors=True)
        for dirpath, _, filenames in os.walk(runs):
            rel = os.path.relpath(dirpath, runs)
            embeddings = os.path.basename(dirpath) == "embeddings" and f"fold{EMBEDDINGS_FOLD}" in rel.split(os.sep)
            keep = [f for f in filenames if f in KEEP or embeddings]
            for f in keep:
                os.makedirs(os.path.join(FIXTURES, "runs", rel), exist_ok=True)
                shutil.copy2(os.path.join(dirpath, f), os.path.join(FIXTURES, "runs", rel, f))
        shutil.copytree(results, os.path.join(FIXTURES, "results"))
    with open(os.path.join(FIXTURES, "results", "command.txt"), encoding="utf-8") as f:
        text = f.read().replace(tmp, "<tmp>")
    with open(os.path.join(FIXTURES, "results", "command.txt"), "w", encoding="utf-8") as f:
        f.write(text)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(FIXTURES) for f in fs)
    print(f"wrote {FIXTURES} ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
