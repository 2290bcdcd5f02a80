"""The bare-TF speed floors alone: ../shared/bench/floor.py (2-stage hinge) and floor_softmax.py (sampled softmax).

    python -m experiments.bench floor                                  # both, citeulike-t's 7,947 x 25,975
    python -m experiments.bench floor --floors=softmax --rounds=9 --users=31500 --items=160000

Each floor is a forward + backward step with no optimizer update and no input pipeline, so it is faster than any
real training step: what cml_tf is measured against (`end_to_end` alternates a floor with cml_tf in one run and
reports the ratio, which is what the targets are about). Here the floors alternate with each other over
``--rounds`` rounds, each run a fresh process; reports the median ms/step and pairs/s, and min..max.
"""

from __future__ import annotations

import os

from experiments.bench.flags import common, names
from experiments.bench.report import Table, median, spread
from experiments.bench.timing import FLOORS, alternate, floor_script, run_floor


def add_arguments(p) -> None:
    """The floor benchmark's flags."""
    p.add_argument("--floors", type=names, default=sorted(FLOORS), help="comma list of: " + ", ".join(sorted(FLOORS)))
    common(p, users=7947, items=25975, batch_size=256, num_negatives=1, rounds=5)


def run(args) -> list[Table]:
    """One table: a row per floor."""
    unknown = sorted(set(args.floors) - set(FLOORS))
    if unknown:
        from cml_tf.cli import console

        console.fail(f"--floors: unknown {', '.join(unknown)}; expected some of {', '.join(sorted(FLOORS))}")
    n = args.num_negatives
    runs = {f: lambda f=f: run_floor(f, args.users, args.items, args.batch_size, n)["ms_per_step"] for f in args.floors}
    ms = alternate(args.rounds, runs)
    rows = [
        {
            "floor": f"{name} ({os.path.basename(floor_script(name, n))})",
            "ms_per_step": median(v),
            "ms min..max": spread(v),
            "pairs/s": args.batch_size / median(v) * 1e3,
        }
        for name, v in ms.items()
    ]
    heading = (
        f"Speed floors (B={args.batch_size}, |N|={n}, C=2000, d=128, {args.users:,} x {args.items:,}): median of "
        f"{args.rounds} alternating rounds"
    )
    return [Table(heading, ["floor", "ms_per_step", "ms min..max", "pairs/s"], rows)]
