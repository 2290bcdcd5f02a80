"""cml_tf on the public LightGCN splits, side by side with the published rows (Recall@20 / NDCG@20).

    python -m experiments.public_splits --dry_run                  # the plan and its ETA
    python -m experiments.public_splits                            # every split x method (resumable)
    python -m experiments.public_splits --splits=lastfm --methods=accurate,ease --max_steps=300 --out_dir=/tmp/ps

Each split is a LightGCN-format directory ``<data_root>/<name>-lightgcn`` (train.txt, valid.txt, test.txt; ids
kept), read as ``--dataset=lightgcn`` (docs/given_splits.md) and tested under the reference protocol: every item
ranked, the training file's items masked, Recall@20 = hits / |test items|, NDCG@20 with the ideal DCG of
min(|test|, 20) hits, mean over the users with test items. The model is chosen on valid.txt, never on test.txt.

Rows (``--methods``, `CML_METHODS` then `BASELINE_METHODS`):

* CML, each at the dataclass' d = 128 and at d = 64 (``-d64``; the published rows are all d = 64):
  ``--preset=accurate``, the default 2-stage hinge and uniform sampling; trained through
  `cml_tf.training.train` with ``k=20`` (the best validation NDCG@20 checkpoint is tested; test metrics and the
  training seconds from the run's results.json).
* EASE^R, ALS and BPR-MF (implicit, ``--factors`` = 64), tuned on valid.txt by `experiments.baselines.run_baseline`
  (``--trials`` settings; EASE^R: at most 4 draws of λ) and tested under the same protocol; their training seconds
  are the fit of the chosen model, the search seconds the fits of every trial. EASE^R is skipped, with one line
  naming the memory it would need, where its dense matrices do not fit in the available memory. ``popularity``
  (training counts) may be asked for, but is not a default row.
* The published rows of `PUBLISHED` (Lee et al., RecSys 2024), each naming its source.

``--epochs`` / ``--max_steps`` shorten the CML schedules for quick checks, and ``--max_train_seconds`` bounds each
CML run's training time (the runs then go to their own directories, e.g. ``accurate-steps300`` or
``accurate-full-900s``). ``--preset=accurate`` probes its temperature (`cml_tf.training.run.probe_temperature`):
its row's params name the τ chosen on valid.txt, and its training seconds include the probes. Re-running a command
skips finished runs and resumes interrupted ones.

Outputs in ``--out_dir`` (default experiments/results/public_splits): results.csv (one row per split x method of
ours), public_splits.md (one table per split, printed at the end), command.txt (appended). Runs in ``--runs_dir``
(default experiments/runs/public_splits, not committed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cml_tf import import_tensorflow  # noqa: E402

import_tensorflow()  # its start-up lines hidden, as the commands hide them

from experiments.negatives_study import _markdown, read_rows  # noqa: E402
from experiments.stage2_sweep import DATA, _fmt, append_command  # noqa: E402

K = 20
SPLITS = ("ml-1m", "lastfm", "gowalla")
#: split name -> the heading of its table
SPLIT_LABELS = {"ml-1m": "ML-1M", "lastfm": "LastFM", "gowalla": "Gowalla"}

#: The paper behind every published row (all d = 64, the model picked on valid; code: geon0325/LightGCNpp).
CITATION = (
    'Lee et al., "Revisiting LightGCN: Unexpected Inflexibility, Inconsistency, and A Remedy Towards Improved '
    'Recommendation", RecSys 2024'
)
_COPY = "Lee et al. 2024, Table 1 (from a copy of the table)"
_CONFIRMED = "Lee et al. 2024, Table 1; NDCG@20 confirmed in the authors' supplementary PDF"
#: The published rows: split -> (method, Recall@20, NDCG@20, source). The only place these values live.
PUBLISHED: dict[str, list[tuple[str, float, float, str]]] = {
    "ml-1m": [
        ("LightGCN", 0.2392, 0.3010, _CONFIRMED),
        ("LightGCN++", 0.2616, 0.3275, _CONFIRMED),
        ("NCL++", 0.2621, 0.3285, _COPY),
        ("BPR-MF", 0.2098, 0.2692, _COPY),
        ("UltraGCN", 0.2551, 0.3172, _COPY),
    ],
    "lastfm": [
        ("LightGCN", 0.2523, 0.2427, _CONFIRMED),
        ("LightGCN++", 0.2715, 0.2624, _CONFIRMED),
        ("XSimGCL++", 0.2738, 0.2638, _COPY),
    ],
    "gowalla": [
        ("LightGCN", 0.1683, 0.1426, _CONFIRMED),
        ("LightGCN++", 0.1739, 0.1469, _CONFIRMED),
        ("NCL++", 0.1759, 0.1478, _COPY),
    ],
}

#: CML rows: name -> (label, Config fields; "preset" expands to that preset's fields, which the rest override)
CML_METHODS: dict[str, tuple[str, dict]] = {}
for _name, _label, _fields in (
    ("accurate", "CML --preset=accurate", {"preset": "accurate"}),
    ("2stage", "CML 2-stage hinge (default)", {"sampler": "2stage"}),
    ("uniform", "CML uniform", {"sampler": "uniform"}),
):
    CML_METHODS[_name] = (_label, _fields)
    CML_METHODS[f"{_name}-d64"] = (_label, {**_fields, "embedding_dim": 64})
#: baseline rows (`experiments.baselines`): name -> label
BASELINE_METHODS = {"ease": "EASE^R", "als": "ALS (implicit)", "bpr": "BPR-MF (implicit)", "popularity": "Popularity"}
DEFAULT_METHODS = [*CML_METHODS, "ease", "als", "bpr"]
DEFAULT_TRIALS = 8
DEFAULT_FACTORS = 64
#: validations per CML run at least (short runs validate more often than every --eval_every steps)
MIN_EVALS = 5
# Rough seconds on 2 busy CPU cores for the ETA before any run has finished (then scaled by the measured ratio),
# from 1,000-step runs on ml-1m and gowalla and tuned baselines on lastfm: per CML training step (batch 256), per
# user x item of one validation ranking, per baseline trial and million training pairs (ALS, BPR), per flop-ish
# unit of an EASE^R factorisation (m³ + m²·n, m = the smaller of users and items in the dual, items in the primal).
_PRIOR_STEP_SECONDS = {"accurate": 0.017, "2stage": 0.014, "uniform": 0.003}
_PRIOR_RANKING_SECONDS = 6e-9
_PRIOR_TRIAL_SECONDS = {"als": 30.0, "bpr": 80.0, "popularity": 1.0}
_PRIOR_EASE_SECONDS = 5e-11

COLUMNS = [
    "split",
    "method",
    "family",
    "d",
    f"recall@{K}",
    f"ndcg@{K}",
    f"valid_ndcg@{K}",
    "train_seconds",
    "search_seconds",
    "trials",
    "steps",
    "best_step",
    "params",
    "run",
    "note",
]


def split_dir(data_root: str, name: str) -> str:
    """The LightGCN-format directory of split ``name``."""
    return os.path.abspath(os.path.join(data_root, f"{name}-lightgcn"))


def cml_config(name: str, path: str, train_pairs: int, args):
    """The `Config` of CML row ``name`` on the split in ``path`` (``train_pairs`` sets how often it validates)."""
    from cml_tf.training.config import PRESETS, Config

    fields = dict(CML_METHODS[name][1])
    if "preset" in fields:
        fields = {**PRESETS[fields.pop("preset")], **fields}
    if args.epochs is not None:
        fields["epochs"] = args.epochs
    config = Config(
        dataset="lightgcn",
        data_path=path,
        split="given",
        k=K,
        seed=args.seed,
        max_steps=args.max_steps,
        max_train_seconds=args.max_train_seconds,
        **fields,
    )
    steps = cml_steps(config, train_pairs)
    return dataclasses.replace(config, eval_every=max(1, min(args.eval_every, math.ceil(steps / MIN_EVALS))))


def cml_steps(config, train_pairs: int) -> int:
    """The training steps of a CML run (its ``max_steps``, or its epochs over ``train_pairs``)."""
    from cml_tf.training.run import Schedule

    return Schedule.of(config, train_pairs).total_steps


def budget_tag(args) -> str:
    """The run directories' suffix: the CML schedules as the methods set them ('full') or the override."""
    if args.max_steps is not None:
        tag = f"steps{args.max_steps}"
    else:
        tag = "full" if args.epochs is None else f"epochs{args.epochs:g}"
    return tag if args.max_train_seconds is None else f"{tag}-{args.max_train_seconds:g}s"


