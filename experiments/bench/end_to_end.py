"""cml_tf training end to end against its speed floor (and an earlier commit), in alternating rounds, each timing
in a fresh process.

    python -m experiments.bench end_to_end --preset=accurate --floor=softmax --target=0.7   # issue 38's targets
    python -m experiments.bench end_to_end --floor=hinge --target=0.85
    python -m experiments.bench end_to_end --before=3b5dd16 --items=160000 --rounds=5
    python -m experiments.bench end_to_end --before=e041454 --num_negatives=5 \
        --variants='{"successive": {}, "independent": {"stage2_replacement": true}}'

Each round runs, one after the other: the speed floor (``--floor``: ``hinge``, ../shared/bench/floor.py, at
|N_ij| > 1 experiments/bench/floor_n.py; ``softmax``, ../shared/bench/floor_softmax.py; by default the one of the
preset's loss), the ``--before`` commit's cml_tf if given (exported with ``git archive`` into a temporary directory,
timed by its own timing code) and this tree's cml_tf with each of ``--variants`` (Config fields changed from the
preset's), all through the real training path (`experiments.bench.timing.time_training`: ``TrainingStream`` ->
``CML.fit``, lazy Adam, ``--preset`` (none: the defaults), B = ``--batch_size``, C = 2000, d = 128) on the same
synthetic training matrix, and the floor at the same users, items and batch. Reports the median positive pairs/s
over the rounds, min..max, and the ratios of the medians to the floor and to the earlier code. Rounds alternate so
that all see the same machine state; read the ratios, not the absolute figures, when the machine is shared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from experiments.bench.flags import common
from experiments.bench.report import ROOT, Table, commit, median, spread
from experiments.bench.timing import FLOORS, alternate, floor_script, run_floor

# Runs in a fresh process with the tree to time first on sys.path; a tree from before experiments/bench has
# experiments/benchmark.py with the same time_training (positional arguments up to ``repeats``, then keywords).
CHILD = """
import json, os, sys, warnings
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
sys.path.insert(0, {tree!r})
warnings.filterwarnings("ignore")
try:
    from experiments.bench.timing import synthetic_train, time_training
except ImportError:
    from experiments.benchmark import synthetic_train, time_training
train = synthetic_train({users}, {items}, {nnz})
r = time_training(train, "2stage", {batch}, {negatives}, {steps}, 1, **json.loads({keywords!r}))
print("RESULT " + json.dumps({{"pairs_per_s": r["pairs_per_s"], "ms_per_step": r["ms_per_step"]}}))
"""


def add_arguments(p) -> None:
    """The end-to-end benchmark's flags."""
    common(p, users=31500, items=160000, nnz=1_000_000, batch_size=256, num_negatives=1, steps=600, rounds=5)
    common(p, before=None, variants={"this tree": {}})
    p.add_argument("--preset", default=None, help="the Config preset cml_tf is timed with, e.g. accurate")
    p.add_argument("--floor", choices=sorted(FLOORS), default=None, help="default: softmax for a softmax preset")
    p.add_argument("--target", type=float, default=None, help="the cml_tf / floor ratio to meet (noted)")


def time_tree(tree: str, args, keywords: dict) -> float:
    """Pairs/s of one training timing of ``tree``'s cml_tf in a fresh process (``keywords``: of time_training)."""
    code = CHILD.format(
        tree=tree,
        users=args.users,
        items=args.items,
        nnz=args.nnz,
        batch=args.batch_size,
        negatives=args.num_negatives,
        steps=args.steps,
        keywords=json.dumps(keywords),
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tree, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return float(json.loads(line[7:])["pairs_per_s"])
    from cml_tf.cli import console

    last = (out.stderr.strip().splitlines() or ["no output"])[-1]
    console.fail(f"timing the tree {tree} failed: {last}")


def export_commit(rev: str) -> str:
    """The tree of ``rev`` in a temporary directory (``git archive``)."""
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=False)
    if archive.returncode:
        from cml_tf.cli import console

        console.fail(f"--before: {rev!r} is not a commit of this repository")
    path = tempfile.mkdtemp(prefix=f"cml_tf-{rev}-")
    subprocess.run(["tar", "-x", "-C", path], input=archive.stdout, check=True)
    return path


def floor_of(args) -> str:
    """``--floor``, or the one of the preset's loss."""
    if args.floor:
        return args.floor
    from cml_tf.training.config import Config

    try:
        loss = Config(preset=args.preset).loss
    except ValueError as e:
        from cml_tf.cli import console

        console.fail(str(e))
    return "softmax" if loss == "softmax" else "hinge"


def run(args) -> list[Table]:
    """One table: the floor, the earlier commit, this tree's variants."""
    floor = floor_of(args)
    preset = {"preset": args.preset} if args.preset else {}
    here, base = commit(), f"{floor} floor"
    n = args.num_negatives
    measures = {base: lambda: run_floor(floor, args.users, args.items, args.batch_size, n)["pairs_per_s"]}
    if args.before:
        tree = export_commit(args.before)
        measures[args.before] = lambda: time_tree(tree, args, preset)
    for name, fields in args.variants.items():
        measures[f"{name} ({here})"] = lambda f=fields: time_tree(ROOT, args, {**preset, "overrides": f})
    pairs = alternate(args.rounds, measures)
    med = {name: median(v) for name, v in pairs.items()}
    rows = []
    for name, values in pairs.items():
        row = {"code": name, "pairs/s": med[name], "min..max": spread(values), "/ floor": med[name] / med[base]}
        if args.before and name != base:
            row[f"/ {args.before}"] = med[name] / med[args.before]
        rows.append(row)
    columns = ["code", "pairs/s", "min..max", "/ floor"] + ([f"/ {args.before}"] if args.before else [])
    notes = []
    if args.target is not None:
        for row in rows[1 + bool(args.before) :]:
            met = "met" if row["/ floor"] >= args.target else "not met"
            ratio = f"{row['/ floor']:.2f} of the {floor} floor"
            notes.append(f"* {row['code']}: {ratio} (target >= {args.target:g}: {met})")
    what = f"--preset={args.preset}" if args.preset else "default settings"
    script = os.path.basename(floor_script(floor, n))
    heading = (
        f"cml_tf end to end ({what}, B={args.batch_size}, |N|={args.num_negatives}, C=2000, d=128, {args.users:,} x "
        f"{args.items:,}) against the {floor} floor ({script}): median of {args.rounds} "
        "alternating rounds, pairs/s"
    )
    return [Table(heading, columns, rows, notes)]
