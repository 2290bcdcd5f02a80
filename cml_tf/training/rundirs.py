"""Finding and reading run directories, for the notebooks (no TensorFlow, no training code).

Two layouts hold the same files (``config.json``, ``metrics.csv``, ``results.json``, ``embeddings/``,
``recommendations.npz``):

* ``python -m cml_tf.train``: ``<runs>/<name>/``, e.g. ``runs/synthetic-2stage-b256-n1-kfold0/``;
* ``python -m experiments.table2``: ``<runs>/<cell>/fold<k>/`` (cell ``uniform-b256-n1``), baselines in
  ``<runs>/baselines/<method>/fold<k>/``, plus the results folder (``results.csv``, ``table2.md``).

The notebooks name their inputs with environment variables: ``CML_TF_RUNS`` (a directory of runs of either layout,
or one run), ``CML_TF_RESULTS`` (the Table 2 runner's results folder). A relative path is resolved against the
repository, then the directory Jupyter was started from (``$PWD``), then the notebook's own directory. With neither
variable set the notebooks read the committed fixture (``notebooks/fixtures``). When there is nothing to read, they
stop with one line that says what is missing and which command writes it (`NothingToShow`), not a traceback.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re

import numpy as np

#: the repository (this file is cml_tf/training/rundirs.py)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "notebooks", "fixtures")
SAMPLER_LABELS = {"uniform": "Uniform", "popular": "Popular", "2stage": "2-stage", "2stage-paper": "2-stage (paper)"}
_SAMPLER_ORDER = {"uniform": 0, "popular": 1, "2stage": 2, "2stage-paper": 3}
_CELL = re.compile(r"^(?P<sampler>.+)-b(?P<batch>\d+)-n(?P<negatives>\d+)$")  # the Table 2 runner's cell names
#: config fields that tell repeats of one configuration apart (its folds and seeds); results are averaged over them
REPEAT_FIELDS = ("fold", "seed", "split_seed")
_MAX_LABEL_FIELDS = 3  # configuration_labels names at most this many differing fields
_LABEL_FIRST = ("model", "loss")  # ... these first


class NothingToShow(Exception):
    """There is nothing to show; the message says what is missing and which command writes it.

    IPython prints only ``nothing to show: <message>`` for it (``_render_traceback_``), and running stops there.
    """

    def _render_traceback_(self):
        return [f"nothing to show: {self}"]


def resolve_dir(path: str, variable: str = "") -> str:
    """The existing directory ``path`` names: absolute as given; relative against the repository, then ``$PWD``
    (where Jupyter was started), then the current directory. Raises NothingToShow listing what was tried."""
    path = os.path.expanduser(path)
    if os.path.isabs(path):
        candidates = [path]
    else:
        bases = [ROOT, os.environ.get("PWD", ""), os.getcwd()]
        candidates = list(dict.fromkeys(os.path.normpath(os.path.join(b, path)) for b in bases if b))
    for candidate in candidates:
        if os.path.isdir(candidate):
            return candidate
    named = f"{variable}={path}" if variable else path
    raise NothingToShow(f"{named}: no such directory (tried {', '.join(candidates)})")


def notebook_dirs(environ=None) -> tuple[str, str | None]:
    """(runs directory, results directory or None) from ``CML_TF_RUNS`` / ``CML_TF_RESULTS``.

    Neither set: the committed fixture. Only ``CML_TF_RUNS`` set: no results folder (tables are built from the
    runs' results.json). Only ``CML_TF_RESULTS`` set: those results, and the fixture's runs.
    """
    environ = os.environ if environ is None else environ
    runs, results = environ.get("CML_TF_RUNS"), environ.get("CML_TF_RESULTS")
    runs_dir = resolve_dir(runs, "CML_TF_RUNS") if runs else os.path.join(FIXTURES, "runs")
    if results:
        results_dir = resolve_dir(results, "CML_TF_RESULTS")
    else:
        results_dir = None if runs else os.path.join(FIXTURES, "results")
    return runs_dir, results_dir


@dataclasses.dataclass(frozen=True)
class Run:
    """One CML run directory.

    Attributes:
        path: the directory.
        key: a name unique among the runs found: the Table 2 cell (``2stage-b64-n1``), or the directory's name.
        label: for legends: ``2-stage b=64 |N|=1``, plus the directory's name for ``cml_tf.train`` runs.
        fold: the k-fold test fold, or None (``--split=original``).
        config: config.json as a dict.
    """

    path: str
    key: str
    label: str
    fold: int | None
    config: dict

    @property
    def sampler(self) -> str:
        return self.config.get("sampler", "")

    def file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)


def cell_label(config: dict, cell: str | None = None) -> str:
    """``2-stage b=256 |N|=1`` from a run's config, or from a Table 2 cell name (``2stage-paper-b256-n1``: the runner
    names variants of a sampler, which share its config's ``sampler``)."""
    match = _CELL.match(cell) if cell else None
    sampler = match["sampler"] if match else config.get("sampler", "?")
    label = f"{SAMPLER_LABELS.get(sampler, sampler)} b={config.get('batch_size')}"
    negatives = config.get("num_negatives")  # None where the run reads none (the softmax over a shared pool)
    return label if negatives is None else f"{label} |N|={negatives}"


def _read_config(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def find_runs(runs_dir: str, fold: int | None = None) -> list[Run]:
    """The CML runs in ``runs_dir`` (either layout, or ``runs_dir`` itself a run), baselines and the temperature
    probes inside runs left out.

    Args:
        runs_dir: a directory of runs.
        fold: keep k-fold runs of this fold (runs of the original split are always kept); None keeps all.

    Returns:
        Runs ordered by sampler (uniform, popular, 2-stage), batch size (largest first), |N_ij|, fold, name.

    Raises:
        NothingToShow: no run there (the message names the directory and the commands that write runs).
    """
    found = []
    for depth in ("", "*", os.path.join("*", "*")):
        for path in sorted(glob.glob(os.path.join(runs_dir, depth, "config.json"))):
            run_dir = os.path.dirname(path)
            rel = os.path.relpath(run_dir, runs_dir).split(os.sep)
            if "baselines" in rel or "temperature_probe" in rel:  # a run's probes are part of that run
                continue
            config = _read_config(path)
            name = os.path.basename(run_dir)
            parent = os.path.basename(os.path.dirname(run_dir))
            if name.startswith("fold") and name[4:].isdigit() and len(rel) == 2:  # the Table 2 layout
                run = Run(run_dir, parent, cell_label(config, parent), int(name[4:]), config)
            else:
                kfold = config.get("split", "kfold") == "kfold"
                label = f"{cell_label(config)} ({name})"
                run = Run(run_dir, name, label, int(config.get("fold", 0)) if kfold else None, config)
            found.append(run)
    if not found:
        raise NothingToShow(
            f"no runs in {runs_dir} (no config.json in it, in <name>/ or in <cell>/fold<k>/): train one with "
            "python -m cml_tf.train (runs/<name>/) or python -m experiments.table2, and point CML_TF_RUNS at it"
        )
    runs = [r for r in found if fold is None or r.fold is None or r.fold == fold]
    if not runs:
        folds = sorted({r.fold for r in found if r.fold is not None})
        raise NothingToShow(f"no run of fold {fold} in {runs_dir} (folds there: {folds}); set CML_TF_FOLD")

    def order(run: Run):
        c = run.config
        match = _CELL.match(run.key)
        return (
            _SAMPLER_ORDER.get(match["sampler"] if match else c.get("sampler"), 4),
            -int(c.get("batch_size") or 0),
            int(c.get("num_negatives") or 0),  # None: not read by the run (config.json since the unused-fields rule)
            run.fold if run.fold is not None else -1,
            run.key,
        )

    return sorted(runs, key=order)


def baseline_runs(runs_dir: str, fold: int | None = None) -> list[tuple[str, str]]:
    """[(method, run directory)] of the Table 2 runner's baselines (``<runs>/baselines/<method>/fold<k>``)."""
    out = []
    for path in sorted(glob.glob(os.path.join(runs_dir, "baselines", "*", "fold*"))):
        name = os.path.basename(path)
        if name[4:].isdigit() and (fold is None or int(name[4:]) == fold):
            out.append((os.path.basename(os.path.dirname(path)), path))
    return out


def require(items, what: str, where: str):
    """``items`` when it is not empty, else NothingToShow saying that no ``what`` was found in ``where``."""
    if not items:
        raise NothingToShow(f"no {what} in {where}")
    return items


def configuration(config: dict, without: tuple[str, ...] = ()) -> str:
    """The configuration a run repeats, as canonical JSON: its whole config less `REPEAT_FIELDS` and ``without``.

    Two runs are folds (or seeds) of one configuration exactly when their ``configuration`` strings are equal.
    """
    dropped = set(REPEAT_FIELDS) | set(without)
    return json.dumps({k: v for k, v in config.items() if k not in dropped}, sort_keys=True)


def _value(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return json.dumps(v, sort_keys=True, separators=(",", ":")) if isinstance(v, (dict, list)) else str(v)


def configuration_labels(runs: list[Run], axis: tuple[str, ...] = ("num_negatives",)) -> list[str]:
    """A legend label per run, equal for two runs exactly when their configs are equal apart from the fold, the seeds
    (`REPEAT_FIELDS`) and ``axis`` (fields a plot shows on an axis).

    ``2-stage b=256``, then the data set where the runs hold several, then ``field=value`` for each field (up to
    three, then ``+n more``) on which the configurations that start alike differ: ``2-stage b=256 loss=hinge`` and
    ``2-stage b=256 loss=softmax``. Labels that would still collide get `` #2``, `` #3``, ...

    Args:
        runs: the runs (`find_runs`).
        axis: config fields left out of the configuration.

    Returns:
        one label per run, in the order of ``runs``.
    """
    several = len({r.config.get("dataset") for r in runs}) > 1
    shown = ("sampler", "batch_size", "dataset")
    bases, keys = [], []
    for run in runs:
        table2 = os.path.basename(run.path) == f"fold{run.fold}"  # <cell>/fold<k>/: the cell names the sampler
        match = _CELL.match(run.key) if table2 else None
        sampler = match["sampler"] if match else run.config.get("sampler", "?")
        base = f"{SAMPLER_LABELS.get(sampler, sampler)} b={run.config.get('batch_size')}"
        bases.append(base + (f" {run.config.get('dataset')}" if several else ""))
        keys.append(configuration(run.config, axis))
    labels = {}  # configuration -> label
    for base in dict.fromkeys(bases):
        configs = {k: json.loads(k) for b, k in zip(bases, keys) if b == base}
        fields = sorted({f for c in configs.values() for f in c} - set(shown))
        differ = [f for f in fields if len({_value(c.get(f)) for c in configs.values()}) > 1]
        differ.sort(key=lambda f: f not in _LABEL_FIRST)  # the model and the loss first (a stable sort)
        for key, c in configs.items():
            parts = [f"{f}={_value(c.get(f))}" for f in differ[:_MAX_LABEL_FIELDS]]
            more = f" +{len(differ) - _MAX_LABEL_FIELDS} more" if len(differ) > _MAX_LABEL_FIELDS else ""
            labels[key] = base + (" " + ", ".join(parts) + more if parts else "")
    taken = {}
    for key, label in labels.items():  # distinct configurations whose shown fields coincide: number them
        taken[label] = taken.get(label, 0) + 1
        if taken[label] > 1:
            labels[key] = f"{label} #{taken[label]}"
    return [labels[k] for k in keys]


def results_rows(runs: list[Run], k: int = 50) -> list[dict]:
    """One row per finished run (results.json), with the columns of the Table 2 runner's results.csv, plus
    ``configuration`` (the runs averaged together share it, see `configuration`) and ``label``
    (`configuration_labels`: one per configuration, |N_ij| aside)."""
    rows = []
    finished = [run for run in runs if os.path.exists(run.file("results.json"))]
    for run, label in zip(finished, configuration_labels(finished)):
        with open(run.file("results.json"), encoding="utf-8") as f:
            results = json.load(f)
        c = run.config
        rows.append(
            {
                "dataset": c.get("dataset"),
                "method": "cml",
                "sampler": c.get("sampler"),
                "batch_size": c.get("batch_size"),
                "num_negatives": c.get("num_negatives"),
                "fold": run.fold if run.fold is not None else -1,
                **{m: results.get(m) for m in (f"map@{k}", f"ndcg@{k}", f"recall@{k}", "mmr")},
                **{m: results.get(m) for m in ("train_seconds", "pairs_per_sec", "steps")},
                "run": run.key,
                "configuration": configuration(c),
                "label": label,
            }
        )
    return rows


@dataclasses.dataclass
class Catalogue:
    """The recommendations of the runs trained on one training set, with that set's item popularity.

    Attributes:
        name: the data set (``synthetic``); `` (2)``, `` (3)``, ... when other training sets share the name (another
            split, fold or filter).
        item_train_count: [n_items] int, training popularity of every item of this catalogue.
        recommendations: {run label or baseline method: recommendations.npz as a dict}; ``items`` [users, k] index
            ``item_train_count``.
    """

    name: str
    item_train_count: np.ndarray
    recommendations: dict[str, dict]


def recommendations_by_catalogue(runs_dir: str, fold: int | None = None) -> list[Catalogue]:
    """The ``recommendations.npz`` of the runs and baselines in ``runs_dir``, grouped by the catalogue they rank.

    Each run indexes its own catalogue: runs of several data sets (or splits) in one directory have different items,
    so a run is grouped with the runs whose ``item_train_count`` is the same array, never read against another's.

    Args:
        runs_dir: a directory of runs (`find_runs`).
        fold: as in `find_runs`.

    Returns:
        Catalogues in the order their first run is found (`find_runs`' order, then baselines).

    Raises:
        NothingToShow: no run there, or none with a recommendations.npz.
    """
    found = [(run.label, run.path, run.config.get("dataset", "?")) for run in find_runs(runs_dir, fold)]
    for method, path in baseline_runs(runs_dir, fold):
        config_path = os.path.join(path, "config.json")
        dataset = _read_config(config_path).get("dataset", "?") if os.path.exists(config_path) else "?"
        found.append((method, path, dataset))
    groups: dict[tuple, Catalogue] = {}
    for label, path, dataset in found:
        npz = os.path.join(path, "recommendations.npz")
        if not os.path.exists(npz):
            continue
        with np.load(npz) as f:
            recs = {name: f[name] for name in f.files}
        counts = recs["item_train_count"]
        key = (dataset, counts.shape, counts.tobytes())
        if key not in groups:
            same_name = sum(1 for d, *_ in groups if d == dataset)
            groups[key] = Catalogue(f"{dataset} ({same_name + 1})" if same_name else dataset, counts, {})
        groups[key].recommendations[label] = recs
    return require(list(groups.values()), "recommendations.npz (every run writes one when it finishes)", runs_dir)