def search_trials(method: str, args) -> int:
    """The settings a baseline's validation search tries (`experiments.baselines.run_baseline`'s budget)."""
    from experiments.baselines import MAX_TRIALS, SEARCH_SPACES

    return min(args.trials, MAX_TRIALS.get(method, args.trials)) if method in SEARCH_SPACES else 0


def _chosen(results: dict) -> dict:
    """What a CML run chose on validation, for the params column: the τ of its temperature probe."""
    probe = results.get("temperature_probe")
    return {"temperature_chosen": probe["chosen"]} if probe else {}


def prior_seconds(method: str, steps: int, eval_every: int, shape: tuple[int, int], train_pairs: int, args) -> float:
    """A rough duration of one run, for the plan's ETA (``shape``: users x items)."""
    users, items = shape
    if method in CML_METHODS:
        rankings = math.ceil(steps / eval_every) + 1  # the validations and the test
        step = _PRIOR_STEP_SECONDS[method.removesuffix("-d64")]
        return steps * step + rankings * users * items * _PRIOR_RANKING_SECONDS
    trials = max(1, search_trials(method, args))
    if method == "ease":
        m = min(users, items)
        return trials * (m**3 + (m**2 * items if m < items else 0)) * _PRIOR_EASE_SECONDS
    return trials * _PRIOR_TRIAL_SECONDS[method] * max(train_pairs / 1e6, 0.05)


