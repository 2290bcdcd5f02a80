"""Accuracy against training time on citeulike-t: every CML run of Table 2 and of the best-CML searches beside the
tuned ALS, EASE^R and BPR baselines, on the same 4 folds.

    python -m experiments.accuracy_time          # reads the results below, writes the plot and its table

Reads ``experiments/results/citeulike/results.csv`` (``python -m experiments.table2 --quick``: every cell and the
baselines) and the ``results.csv`` of each best-CML directory (``experiments/results/best_cml*/``, the final runs of
``python -m experiments.best_cml``). One point per method: test NDCG@50 (mean ± std over its folds) against its
training seconds per fold (mean; the baselines' final fit with the chosen hyper-parameters, without their search).
Writes ``experiments/results/accuracy_time/accuracy_time.png`` and ``accuracy_time.md`` (the same numbers).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __package__ in (None, ""):
    sys.path.insert(0, ROOT)

K = 50
TABLE2 = os.path.join(ROOT, "experiments", "results", "citeulike", "results.csv")
BEST = os.path.join(ROOT, "experiments", "results", "best_cml*", "results.csv")
OUT = os.path.join(ROOT, "experiments", "results", "accuracy_time")
BASELINE_LABELS = {"als": "ALS (tuned)", "ease": "EASE^R (tuned)", "bpr": "BPR (tuned)", "popularity": "Popularity"}


def points(table2_path: str, best_paths: list[str]):
    """[(label, kind, folds, mean train s, mean NDCG, std NDCG)]: kind is 'baseline', 'table2' or 'best'."""
    import pandas as pd

    out = []
    if os.path.exists(table2_path):
        t2 = pd.read_csv(table2_path)
        for method, group in t2.groupby("method", sort=False):
            if method == "cml":
                for (sampler, batch, n), cell in group.groupby(["sampler", "batch_size", "num_negatives"]):
                    out.append((f"{sampler}@{int(batch)} N={int(n)}", "table2", cell))
            else:
                out.append((BASELINE_LABELS.get(method, method), "baseline", group))
    for path in best_paths:
        best = pd.read_csv(path)
        for name, group in best.groupby("candidate", sort=False):
            out.append((f"{name} ({os.path.basename(os.path.dirname(path))})", "best", group))
    rows = []
    for label, kind, group in out:
        ndcg = pd.to_numeric(group[f"ndcg@{K}"], errors="coerce").dropna() * 100
        seconds = pd.to_numeric(group["train_seconds"], errors="coerce").dropna()
        if len(ndcg) and len(seconds):
            std = float(ndcg.std(ddof=1)) if len(ndcg) > 1 else float("nan")
            rows.append((label, kind, len(ndcg), float(seconds.mean()), float(ndcg.mean()), std))
    return rows


def markdown(rows) -> str:
    lines = ["| method | kind | folds | train s per fold | test NDCG@50 (%) |", "|:---|:---|---:|---:|---:|"]
    for label, kind, folds, seconds, mean, std in sorted(rows, key=lambda r: -r[4]):
        spread = "" if std != std else f" ± {std:.2f}"
        lines.append(f"| {label} | {kind} | {folds} | {seconds:,.0f} | {mean:.2f}{spread} |")
    return "\n".join(lines) + "\n"


def plot(rows, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = {"baseline": ("s", "tab:red"), "table2": ("o", "tab:gray"), "best": ("*", "tab:blue")}
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for label, kind, _, seconds, mean, std in rows:
        marker, color = style[kind]
        ax.errorbar(
            max(seconds, 0.1),
            mean,
            yerr=0 if std != std else std,
            fmt=marker,
            color=color,
            ms=9 if kind != "table2" else 5,
        )
        if kind != "table2" or mean >= 11:
            ax.annotate(label, (max(seconds, 0.1), mean), textcoords="offset points", xytext=(5, 3), fontsize=7)
    ax.axvline(600, color="k", ls=":", lw=1)
    ax.text(600, ax.get_ylim()[0], " 10 min", fontsize=8, va="bottom")
    ax.set_xscale("log")
    ax.set_xlabel("training seconds per fold (2-core CPU)")
    ax.set_ylabel(f"test NDCG@{K} (%), mean over folds")
    ax.set_title("citeulike-t, 4 folds: accuracy against training time")
    for kind, (marker, color) in style.items():
        ax.plot([], [], marker, color=color, label={"baseline": "baselines", "table2": "Table 2 cells (1.2M pairs)",
                                                    "best": "best-CML searches"}[kind])  # fmt: skip
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.accuracy_time", description=__doc__.split("\n")[0])
    p.add_argument("--table2_results", default=TABLE2)
    p.add_argument("--best_results", default=BEST, help="glob of best_cml results.csv files")
    p.add_argument("--out_dir", default=OUT)
    args = p.parse_args(argv)
    from cml_tf.io import write_text_atomic

    rows = points(args.table2_results, sorted(glob.glob(args.best_results)))
    if not rows:
        print(f"error: no results in {args.table2_results} or {args.best_results}", file=sys.stderr)
        return 1
    os.makedirs(args.out_dir, exist_ok=True)
    plot(rows, os.path.join(args.out_dir, "accuracy_time.png"))
    md = markdown(rows)
    write_text_atomic(os.path.join(args.out_dir, "accuracy_time.md"), md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
