"""Prints one row of the paper's Table 1 (users, items, interactions, density) for a data set.

Usage::

    python -m cml_tf.stats --dataset=citeulike --data_path=../shared/data/citeulike-t [--format=json]
    python -m cml_tf.stats --dataset=echonest --data_path=DIR --min_playcount=1 --iterative_core

``items`` is the matrix width: the declared catalog where the format declares one (citeulike-t: 25,975), else
the items left after the filters. With ``--format=json`` stdout holds exactly one JSON object with the keys
``users``, ``items``, ``interactions``, ``density``. Bad input: a one-line ``error: ...`` on stderr, exit code 1.
"""

from __future__ import annotations

import json
import sys

from absl import flags

from cml_tf.cli import console, data_flags
from cml_tf.data.interactions import DataError

flags.DEFINE_enum("format", "table", ["table", "json"], "Output format.")

FLAGS = flags.FLAGS


_fail = console.fail


def format_table(name: str, stats: dict) -> str:
    """A two-line readable table."""
    head = f"{'dataset':<16}{'users':>12}{'items':>12}{'interactions':>16}{'density':>12}"
    row = (
        f"{name:<16}{stats['users']:>12,}{stats['items']:>12,}{stats['interactions']:>16,}"
        f"{stats['density'] * 100:>11.4f}%"
    )
    return head + "\n" + row


def main() -> None:
    console.setup_logging(FLAGS.verbosity >= 1)  # notices (e.g. a 0/1 label column) as plain lines on stderr
    try:
        inter = data_flags.load_interactions_from_flags(FLAGS)
    except DataError as e:
        _fail(str(e))
    stats = {k: (float(v) if k == "density" else int(v)) for k, v in inter.stats().items()}
    if FLAGS.format == "json":
        sys.stdout.write(json.dumps(stats) + "\n")
    else:
        print(format_table(FLAGS.dataset, stats))


def run() -> None:
    console.run_command(main, FLAGS)


if __name__ == "__main__":
    run()