class Runner:
    """Trains the plan split by split (each split read once), records rows and rewrites the outputs after each."""

    def __init__(self, args):
        self.args = args
        self.rows = read_rows(os.path.join(args.out_dir, "results.csv"))
        for r in self.rows:  # empty cells read back as NaN
            r.update({c: r[c] if isinstance(r[c], str) else "" for c in ("params", "run", "note")})
        self.info: dict[str, dict] = {}

    def load(self, name: str):
        from cml_tf.training.config import Config
        from cml_tf.training.data import load_data

        path = split_dir(self.args.data_root, name)
        interactions, split = load_data(Config(dataset="lightgcn", data_path=path, split="given"))
        self.info[name] = {
            "users": split.train.shape[0],
            "items": split.train.shape[1],
            "pairs": (split.train.nnz, split.valid.nnz, split.test.nnz),
        }
        return path, interactions, split

    def run_dir(self, split: str, method: str) -> str:
        if method in CML_METHODS:
            return os.path.join(self.args.runs_dir, split, f"{method}-{budget_tag(self.args)}")
        factors = f"-f{self.args.factors}" if method in ("als", "bpr") else ""
        return os.path.join(self.args.runs_dir, split, f"{method}-t{self.args.trials}{factors}")

    def execute(self) -> None:
        args = self.args
        plan = [(s, m) for s in args.splits for m in args.methods]
        done = [os.path.exists(os.path.join(self.run_dir(*p), "results.json")) for p in plan]
        print(f"plan: {len(plan)} runs, {sum(done)} finished already ({budget_tag(args)} CML schedules)", flush=True)
        loaded = {}
        priors = {}
        for (split, method), finished in zip(plan, done):
            if split not in loaded:
                loaded[split] = self.load(split)
            path, _, sp = loaded[split]
            config = cml_config(method, path, sp.train.nnz, args) if method in CML_METHODS else None
            steps = cml_steps(config, sp.train.nnz) if config else 0
            prior = prior_seconds(method, steps, config.eval_every if config else 1, sp.train.shape, sp.train.nnz, args)
            priors[(split, method)] = 0.0 if finished else prior
            what = f"{steps:,} steps" if method in CML_METHODS else f"tuned, {search_trials(method, args)} trials"
            print(f"  {split:<8} {method:<13} {what:<20} {'done' if finished else '~' + _fmt(priors[(split, method)])}")
        print(f"ETA (rough, before any run): {_fmt(sum(priors.values()))}", flush=True)
        if args.dry_run:
            return
        started = time.perf_counter()
        measured = prior_done = 0.0
        for i, (split, method) in enumerate(plan, 1):
            t0 = time.perf_counter()
            row = self.run_one(split, method, *loaded[split])
            seconds = time.perf_counter() - t0
            if priors[(split, method)]:
                measured, prior_done = measured + seconds, prior_done + priors[(split, method)]
            left = sum(priors[p] for p in plan[i:]) * (measured / prior_done if prior_done else 1.0)
            result = (
                f"recall@{K} {row[f'recall@{K}']:.4f}, ndcg@{K} {row[f'ndcg@{K}']:.4f}, "
                f"train {row['train_seconds']:.0f} s"
                if not row["note"]
                else row["note"]
            )
            print(
                f"[{i}/{len(plan)}] {split} {method}: {result} | elapsed {_fmt(time.perf_counter() - started)}, "
                f"ETA {_fmt(left)}",
                flush=True,
            )
        print(render(self.rows, self.info), flush=True)

    def run_one(self, split: str, method: str, path: str, interactions, data) -> dict:
        """Trains (or reads back) one row and records it."""
        run_dir = self.run_dir(split, method)
        if method in CML_METHODS:
            from cml_tf import training

            config = cml_config(method, path, data.train.nnz, self.args)
            results = training.train(config, run_dir, data=(interactions, data), verbose=0)
            row = {
                "family": "cml",
                "d": config.embedding_dim,
                "search_seconds": float("nan"),
                "trials": 0,
                "steps": results["steps"],
                "best_step": results["best_step"],
                "params": json.dumps({**CML_METHODS[method][1], **_chosen(results)}),
            }
        else:
            from experiments.baselines import EaseMemoryError, run_baseline

            try:
                results = run_baseline(
                    method,
                    data,
                    run_dir,
                    config={"dataset": "lightgcn", "split": split},
                    k=K,
                    trials=self.args.trials,
                    factors=self.args.factors,
                    seed=self.args.seed,
                    num_threads=self.args.num_threads,
                    protocol="reference",
                )
            except EaseMemoryError as e:
                print(f"{split} {method}: skipped: {e}", flush=True)
                return self.record(split, method, {"family": "baseline", "run": "", "note": f"not run: {e}"})
            row = {
                "family": "baseline",
                "d": self.args.factors if method in ("als", "bpr") else float("nan"),
                "search_seconds": sum(t["fit_seconds"] for t in results["trials"]),
                "trials": results["budget"],
                "steps": results["steps"],
                "best_step": float("nan"),
                "params": json.dumps(results["params"]),
            }
        row.update(
            {
                f"recall@{K}": results[f"recall@{K}"],
                f"ndcg@{K}": results[f"ndcg@{K}"],
                f"valid_ndcg@{K}": results["valid"].get(f"ndcg@{K}", float("nan")),
                "train_seconds": results["train_seconds"],
                "run": os.path.relpath(run_dir, self.args.runs_dir),
                "note": "",
            }
        )
        return self.record(split, method, row)

    def record(self, split: str, method: str, row: dict) -> dict:
        """Puts the row of (split, method) in results.csv (replacing an earlier one) and rewrites the outputs."""
        import pandas as pd

        from cml_tf.io import write_text_atomic

        row = {c: row.get(c, float("nan")) for c in COLUMNS} | {"split": split, "method": method}
        self.rows = [r for r in self.rows if (r["split"], r["method"]) != (split, method)] + [row]
        os.makedirs(self.args.out_dir, exist_ok=True)
        df = pd.DataFrame(self.rows, columns=COLUMNS)
        write_text_atomic(os.path.join(self.args.out_dir, "results.csv"), df.to_csv(index=False))
        write_text_atomic(os.path.join(self.args.out_dir, "public_splits.md"), render(self.rows, self.info))
        return row


