"""Rendering of the Table 2 results (``results.csv`` rows) as Markdown and LaTeX, laid out like the paper's Table 2.

Rows are the methods: CML with each sampler and batch size (uniform b=4096, 1024, 256; popular and 2-stage
b=256, in that order), then the baselines. Columns are MAP@k (%), NDCG@k (%) and MMR for each |N_ij|. Every cell
is "mean ± std" over the folds (sample standard deviation; the std is left out with a single fold, and a cell with
fewer folds than the most complete one is marked "(n=<folds>)"). The best value of each column is in bold: the
highest MAP / NDCG and the LOWEST MMR (the mean over users of the median training popularity of the top-k: lower
means less popularity bias). Values are compared as displayed, so ties are all bold. Baselines do not depend on
|N_ij|: their values repeat in every |N_ij| group and compete for bold in each.
"""

from __future__ import annotations

import math

import pandas as pd

SAMPLER_ORDER = ("uniform", "popular", "2stage", "2stage-min", "2stage-paper", "dns", "softmax", "in_batch")
SAMPLER_LABELS = {
    "uniform": "Uniform",
    "popular": "Popular",
    "2stage": "2-stage",
    "2stage-min": "2-stage, min hinge",
    "2stage-paper": "2-stage, paper (uncapped)",
    "dns": "DNS (hardest of 8 uniform)",
    "softmax": "softmax over 2-stage candidates, τ=0.5",
    "in_batch": "softmax over in-batch items, τ=0.5",
}
BASELINE_ORDER = ("popularity", "als", "bpr", "ease")
BASELINE_LABELS = {"popularity": "Popularity", "als": "ALS (implicit)", "bpr": "BPR (implicit)", "ease": "EASE^R"}


def metric_columns(k: int = 50) -> list[tuple[str, str, str, bool, int]]:
    """(results.csv column, Markdown header, LaTeX header, higher is better, decimals), in table order."""
    return [
        (f"map@{k}", f"MAP@{k} (%)", f"MAP@{k} (\\%)", True, 2),
        (f"ndcg@{k}", f"NDCG@{k} (%)", f"NDCG@{k} (\\%)", True, 2),
        ("mmr", "MMR", "MMR", False, 1),
    ]


PERCENT = ("map@", "ndcg@", "recall@", "precision@")


def _row_key(row) -> tuple:
    """Sort key and label of a results row's table row: CML cells by sampler then decreasing batch, then baselines."""
    if row["method"] == "cml":
        s = str(row["sampler"])
        order = SAMPLER_ORDER.index(s) if s in SAMPLER_ORDER else len(SAMPLER_ORDER)
        return (0, order, -int(row["batch_size"]), s)
    m = str(row["method"])
    order = BASELINE_ORDER.index(m) if m in BASELINE_ORDER else len(BASELINE_ORDER)
    return (1, order, 0, m)


def row_label(key: tuple, latex: bool = False) -> str:
    group, _, neg_batch, name = key
    if group == 0:
        label = f"CML {SAMPLER_LABELS.get(name, name)} (b={-neg_batch})"
    else:
        label = BASELINE_LABELS.get(name, name)
    return label.replace("_", "\\_").replace("τ", "$\\tau$") if latex else label


def summarise(results: pd.DataFrame, k: int = 50) -> tuple[list[tuple], list[int], dict]:
    """Aggregates results rows over folds.

    Args:
        results: rows of results.csv (columns method, sampler, batch_size, num_negatives, fold, metrics...).
        k: the metrics' cut-off.

    Returns:
        (row keys in table order, |N_ij| values in column order, {(row key, N, metric): (mean, std, folds)}).
    """
    metrics = [m for m, *_ in metric_columns(k)]
    df = results.copy()
    df["_key"] = [_row_key(r) for _, r in df.iterrows()]
    cml = df[df["method"] == "cml"]
    negatives = sorted({int(n) for n in cml["num_negatives"].dropna()}) or [1]
    keys = sorted(set(df["_key"]))
    cells: dict = {}
    for key, group in df.groupby("_key", sort=False):
        for n in negatives:
            g = group if key[0] == 1 else group[group["num_negatives"].astype(float) == n]
            if g.empty:
                continue
            for m in metrics:
                values = pd.to_numeric(g[m], errors="coerce").dropna()
                scale = 100.0 if m.startswith(PERCENT) else 1.0
                mean = float(values.mean()) * scale if len(values) else math.nan
                std = float(values.std(ddof=1)) * scale if len(values) > 1 else math.nan
                cells[(key, n, m)] = (mean, std, int(len(values)))
    return keys, negatives, cells


