"""The one table format of the benchmarks and the one place their results go.

Every subcommand returns `Table`s; `render` writes a run as Markdown: a title line naming the subcommand, the machine
(cores, TensorFlow / Keras versions), the commit and the date, the command line, then each table under its heading.
`write_results` appends that text to ``<out>/<subcommand>.md`` and the same figures, one cell a line, to
``<out>/<subcommand>.csv`` (columns `CSV_COLUMNS`), so that runs accumulate and stay machine-readable.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import statistics
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: where each run's table is appended unless ``--out`` says otherwise
RESULTS = os.path.join(ROOT, "experiments", "results", "bench")
#: the header of ``<subcommand>.csv``: one line per table cell
CSV_COLUMNS = ("date", "commit", "machine", "command", "table", "row", "column", "value")


@dataclasses.dataclass
class Table:
    """One table of a run.

    Attributes:
        heading: what the table measures (its settings, what a figure is the median of).
        columns: the column names, in order.
        rows: one dict per row, column name -> value (a missing column is an empty cell).
        notes: lines printed under the table (e.g. a ratio against its target).
        digits: column -> decimals of its floats, where `fmt`'s rule does not fit (e.g. a recall).
    """

    heading: str
    columns: list[str]
    rows: list[dict] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    digits: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Stamp:
    """Where and when a run ran: the title line's facts."""

    machine: str
    commit: str
    date: str

    @classmethod
    def now(cls) -> Stamp:
        """This machine, this tree's commit and today's date (UTC)."""
        return cls(machine(), commit(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))


def machine() -> str:
    """``N cores, TF x.y.z, Keras x.y.z`` (imports TensorFlow)."""
    import keras
    import tensorflow as tf

    return f"{os.cpu_count()} cores, TF {tf.__version__}, Keras {keras.__version__}"


def commit() -> str:
    """The short commit of this tree, with ``+ uncommitted changes`` when tracked files differ from it."""
    run = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, check=False)  # noqa: E731
    head = run("rev-parse", "--short", "HEAD").stdout.strip() or "unknown"
    dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
    return head + (" + uncommitted changes" if dirty else "")


def median(values) -> float:
    """The median of a repeated figure."""
    return float(statistics.median(values))


def spread(values, scale: float = 1.0) -> str:
    """``min..max`` of a repeated figure (each times ``scale``), formatted as the tables format numbers."""
    return f"{fmt(min(values) * scale)}..{fmt(max(values) * scale)}"


def fmt(value, digits: int | None = None) -> str:
    """A cell: floats with ``digits`` decimals, else of 100 or more with thousands separators and no decimals and
    smaller ones with two; None empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        if digits is not None:
            return f"{value:,.{digits}f}"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
    return str(value)


def markdown(table: Table) -> str:
    """A `Table` as a Markdown table (numeric columns right-aligned; ``|`` in cells escaped)."""
    cells = [[fmt(r.get(c), table.digits.get(c)).replace("|", "\\|") for c in table.columns] for r in table.rows]
    numeric = [
        all(isinstance(r.get(c), (int, float)) or r.get(c) is None for r in table.rows) and bool(table.rows)
        for c in table.columns
    ]
    head = "| " + " | ".join(c.replace("|", "\\|") for c in table.columns) + " |"
    rule = "|" + "".join("---:|" if n else "---|" for n in numeric)
    return "\n".join([head, rule, *("| " + " | ".join(row) + " |" for row in cells)])


def render(subcommand: str, command: str, tables: list[Table], stamp: Stamp) -> str:
    """One run as Markdown: the title line, the command, then each table under its heading and with its notes."""
    parts = [f"## bench {subcommand}: {stamp.machine}, commit {stamp.commit}, {stamp.date}", f"`{command}`"]
    for table in tables:
        parts.append(f"### {table.heading}")
        parts.append(markdown(table))
        parts.extend(table.notes)
    return "\n\n".join(parts) + "\n"


def write_results(out: str, subcommand: str, command: str, tables: list[Table], stamp: Stamp) -> tuple[str, str]:
    """Appends a run to ``<out>/<subcommand>.md`` (its `render`) and ``<out>/<subcommand>.csv`` (a header first
    when the file is new).

    Returns:
        (the Markdown path, the CSV path).
    """
    os.makedirs(out, exist_ok=True)
    md, table_csv = os.path.join(out, f"{subcommand}.md"), os.path.join(out, f"{subcommand}.csv")
    with open(md, "a", encoding="utf-8") as f:
        f.write(("\n" if os.path.getsize(md) else "") + render(subcommand, command, tables, stamp))
    new = not os.path.exists(table_csv) or os.path.getsize(table_csv) == 0
    with open(table_csv, "a", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(CSV_COLUMNS)
        for table in tables:
            for i, row in enumerate(table.rows):
                for column in (c for c in table.columns if row.get(c) is not None):
                    value = repr(row[column]) if isinstance(row[column], float) else str(row[column])
                    writer.writerow([stamp.date, stamp.commit, stamp.machine, command, table.heading, i, column, value])
    return md, table_csv