def _number(value, fmt: str) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(value) else format(value, fmt)


def _label(method: str, row: dict) -> str:
    params = json.loads(row["params"]) if isinstance(row.get("params"), str) and row["params"] else {}
    if method in CML_METHODS:
        label = CML_METHODS[method][0]
        if "temperature_chosen" in params:  # the preset's temperature probe
            return f"{label} (τ = {params['temperature_chosen']:g} picked on valid)"
        if params.get("preset") == "accurate":  # a row from before the preset probed τ
            return f"{label} (τ = 0.5, before the probe)"
        return label
    label = BASELINE_METHODS.get(method, method)
    shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
    return f"{label} ({shown})" if shown else label


def ease_note(split: str, info: dict | None) -> str:
    """One line: the memory EASE^R's dense matrices need on this split (`ease_memory_bytes`) and this machine's."""
    from experiments.baselines import available_memory_bytes, ease_memory_bytes

    if not info:
        return ""
    users, items = info["users"], info["items"]
    need = ease_memory_bytes(items, users)
    form = "primal, 3 x items²" if need == ease_memory_bytes(items) else "users x users dual"
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    fits = "fits" if need <= total else "does not fit"
    return (
        f"EASE^R here needs {need / 2**30:.1f} GiB of float32 matrices ({form}; {users:,} users x {items:,} items, "
        f"by `ease_memory_bytes`): it {fits} in this machine's {total / 2**30:.1f} GiB in all and runs only when that "
        f"much is free ({available_memory_bytes() / 2**30:.1f} GiB when this table was written)."
    )


