"""Load benchmark: Echo Nest ``train_triplets.txt`` at full scale (48M rows, ~3 GB), generated.

Generates (once; reused while it exists) a realistic Echonest-format file: 1M users (40-hex-char ids, rows
grouped by user, log-normal activity), 385k songs (``SO`` + 16 characters, Zipf popularity), play counts with
many 1s (geometric, plus a heavy tail). Then loads it with ``cml_tf.data.loaders.load('echonest', ...)`` (parse +
paper filters + CSR, no cache) in a child process and reports wall time and the child's peak RSS (``ru_maxrss``).

    python -m experiments.bench load                    # 48M rows
    python -m experiments.bench load --rows=2000000     # quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from experiments.bench.report import ROOT, Table

COLUMNS = ["rows", "file_gb", "generate_s", "load_s", "peak_rss_gb", "users", "items", "interactions"]
FULL_ROWS = 48_373_586
FULL_USERS = 1_019_318
FULL_SONGS = 384_546

_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from cml_tf.data import loaders
t1 = time.perf_counter()
x = loaders.load("echonest", sys.argv[1], use_cache=False)
t2 = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "peak_rss_kb": peak, **x.stats()}))
"""


def _id_table(rng: np.random.Generator, n: int, alphabet: bytes, width: int, prefix: bytes = b"") -> np.ndarray:
    """[n, len(prefix) + width] uint8 distinct random ids."""
    chars = np.frombuffer(alphabet, np.uint8)
    table = chars[rng.integers(0, chars.size, (n, width))]
    table[:, -6:] = chars[(np.arange(n)[:, None] // chars.size ** np.arange(5, -1, -1)) % chars.size]  # distinct
    return np.concatenate([np.tile(np.frombuffer(prefix, np.uint8), (n, 1)), table], axis=1) if prefix else table


def generate_echonest(path: str, rows: int, seed: int = 0, chunk: int = 2_000_000) -> dict:
    """Writes ``rows`` lines ``user\\tsong\\tplaycount\\n`` to ``path`` (atomically), vectorised in chunks."""
    rng = np.random.default_rng(seed)
    n_users = max(10, round(rows * FULL_USERS / FULL_ROWS))
    n_songs = max(10, round(rows * FULL_SONGS / FULL_ROWS))
    users = _id_table(rng, n_users, b"0123456789abcdef", 40)
    songs = _id_table(rng, n_songs, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 16, prefix=b"SO")
    activity = rng.lognormal(0.0, 1.0, n_users)
    per_user = np.maximum(1, np.floor(activity / activity.sum() * rows)).astype(np.int64)
    diff = rows - int(per_user.sum())
    if diff > 0:
        np.add.at(per_user, rng.integers(0, n_users, diff), 1)
    elif diff < 0:
        big = np.flatnonzero(per_user > 1)
        take = rng.choice(big, -diff, replace=big.size < -diff)
        np.subtract.at(per_user, take, 1)
        per_user = np.maximum(per_user, 1)
    row_user = np.repeat(np.arange(n_users, dtype=np.int32), per_user)[:rows]
    popularity = np.cumsum(1.0 / rng.permutation(np.arange(1, n_songs + 1)) ** 0.8)
    width = 40 + 1 + 18 + 1 + 4 + 1
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        for start in range(0, row_user.size, chunk):
            u = row_user[start : start + chunk]
            c = u.size
            s = np.minimum(np.searchsorted(popularity, rng.random(c) * popularity[-1]), n_songs - 1)
            count = rng.geometric(0.35, c)
            heavy = rng.random(c) < 0.005
            count[heavy] *= rng.integers(2, 200, int(heavy.sum()))
            count = np.minimum(count, 9999)
            buf = np.zeros((c, width), np.uint8)
            buf[:, :40] = users[u]
            buf[:, 40] = 9
            buf[:, 41:59] = songs[s]
            buf[:, 59] = 9
            for k, power in enumerate((1000, 100, 10, 1)):
                digit = (count // power) % 10
                buf[:, 60 + k] = np.where(count >= power, 48 + digit, 0)
            buf[:, 64] = 10
            f.write(buf[buf != 0].tobytes())
    os.replace(tmp, path)
    return {"users": n_users, "songs": n_songs}


def run_load_benchmark(rows: int = FULL_ROWS, workdir: str | None = None, keep: bool = True) -> dict:
    """Generates (or reuses) an Echonest file of ``rows`` rows in ``workdir`` and measures a cold load.

    Returns:
        dict with rows, file_gb, generate_s (0 when reused), load_s (parse + filters + CSR), import_s,
        peak_rss_gb (child process ru_maxrss), and the loaded users / items / interactions / density.
    """
    workdir = workdir or os.path.join(tempfile.gettempdir(), "cml_tf_bench")
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, f"train_triplets_{rows}.txt")
    gen_s = 0.0
    if not os.path.isfile(path):
        t = time.perf_counter()
        generate_echonest(path, rows)
        gen_s = time.perf_counter() - t
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", _CHILD, path], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"load child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    result = {
        "rows": rows,
        "file_gb": os.path.getsize(path) / 1e9,
        "generate_s": gen_s,
        "load_s": child["load_s"],
        "import_s": child["import_s"],
        "peak_rss_gb": child["peak_rss_kb"] * 1024 / 1e9,
        **{k: child[k] for k in ("users", "items", "interactions", "density")},
    }
    if not keep:
        os.unlink(path)
    return result


def add_arguments(p) -> None:
    """The load benchmark's flags."""
    p.add_argument("--rows", type=int, default=FULL_ROWS, help="rows of the generated Echonest file")
    p.add_argument("--workdir", default=None, help="where the generated file lives (default: $TMPDIR/cml_tf_bench)")
    p.add_argument("--keep", action=argparse.BooleanOptionalAction, default=True, help="keep the file for the next run")


def run(args) -> list[Table]:
    """One table of one row."""
    row = run_load_benchmark(args.rows, args.workdir, keep=args.keep)
    return [Table(f"Raw Echonest-format load, {args.rows:,} rows (target < 120 s, < 8 GB at 48M rows)", COLUMNS, [row])]
