"""Training throughput grid (catalogs x samplers x |N_ij| x batch), step-time ratios, 2-stage against the floor,
evaluation and the 48M-row load.

    python -m experiments.bench grid --dense            # everything (~13 min on 2 cores)
    python -m experiments.bench grid --quick            # 26k and 160k items, batch 256, no 48M-row load
    python -m experiments.bench grid --parts=train,floor --catalogs=26000,160000 --repeats=3

Training throughput is measured through the real path (`TrainingStream` -> `CML.fit` with the lazy optimizer and
20 steps per execution), as positive pairs per second: the median over ``--repeats`` fresh model instances, each
warmed up and then timed over one ``fit`` of ``--steps`` steps (a quarter at batch 4096). The ``floor`` part
alternates ../shared/bench/floor.py (a fresh process) and a fresh cml_tf model (2-stage, B = 256, |N_ij| = 1,
3 x ``--steps`` steps) over ``--rounds`` rounds at each catalog up to 160k items: medians, and their ratio.
"""

from __future__ import annotations

import gc

from experiments.bench import eval as eval_bench
from experiments.bench import load as load_bench
from experiments.bench.flags import common, ints, names
from experiments.bench.report import Table, median, spread
from experiments.bench.timing import alternate, run_floor, synthetic_train, time_training

PARTS = ("train", "floor", "eval", "load")


def add_arguments(p) -> None:
    """The grid's flags."""
    p.add_argument("--quick", action="store_true", help="catalogs up to 160k items, batch 256 only, no 48M-row load")
    p.add_argument("--parts", type=names, default=list(PARTS), help="comma list of: " + ", ".join(PARTS))
    p.add_argument("--samplers", type=names, default=["uniform", "popular", "2stage"])
    p.add_argument("--negatives", type=ints, default=[1, 5], help="comma list of |N_ij|")
    p.add_argument("--batches", type=ints, default=[256, 4096], help="comma list of batch sizes")
    p.add_argument("--repeats", type=int, default=3, help="fresh model instances per grid cell (median)")
    p.add_argument("--dense", action="store_true", help="also time Keras' dense Adam at 2stage/256/N=1")
    p.add_argument("--load_rows", type=int, default=load_bench.FULL_ROWS)
    p.add_argument("--eval_users", type=int, default=30000)
    p.add_argument("--eval_items", type=int, default=160000)
    common(p, catalogs=[26000, 160000, 1_000_000], users=31500, nnz=1_000_000, steps=200, rounds=5)


def run(args) -> list[Table]:
    """The parts of ``--parts``, one or two tables each."""
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        from cml_tf.cli import console

        console.fail(f"--parts: unknown {', '.join(unknown)}; expected some of {', '.join(PARTS)}")
    parts, catalogs, batches = set(args.parts), args.catalogs, args.batches
    if args.quick:
        catalogs, batches = [c for c in catalogs if c <= 160000], [256]
        parts.discard("load")
    tables = []
    if "train" in parts:
        tables += training_tables(args, catalogs, batches)
    if "floor" in parts:
        tables.append(floor_table(args, [c for c in catalogs if c <= 160000] or catalogs[:1]))
    if "eval" in parts:
        row = eval_bench.measure(args.eval_users, args.eval_items)
        size = f"{args.eval_users:,} users x {args.eval_items:,} items"
        tables.append(Table(f"Evaluation: full ranking, k=50, {size} (target < 60 s)", eval_bench.COLUMNS, [row]))
    if "load" in parts:
        row = load_bench.run_load_benchmark(rows=args.load_rows, keep=False)
        heading = f"Raw Echonest-format load, {args.load_rows:,} rows (target < 120 s, < 8 GB)"
        tables.append(Table(heading, load_bench.COLUMNS, [row]))
    return tables


def training_tables(args, catalogs: list[int], batches: list[int]) -> list[Table]:
    """The throughput grid and, over two catalogs or more, the largest's step time over the smallest's."""
    rows = []
    for n_items in catalogs:
        train = synthetic_train(args.users, n_items, args.nnz)
        cells = [(s, n, b) for s in args.samplers for n in args.negatives for b in batches]
        if args.dense:
            cells.append(("2stage (dense Adam)", 1, 256))
        for sampler, n, b in cells:
            dense = sampler.endswith("(dense Adam)")
            steps = args.steps if b <= 256 and not dense else max(20, args.steps // 4 // 20 * 20)
            r = time_training(train, sampler.split()[0], b, n, steps, args.repeats, dense=dense)
            rows.append(
                {"items": n_items, "sampler": sampler, "|N|": n, "batch": b, **r, "ms min..max": spread(r["ms"])}
            )
        del train
        gc.collect()
    columns = ["items", "sampler", "|N|", "batch", "ms_per_step", "pairs_per_s", "ms min..max"]
    tables = [Table(f"Training throughput (positive pairs/s; median of {args.repeats} model instances)", columns, rows)]
    if len(catalogs) > 1:
        lo, hi = min(catalogs), max(catalogs)
        key = lambda r: (r["sampler"], r["|N|"], r["batch"])  # noqa: E731
        base = {key(r): r["ms_per_step"] for r in rows if r["items"] == lo}
        ratios = [
            {"sampler": r["sampler"], "|N|": r["|N|"], "batch": r["batch"], "ratio": r["ms_per_step"] / base[key(r)]}
            for r in rows
            if r["items"] == hi and "dense" not in r["sampler"]
        ]
        heading = f"Step time at {hi:,} items / step time at {lo:,} items (target <= 1.5)"
        tables.append(Table(heading, ["sampler", "|N|", "batch", "ratio"], ratios))
    return tables


def floor_table(args, catalogs: list[int]) -> Table:
    """2-stage training (B = 256, |N_ij| = 1) against the hinge floor, alternated over ``--rounds`` rounds."""
    rows = []
    for n_items in catalogs:
        train = synthetic_train(args.users, n_items, args.nnz)
        rounds = alternate(
            args.rounds,
            {
                "floor": lambda n_items=n_items: run_floor("hinge", args.users, n_items)["pairs_per_s"],
                "cml_tf": lambda train=train: time_training(train, "2stage", 256, 1, 3 * args.steps)["pairs_per_s"],
            },
            label=f"floor, {n_items:,} items: ",
        )
        f, o = median(rounds["floor"]), median(rounds["cml_tf"])
        rows.append(
            {
                "items": n_items,
                "floor pairs/s": f,
                "cml_tf pairs/s": o,
                "cml_tf / floor": o / f,
                "cml_tf min..max": spread(rounds["cml_tf"]),
            }
        )
    heading = (
        f"2-stage training (d=128, B=256, C=2000, |N|=1) against the bare-TF floor, median of {args.rounds} "
        "alternating rounds (target >= 0.60)"
    )
    return Table(heading, ["items", "floor pairs/s", "cml_tf pairs/s", "cml_tf / floor", "cml_tf min..max"], rows)