def render(rows: list[dict], info: dict | None = None) -> str:
    """public_splits.md: per split, our rows then the published ones (Recall@20, NDCG@20, seconds, source)."""
    import pandas as pd

    info = info or {}
    lines = [f"# cml_tf on the public LightGCN splits (Recall@{K} / NDCG@{K}, reference protocol)", ""]
    splits = list(dict.fromkeys([r["split"] for r in rows]))
    for split in splits:
        mine = [r for r in rows if r["split"] == split]
        published = PUBLISHED.get(split, [])
        best = max(published, key=lambda p: p[2]) if published else None
        table = []
        for r in mine:
            ratio = float(r[f"ndcg@{K}"]) / best[2] if best and not r["note"] else float("nan")
            table.append(
                {
                    "method": _label(r["method"], r),
                    "d": _number(r["d"], ".0f"),
                    f"Recall@{K}": _number(r[f"recall@{K}"], ".4f"),
                    f"NDCG@{K}": _number(r[f"ndcg@{K}"], ".4f"),
                    "NDCG / best pub.": _number(ratio, ".3f"),
                    "train s": _number(r["train_seconds"], ".1f"),
                    "search s": _number(r["search_seconds"], ".1f"),
                    "source": r["note"] or f"ours (`{r['run']}`)",
                }
            )
        for method, recall, ndcg, source in published:
            table.append(
                {
                    "method": method + (" (best published)" if best and method == best[0] else ""),
                    "d": "64",
                    f"Recall@{K}": f"{recall:.4f}",
                    f"NDCG@{K}": f"{ndcg:.4f}",
                    "NDCG / best pub.": f"{ndcg / best[2]:.3f}",
                    "train s": "–",
                    "search s": "–",
                    "source": source,
                }
            )
        heading = SPLIT_LABELS.get(split, split)
        if split in info:
            i = info[split]
            heading += (
                f" ({split}-lightgcn: {i['users']:,} users x {i['items']:,} items; "
                f"{i['pairs'][0]:,} / {i['pairs'][1]:,} / {i['pairs'][2]:,} train / valid / test pairs)"
            )
        lines += [f"## {heading}", "", _markdown(pd.DataFrame(table)), ""]
        note = ease_note(split, info.get(split))
        if note:
            lines += [note, ""]
    lines += [
        "Notes:",
        "",
        f"* Protocol (ours and the published rows'): every item ranked, the training file's items masked (valid.txt's "
        f"items stay rankable), Recall@{K} = hits / |test items|, NDCG@{K} with the ideal DCG of min(|test|, {K}) "
        "hits, mean over the users with test items; the model is chosen on valid.txt (docs/given_splits.md).",
        "* CML rows: the checkpoint of the best validation NDCG@20 is tested; `train s` is the run's training time as "
        "it recorded it (results.json's `train_seconds`, validation excluded). Baselines: `train s` fits the chosen "
        "model, `search s` sums the fits of every trial of the validation search (its evaluations excluded).",
        f"* Published rows: {CITATION}, Table 1 (d = 64, the model picked on valid; code: geon0325/LightGCNpp). "
        "LightGCN's and LightGCN++'s NDCG@20 values are confirmed in the authors' supplementary PDF; the other values "
        "come from a copy of Table 1.",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m experiments.public_splits",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    listed = lambda text: [x for x in text.split(",") if x]  # noqa: E731
    methods = [*CML_METHODS, *BASELINE_METHODS]
    p.add_argument("--splits", type=listed, default=list(SPLITS), help="names of <data_root>/<name>-lightgcn")
    p.add_argument("--methods", type=listed, default=DEFAULT_METHODS, help=", ".join(methods))
    p.add_argument("--data_root", default=DATA, help="folder holding the <name>-lightgcn directories")
    p.add_argument("--out_dir", default=os.path.join(ROOT, "experiments", "results", "public_splits"))
    p.add_argument("--runs_dir", default=os.path.join(ROOT, "experiments", "runs", "public_splits"))
    p.add_argument("--epochs", type=float, default=None, help="CML epochs instead of each method's own")
    p.add_argument("--max_steps", type=int, default=None, help="CML steps instead of each method's schedule")
    p.add_argument(
        "--max_train_seconds",
        type=float,
        default=None,
        help="CML budget of training seconds (its probes included; validation excluded), e.g. 900",
    )
    p.add_argument("--eval_every", type=int, default=1000, help="CML validation period (at least 5 per run)")
    p.add_argument("--trials", type=int, default=DEFAULT_TRIALS, help="baselines' validation search (EASE^R: <= 4)")
    p.add_argument("--factors", type=int, default=DEFAULT_FACTORS, help="ALS / BPR factors")
    p.add_argument("--num_threads", type=int, default=2, help="implicit's threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dry_run", action="store_true", help="print the plan and its ETA only")
    args = p.parse_args(argv)
    unknown = sorted(set(args.methods) - set(methods))
    if unknown or not args.methods:
        p.error(f"--methods: unknown {', '.join(unknown) or 'none given'}; expected some of {', '.join(methods)}")
    missing = [s for s in args.splits if not os.path.isdir(split_dir(args.data_root, s))]
    if missing or not args.splits:
        where = ", ".join(split_dir(args.data_root, s) for s in missing) or "none given"
        p.error(f"--splits: no LightGCN directory {where} (--data_root={args.data_root})")
    for name in ("epochs", "max_steps", "max_train_seconds", "eval_every", "trials", "factors", "num_threads"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            p.error(f"--{name} must be positive, got {value}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.dry_run:
        append_command(args.out_dir, "experiments.public_splits", argv)
    Runner(args).execute()
    return 0


if __name__ == "__main__":
    sys.exit(main())
