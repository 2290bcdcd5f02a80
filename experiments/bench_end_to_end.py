"""End-to-end 2-stage training speed before and after a change, against the bare-TF floor, in one run.

    python experiments/bench_end_to_end.py --before=3b5dd16 --items=160000 --rounds=5
    python experiments/bench_end_to_end.py --before=e041454 --num_negatives=5 \
        --variants='{"successive": {}, "independent": {"stage2_replacement": true}}'

Each round runs, one after the other and each in a fresh process: the speed floor (../shared/bench/floor.py), the
``--before`` commit's cml_tf (exported with ``git archive`` into a temporary directory) and this tree's cml_tf, both
timed through the real training path (`experiments/benchmark.py`'s ``time_training``: ``TrainingStream`` ->
``CML.fit``, lazy Adam, the *default* 2-stage of that version, B = 256, C = 2000, d = 128, ``--num_negatives``) on
the same synthetic training matrix; ``--variants`` times this tree with Config fields changed (a JSON object:
name -> fields). At |N_ij| > 1 the floor is experiments/floor.py, the shared floor's step at that |N_ij|.
Prints a Markdown table of the median positive pairs/s over the rounds, min..max, and
the ratios to the floor and to the earlier code. Rounds alternate the three so that all see the same machine state;
read the ratios, not the absolute figures, when the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from experiments.benchmark import run_floor, table  # noqa: E402

# Runs in a fresh process with the tree to time first on sys.path.
CHILD = """
import json, os, sys, warnings
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
sys.path.insert(0, {tree!r})
warnings.filterwarnings("ignore")
from experiments import benchmark
train = benchmark.synthetic_train({users}, {items}, {nnz})
r = benchmark.time_training(train, "2stage", 256, {negatives}, {steps}, 1{overrides})
print("RESULT " + json.dumps({{"pairs_per_s": r["pairs_per_s"], "ms_per_step": r["ms_per_step"]}}))
"""


def time_tree(tree: str, users: int, items: int, nnz: int, steps: int, negatives: int = 1, overrides=None) -> float:
    extra = f", overrides={overrides!r}" if overrides else ""
    code = CHILD.format(tree=tree, users=users, items=items, nnz=nnz, steps=steps, negatives=negatives, overrides=extra)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tree, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return float(json.loads(line[7:])["pairs_per_s"])
    raise RuntimeError(f"timing {tree} failed:\n{out.stderr[-2000:]}")


def export_commit(rev: str) -> str:
    """The tree of ``rev`` in a temporary directory (``git archive``)."""
    path = tempfile.mkdtemp(prefix=f"cml_tf-{rev}-")
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", path], input=archive, check=True)
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", default="3b5dd16", help="the earlier commit")
    p.add_argument("--items", type=int, default=160000)
    p.add_argument("--users", type=int, default=31500)
    p.add_argument("--nnz", type=int, default=1_000_000)
    p.add_argument("--steps", type=int, default=600, help="timed steps per measurement (after a warm-up)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--num_negatives", type=int, default=1)
    p.add_argument("--variants", default='{"this tree": {}}', help="JSON: name -> Config fields for this tree")
    args = p.parse_args(argv)
    variants = json.loads(args.variants)
    before = export_commit(args.before)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    runs = {"floor": [], args.before: [], **{name: [] for name in variants}}
    n = args.num_negatives
    for i in range(args.rounds):
        floor = run_floor(args.users, args.items, num_negatives=n)
        if floor is None:
            raise SystemExit("error: the speed floor ../shared/bench/floor.py was not found or printed no result")
        runs["floor"].append(floor["pairs_per_s"])
        runs[args.before].append(time_tree(before, args.users, args.items, args.nnz, args.steps, n))
        for name, fields in variants.items():
            runs[name].append(time_tree(ROOT, args.users, args.items, args.nnz, args.steps, n, fields))
        print(
            f"round {i + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in runs.items()), file=sys.stderr
        )
    med = {k: float(np.median(v)) for k, v in runs.items()}
    rows = []
    for name, values in runs.items():
        label = f"{name} ({commit.stdout.strip()}{', uncommitted changes' if _dirty() else ''})"
        rows.append(
            {
                "code": label if name in variants else name,
                "pairs_per_s": med[name],
                "min..max": f"{min(values):,.0f}..{max(values):,.0f}",
                "/ floor": med[name] / med["floor"],
                f"/ {args.before}": med[name] / med[args.before] if name != "floor" else "",
            }
        )
    print(
        f"## 2-stage end to end, default settings of each version (B=256, |N|={n}, C=2000, d=128, "
        f"{args.items:,} items): median of {args.rounds} alternating rounds\n"
    )
    print(table(rows, ["code", "pairs_per_s", "min..max", "/ floor", f"/ {args.before}"]))


def _dirty() -> bool:
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True)
    return bool(out.stdout.strip())


if __name__ == "__main__":
    main()