def _format_cells(results: pd.DataFrame, k: int, latex: bool):
    keys, negatives, cells = summarise(results, k)
    columns = metric_columns(k)
    max_folds = max((c[2] for c in cells.values()), default=0)
    pm = " $\\pm$ " if latex else " ± "
    text: dict = {}
    for n in negatives:
        for m, _, _, higher, decimals in columns:
            shown = {}
            for key in keys:
                if (key, n, m) not in cells:
                    continue
                mean, std, folds = cells[(key, n, m)]
                if math.isnan(mean):
                    continue
                shown[key] = (round(mean, decimals), std, folds)
            if not shown:
                continue
            best = (max if higher else min)(v[0] for v in shown.values())
            for key, (mean, std, folds) in shown.items():
                s = f"{mean:.{decimals}f}"
                if not math.isnan(std):
                    s += f"{pm}{std:.{decimals}f}"
                if mean == best and len(shown) > 1:
                    s = f"\\textbf{{{s}}}" if latex else f"**{s}**"
                if folds < max_folds:
                    s += f" (n={folds})"
                text[(key, n, m)] = s
    return keys, negatives, columns, text, max_folds


def render_markdown(results: pd.DataFrame, k: int = 50, title: str | None = None) -> str:
    """The Table 2 layout as a GitHub Markdown table (one header row: "|N|=n <metric>")."""
    keys, negatives, columns, text, max_folds = _format_cells(results, k, latex=False)
    header = ["Method"] + [f"N={n} {h}" for n in negatives for _, h, *_ in columns]
    lines = []
    if title:
        lines += [f"### {title}", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|")
    for key in keys:
        cells = [text.get((key, n, m), "–") for n in negatives for m, *_ in columns]
        lines.append("| " + " | ".join([row_label(key)] + cells) + " |")
    lines += [
        "",
        f"N = |N_ij|, negatives per positive pair. Mean ± sample std over {max_folds} fold(s); MAP and NDCG in %. "
        "Bold: best per column (highest MAP / NDCG, lowest MMR = least popularity-biased). Baselines do not "
        "depend on N and repeat in each group.",
    ]
    return "\n".join(lines) + "\n"


def render_latex(results: pd.DataFrame, k: int = 50, caption: str | None = None) -> str:
    """The Table 2 layout as a booktabs LaTeX table (needs ``\\usepackage{booktabs}``)."""
    keys, negatives, columns, text, max_folds = _format_cells(results, k, latex=True)
    nc = len(columns)
    lines = [
        "\\begin{table}[t]",
        "\\centering",
        "\\small",
        "\\setlength{\\tabcolsep}{3pt}",
        "\\begin{tabular}{l" + ("|" + "r" * nc) * len(negatives) + "}",
        "\\toprule",
        " & " + " & ".join(f"\\multicolumn{{{nc}}}{{c}}{{$|N_{{ij}}| = {n}$}}" for n in negatives) + " \\\\",
        " ".join(f"\\cmidrule(lr){{{2 + i * nc}-{1 + (i + 1) * nc}}}" for i in range(len(negatives))),
        "Method & " + " & ".join(h for _ in negatives for _, _, h, *_ in columns) + " \\\\",
        "\\midrule",
    ]
    previous_group = None
    for key in keys:
        if previous_group is not None and key[0] != previous_group:
            lines.append("\\midrule")
        previous_group = key[0]
        cells = [text.get((key, n, m), "--") for n in negatives for m, *_ in columns]
        lines.append(" & ".join([row_label(key, latex=True)] + cells) + " \\\\")
    caption = caption or (
        f"MAP@{k} and NDCG@{k} (\\%) and MMR, mean $\\pm$ std over {max_folds} fold(s). Bold: best per column "
        "(lowest MMR)."
    )
    lines += ["\\bottomrule", "\\end{tabular}", f"\\caption{{{caption}}}", "\\label{tab:table2}", "\\end{table}"]
    return "\n".join(lines) + "\n"
