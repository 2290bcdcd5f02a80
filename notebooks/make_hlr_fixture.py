"""Regenerates notebooks/fixtures/hlr_table/: a small `experiments.hlr_table` run that notebook 07 reads in tests.

    python notebooks/make_hlr_fixture.py        # from the repository root; about 3 minutes on 2 CPU cores

Every model and baseline of the table on the 150 users x 200 items synthetic set (2 seeds, 2 epochs), into a
temporary directory; only the results folder (results.csv, hlr_table.md, command.txt, curves/) is kept.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.path.join(ROOT, "notebooks", "fixtures", "hlr_table")
ARGS = [
    "--datasets=synthetic",
    "--seeds=0,1",
    "--epochs=2",
    "--evals=2",
    "--eval_users=100",
    "--baseline_trials=1",
    "--learning_rates=5e-3,2e-2",
]


def main() -> None:
    sys.path.insert(0, ROOT)
    from experiments import hlr_table

    with tempfile.TemporaryDirectory() as tmp:
        results = os.path.join(tmp, "results")
        code = hlr_table.cli([*ARGS, f"--out_dir={os.path.join(tmp, 'runs')}", f"--results_dir={results}"])
        if code:
            raise SystemExit(code)
        shutil.rmtree(TARGET, ignore_errors=True)
        shutil.copytree(results, TARGET)
        # the command as a fixture user would rerun it; the temporary paths mean nothing later
        with open(os.path.join(TARGET, "command.txt"), "w", encoding="utf-8") as f:
            f.write(f"command: python notebooks/make_hlr_fixture.py (experiments.hlr_table {' '.join(ARGS)})\n")
        csv_path = os.path.join(TARGET, "results.csv")
        with open(csv_path, encoding="utf-8") as f:
            text = f.read().replace(os.path.join(tmp, "runs") + os.sep, "runs/")
        with open(csv_path, "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
