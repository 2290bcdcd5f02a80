"""``python -m experiments.bench <subcommand> [flags]``: the one entry point of the speed benchmarks.

Subcommands (``python -m experiments.bench <subcommand> --help`` for each one's flags):

    grid        training pairs/s over catalogs x samplers x |N_ij| x batch; 1M/26k step-time ratios; 2-stage against
                the hinge floor; evaluation; the 48M-row load (the parts of --parts)
    step        where a 2-stage step's time goes: the step alone, fed by the input pipeline, the pipeline alone
    profile     a step of any preset part by part: stage 1, the mask, log q, stage 2, forward, backward, the
                optimizer, Keras' fit, the pipeline, validation, against the loss's floor
    stage2      stage 2's draw (two_stage_select) of an earlier commit against this tree's
    end_to_end  cml_tf training end to end (any --preset) against its floor (--floor=hinge|softmax), and an earlier
                commit, in alternating rounds, each in a fresh process
    eval        full-ranking evaluation time
    load        a raw Echonest-format file's load time and peak memory
    models      training pairs/s and full-ranking time per model of the CML family (ml-100k)
    retrieval   faiss HNSW / IVF against exact retrieval: recall@50, queries/s
    floor       the bare-TF speed floors (../shared/bench/floor.py, floor_softmax.py) alone
    matmul      the sampled softmax's three matrix products in float32 and bfloat16, by TensorFlow's kernels and XLA

Each run prints one Markdown report (experiments.bench.report: a title line with the subcommand, machine, commit and
date; medians with min..max where a figure is repeated; ratios measured in the same run) and appends it to
``experiments/results/bench/<subcommand>.md`` and its figures to ``<subcommand>.csv`` (``--out`` elsewhere,
``--out=`` nowhere).
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys

from cml_tf.cli import console
from experiments.bench.flags import BenchParser
from experiments.bench.report import RESULTS, Stamp, Table, render, write_results
from experiments.bench.timing import FloorMissing

SUBCOMMANDS = (
    "grid",
    "step",
    "profile",
    "stage2",
    "end_to_end",
    "eval",
    "load",
    "models",
    "retrieval",
    "floor",
    "matmul",
)


def parser() -> BenchParser:
    """The command's parser: one subparser per subcommand, each with its module's flags and ``--out``."""
    top = BenchParser(
        prog="python -m experiments.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = top.add_subparsers(dest="subcommand", required=True, metavar="subcommand")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"experiments.bench.{name}")
        p = sub.add_parser(
            name,
            help=module.__doc__.split("\n")[0],
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.add_argument("--out", default=RESULTS, help="folder the run's .md and .csv are appended to ('': none)")
    return top


def main(argv: list[str] | None = None) -> list[Table]:
    """Parses ``argv`` (default: the command line), runs the subcommand, prints and stores its tables.

    Returns:
        the run's tables.
    """
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    console.setup_logging(False)
    console.import_tensorflow(False)
    try:
        tables = importlib.import_module(f"experiments.bench.{args.subcommand}").run(args)
    except FloorMissing as e:
        console.fail(str(e))
    command = "python -m experiments.bench " + " ".join(shlex.quote(a) for a in argv)
    stamp = Stamp.now()
    print(render(args.subcommand, command, tables, stamp), end="")
    if args.out:
        md, table_csv = write_results(args.out, args.subcommand, command, tables, stamp)
        print(f"appended to {md} and {table_csv}", file=sys.stderr)
    return tables


if __name__ == "__main__":
    main()
