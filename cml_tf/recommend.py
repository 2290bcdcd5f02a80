"""Recommendations from a trained run: ``python -m cml_tf.recommend --model_dir=runs/ml100k --users=42``.

Usage::

    python -m cml_tf.recommend --model_dir=DIR --users=42,7 [--k=10] [--include_seen] [--format=table|csv|json]
    python -m cml_tf.recommend --model_dir=DIR --users_file=users.txt          # one user id per line
    python -m cml_tf.recommend --model_dir=DIR --similar_to=50                 # the items nearest to item 50
    python -m cml_tf.recommend --model_dir=DIR --all_users --output=top10.csv --format=csv   # every user, streamed
    python -m cml_tf.recommend --model_dir=DIR --users=42 --index=hnsw         # faiss (pip install 'cml_tf[ann]')

Ids are the data set's own ids as they appear in the raw file. Seen items (the user's training and validation
interactions; ``--seen=all`` adds the test fold) are excluded unless ``--include_seen``; a user with fewer than k
unseen items gets them all. Scores are ``-||u - v||^2`` (higher is closer). See `cml_tf.recommender` for how the
seen items and item names are found.

Formats: ``table`` (readable, with item names where the data set has them), ``csv`` (header
``user,rank,item,score[,name]``; ``item,rank,similar_item,score[,name]`` for ``--similar_to``), ``json`` (JSON
Lines: one object per user, ``{"user", "items", "scores"[, "names"]}``; ``{"item", "items", "scores"[, "names"]}``
for ``--similar_to``). ``--output`` writes to a file (atomically: a temporary file renamed at the end); ``--all_users``
streams every user's top k in blocks of users, so memory stays bounded (``--memory_mb``) whatever the catalogue.
Bad input (unknown id, unfinished run, bad k, missing faiss): one line ``error: ...`` on stderr, exit code 1, before
TensorFlow is imported. TensorFlow's start-up lines are hidden unless ``-v 1``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported: no C++ INFO lines

import csv
import json
import math
import sys
import tempfile

from absl import flags

from cml_tf.cli import console
from cml_tf.data.interactions import DataError
from cml_tf.serving import retrieval
from cml_tf.serving.recommender import Ranked, Recommender
from cml_tf.serving.runs import SEEN_CHOICES, RecommendError

flags.DEFINE_string("model_dir", None, "Run directory of a finished `python -m cml_tf.train` run.")
flags.DEFINE_list("users", None, "Comma-separated user ids (the data set's own ids).")
flags.DEFINE_string("users_file", None, "File with one user id per line.")
flags.DEFINE_bool("all_users", False, "Every user's top k (streamed; use with --output).")
flags.DEFINE_string("similar_to", None, "An item id: list the items nearest to it instead of recommending.")
flags.DEFINE_integer("k", 10, "Items per user (or per item for --similar_to).")
flags.DEFINE_bool("include_seen", False, "Keep the users' seen items in their recommendations.")
flags.DEFINE_enum("seen", "train", list(SEEN_CHOICES), "Seen items: train (training + validation) or all interactions.")
flags.DEFINE_enum("format", "table", ["table", "csv", "json"], "Output format.")
flags.DEFINE_string("output", None, "Write to this file instead of stdout.")
flags.DEFINE_enum("index", "exact", list(retrieval.INDEX_TYPES), "exact brute force, or faiss hnsw / ivf.")
flags.DEFINE_integer("hnsw_m", None, f"HNSW graph degree M (default {retrieval.HNSW_DEFAULTS['hnsw_m']}).")
flags.DEFINE_integer(
    "ef_construction", None, f"HNSW efConstruction (default {retrieval.HNSW_DEFAULTS['ef_construction']})."
)
flags.DEFINE_integer("ef_search", None, f"HNSW efSearch (default {retrieval.HNSW_DEFAULTS['ef_search']}).")
flags.DEFINE_integer("nlist", None, "IVF inverted lists (default 4 sqrt(items)).")
flags.DEFINE_integer("nprobe", None, "IVF lists visited per query (default nlist / 32).")
flags.DEFINE_string("data_path", None, "Where the run's data set is, if not where its config.json says.")
flags.DEFINE_string("item_names", None, "File of 'item_id<TAB>name' lines (default: the data set's own titles).")
flags.DEFINE_integer("memory_mb", 256, "Bound on the score block of exact retrieval, in MB.")

FLAGS = flags.FLAGS
NAME_WIDTH = 60


_fail = console.fail


def _score(x: float) -> float | None:
    """A JSON-safe score (None for the -inf of padding)."""
    return None if not math.isfinite(x) else float(f"{x:.6g}")


def _short(name: str | None) -> str:
    name = name or ""
    return name if len(name) <= NAME_WIDTH else name[: NAME_WIDTH - 1] + "…"


class Writer:
    """Formats `Ranked` lists as table, CSV or JSON lines onto a text stream."""

    def __init__(self, stream, fmt: str, query_kind: str, names: bool):
        self.stream = stream
        self.fmt = fmt
        self.query_kind = query_kind  # "user" or "item"
        self.names = names
        self.csv = csv.writer(stream, lineterminator="\n") if fmt == "csv" else None
        self.first = True

    def header(self) -> None:
        if self.csv is not None:
            item = "item" if self.query_kind == "user" else "similar_item"
            self.csv.writerow([self.query_kind, "rank", item, "score"] + (["name"] if self.names else []))

    def write(self, ranked: Ranked, title: str) -> None:
        if self.fmt == "json":
            obj = {self.query_kind: ranked.query, "items": list(ranked.items)}
            obj["scores"] = [_score(s) for s in ranked.scores.tolist()]
            if self.names:
                obj["names"] = list(ranked.names)
            self.stream.write(json.dumps(obj, ensure_ascii=False) + "\n")
        elif self.fmt == "csv":
            for row in ranked.rows():
                out = [ranked.query, row["rank"], row["item"], f"{row['score']:.6g}"]
                self.csv.writerow(out + ([row.get("name") or ""] if self.names else []))
        else:
            if not self.first:
                self.stream.write("\n")
            self.stream.write(title + "\n")
            width = max([4] + [len(i) for i in ranked.items])
            head = f"{'rank':>4}  {'item':<{width}}  {'score':>8}"
            self.stream.write(head + ("  name" if self.names else "") + "\n")
            for row in ranked.rows():
                line = f"{row['rank']:>4}  {row['item']:<{width}}  {row['score']:>8.4f}"
                self.stream.write(line + (f"  {_short(row.get('name'))}" if self.names else "") + "\n")
        self.first = False


def read_users_file(path: str) -> list[str]:
    """One user id per line (blank lines skipped); RecommendError naming the flag."""
    try:
        with open(path, encoding="utf-8") as f:
            users = [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise RecommendError(f"--users_file={path}: cannot read ({e})") from e
    if not users:
        raise RecommendError(f"--users_file={path}: no user ids in the file (expected one per line)")
    return users


def _check_flags() -> str:
    """Which query the flags ask for; RecommendError naming the flag otherwise."""
    if not FLAGS.model_dir:
        raise RecommendError("--model_dir is required (a run directory of python -m cml_tf.train)")
    given = [
        name
        for name, on in (
            ("--users", FLAGS.users is not None),
            ("--users_file", FLAGS.users_file is not None),
            ("--all_users", FLAGS.all_users),
            ("--similar_to", FLAGS.similar_to is not None),
        )
        if on
    ]
    if len(given) != 1:
        which = " and ".join(given) if given else "none"
        raise RecommendError(f"give exactly one of --users, --users_file, --all_users, --similar_to (got {which})")
    if FLAGS.k < 1:
        raise RecommendError(f"--k must be a positive integer, got {FLAGS.k}")
    if FLAGS.memory_mb < 1:
        raise RecommendError(f"--memory_mb must be positive, got {FLAGS.memory_mb}")
    if FLAGS.users is not None and not [u for u in FLAGS.users if u.strip()]:
        raise RecommendError("--users is empty; expected comma-separated user ids")
    if FLAGS.similar_to is not None and FLAGS.include_seen:
        raise RecommendError("--include_seen applies to users, not to --similar_to")
    if FLAGS.output:
        directory = os.path.dirname(os.path.abspath(FLAGS.output))
        if not os.path.isdir(directory):
            raise RecommendError(f"--output={FLAGS.output}: directory {directory} does not exist")
    return given[0]


def _index_params() -> dict:
    names = ("hnsw_m", "ef_construction", "ef_search", "nlist", "nprobe")
    params = {n: FLAGS[n].value for n in names if FLAGS[n].value is not None}
    for name, value in params.items():
        if value < 1:
            raise RecommendError(f"--{name} must be positive, got {value}")
    return params


def _title(rec: Recommender, ranked: Ranked, kind: str, include_seen: bool) -> str:
    if kind == "item":
        row = rec.items.row(ranked.query)
        name = rec.names[row] if rec.names is not None and rec.names[row] else None
        return f"items nearest to item {ranked.query}" + (f" ({name})" if name else "")
    title = f"user {ranked.query}"
    if include_seen:
        title += " (seen items included)"
    elif rec.seen is not None:
        row = rec.users.row(ranked.query)
        n_seen = int(rec.seen.indptr[row + 1] - rec.seen.indptr[row])
        title += f" ({n_seen:,} seen items excluded)"
    return title


def query_ids(rec: Recommender, query: str) -> list[str] | None:
    """The asked user ids (or the item id of --similar_to), checked against the run, and k checked against the
    catalogue, before any scoring: RecommendError naming the flag. None for --all_users."""
    if query == "--all_users":
        ids = None
    elif query == "--similar_to":
        ids = [FLAGS.similar_to.strip()]
        rec.items.rows(ids, source="--similar_to")
    else:
        ids = [u.strip() for u in FLAGS.users if u.strip()] if query == "--users" else read_users_file(FLAGS.users_file)
        rec.users.rows(ids, source=query)
    limit = rec.n_items - 1 if query == "--similar_to" else rec.n_items
    if FLAGS.k > limit:
        what = "catalogue less the item itself" if query == "--similar_to" else "catalogue"
        raise RecommendError(f"--k={FLAGS.k} exceeds the {what} ({limit:,} items)")
    return ids


def run_query(rec: Recommender, query: str, ids: list[str] | None, stream) -> int:
    """Writes the asked recommendations to ``stream``; returns the number of queries written."""
    kind = "item" if query == "--similar_to" else "user"
    writer = Writer(stream, FLAGS.format, kind, rec.names is not None)
    if query == "--all_users":
        writer.header()
        n = 0
        item_strings = rec.items.strings
        for users, rows, scores in rec.recommend_all_rows(FLAGS.k, include_seen=FLAGS.include_seen):
            for user, row_items, row_scores in zip(users, rows, scores):
                keep = row_items >= 0
                row_items = row_items[keep]
                names = tuple(rec.names[i] for i in row_items) if rec.names is not None else None
                ranked = Ranked(str(user), tuple(item_strings[row_items].tolist()), row_scores[keep], names)
                writer.write(ranked, _title(rec, ranked, kind, FLAGS.include_seen))
                n += 1
        return n
    if query == "--similar_to":
        results = [rec.similar_items(ids[0], FLAGS.k)]
    else:
        results = rec.recommend(ids, FLAGS.k, include_seen=FLAGS.include_seen)
    writer.header()
    for ranked in results:
        writer.write(ranked, _title(rec, ranked, kind, FLAGS.include_seen))
    return len(results)


def main() -> None:
    verbose = FLAGS.verbosity >= 1
    console.setup_logging(verbose)
    try:
        query = _check_flags()
        rec = Recommender.from_run(
            FLAGS.model_dir,
            index=FLAGS.index,
            index_params=_index_params(),
            seen=FLAGS.seen,
            data_path=FLAGS.data_path,
            item_names=FLAGS.item_names,
            memory_bytes=FLAGS.memory_mb << 20,
        )
        ids = query_ids(rec, query)
        console.import_tensorflow(verbose)  # quiet start-up lines; only once the input is known to be good
        if FLAGS.output:
            directory = os.path.dirname(os.path.abspath(FLAGS.output))
            fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(FLAGS.output) + ".")
            try:
                with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
                    n = run_query(rec, query, ids, f)
                os.replace(tmp, FLAGS.output)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            what = "item" if query == "--similar_to" else "user"
            print(f"wrote the top {FLAGS.k} of {n:,} {what}(s) to {FLAGS.output}", file=sys.stderr)
        else:
            run_query(rec, query, ids, sys.stdout)
    except (RecommendError, retrieval.RetrievalError, DataError) as e:
        _fail(str(e))


def run() -> None:
    console.run_command(main, FLAGS)


if __name__ == "__main__":
    run()
