"""Metadata-aware negatives at equal training pairs: side_info against uniform, popular and the default 2-stage.

    python -m experiments.side_info                                  # ml-100k then citeulike-t, 3 seeds each
    python -m experiments.side_info --datasets=ml100k --seeds=0 --pairs=200000        # a small one
    python -m experiments.side_info --dry_run                        # list the runs
    python -m experiments.side_info --false_negatives                # how often negatives are held-out positives

The setting is the stage-2 sweep's (`experiments.stage2_sweep`: CollMetric's 3:1:1 split with its seed 1, d = 128,
Adam lr 1e-4, batch 256, |N_ij| = 1, C = min(2000, catalog), exactly ``--pairs`` training pairs, ``--evals``
validations, the best validation checkpoint scored on test); ml-100k keeps ratings >= 4. ``side_info`` draws
negatives among the items sharing a genre (ml-100k, ``u.item``) or a tag (citeulike-t, tags with >= 5 items) with
the positive (`cml_tf.sampling.side_info_sampler.SideInfoSampler`).

Beside the test metrics, every ml-100k run's item table is scored by genre
(`cml_tf.evaluation.clustering.genre_clustering`:
k-means with k = the genres present, ARI and AMI against each item's first genre, kNN genre accuracy with k = 10),
over the items seen in training. citeulike-t's items have thousands of overlapping tags and no single label, so
they get no clustering score.

Runs are resumable (a run with a results.json is not run again). Outputs in ``--out_dir`` (default
experiments/results/side_info): results.csv (one row per run), side_info.md (mean ± std over seeds), command.txt.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SAMPLERS = ("uniform", "popular", "2stage", "side_info")
COLUMNS = ["dataset", "sampler", "seed", "pairs", "val_ndcg@50", "ndcg@50", "map@50", "recall@50", "mmr"]
COLUMNS += ["ari", "ami", "knn_accuracy", "majority_rate", "train_seconds"]


def parse_args(argv):
    from experiments.stage2_sweep import DATASETS

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", default="ml100k,citeulike", help=f"comma-separated, of {', '.join(DATASETS)}")
    p.add_argument("--samplers", default=",".join(SAMPLERS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--pairs", type=int, default=1_000_000, help="training pairs per run")
    p.add_argument("--evals", type=int, default=8, help="validations per run")
    p.add_argument("--data_root", default=os.path.join(ROOT, "..", "shared", "data"))
    p.add_argument("--runs_dir", default=os.path.join(ROOT, "experiments", "runs", "side_info"))
    p.add_argument("--out_dir", default=os.path.join(ROOT, "experiments", "results", "side_info"))
    p.add_argument("--dry_run", action="store_true")
    p.add_argument(
        "--false_negatives", action="store_true", help="only measure how often each sampler draws held-out positives"
    )
    args = p.parse_args(argv)
    args.datasets = [d for d in args.datasets.split(",") if d]
    args.samplers = [s for s in args.samplers.split(",") if s]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    bad = [d for d in args.datasets if d not in ("ml100k", "citeulike")]
    if bad:
        p.error(f"--datasets: {', '.join(bad)} has no side information; expected ml100k or citeulike")
    bad = [s for s in args.samplers if s not in SAMPLERS]
    if bad:
        p.error(f"--samplers: unknown {', '.join(bad)}; expected some of {', '.join(SAMPLERS)}")
    return args


def clustering_row(model_dir: str, data_path: str, interactions, split) -> dict:
    """Genre clustering of a finished ml-100k run's item table, over the items seen in training."""
    import numpy as np

    from cml_tf.data import loaders
    from cml_tf.evaluation import clustering

    side = loaders.load_side_info("movielens", data_path, interactions)
    vectors = np.load(os.path.join(model_dir, "embeddings", "item_embeddings.npy"))
    seen = np.flatnonzero(np.diff(split.train.tocsc().indptr) > 0)
    out = clustering.genre_clustering(vectors, side.first_group(), items=seen, seed=0)
    return {k: out[k] for k in ("ari", "ami", "knn_accuracy", "majority_rate")}


def data_config(args, ds: str):
    """The `Config` of data set ``ds``'s data and split (the stage-2 sweep's: CollMetric's 3:1:1, split seed 1)."""
    from cml_tf.training.config import Config
    from experiments.stage2_sweep import DATASETS

    dataset, path, options = DATASETS[ds]
    return Config(
        dataset=dataset,
        data_path=os.path.abspath(os.path.join(args.data_root, path)),
        dataset_options=dict(options),
        split="original",
        split_seed=1,
    )


def false_negative_rates(args, pairs: int = 50_000) -> list[str]:
    """How often a drawn negative is a held-out (validation or test) positive of the user: uniform vs side_info,
    one negative for each of ``pairs`` seeded training pairs per data set."""
    import numpy as np
    import tensorflow as tf

    from cml_tf.data import loaders
    from cml_tf.sampling import negatives as S
    from cml_tf.training.data import load_data

    lines = []
    for ds in args.datasets:
        config = data_config(args, ds)
        interactions, split = load_data(config)
        groups = loaders.load_side_info(config.dataset, config.data_path, interactions).item_groups
        heldout = S.PositiveIndex((split.valid + split.test).tocsr())
        u, i = split.train.nonzero()
        pick = np.random.default_rng(0).choice(u.size, min(u.size, pairs), replace=False)
        users, positives, seed = tf.constant(u[pick]), tf.constant(i[pick]), tf.constant([0, 1], tf.int64)
        drawn = {
            "uniform": S.NegativeSampler(split.train).sample(users, 1, seed),
            "side_info": S.SideInfoSampler(split.train, groups).sample(users, positives, 1, seed),
        }
        for sampler, negatives in drawn.items():
            rate = float(heldout.contains(users[:, None], negatives).numpy().mean())
            lines.append(f"{ds} {sampler}: {rate:.4f} of {pick.size:,} negatives are held-out positives of the user")
    return lines


def render(df) -> str:
    """Mean ± std over seeds per (dataset, sampler), NDCG / MAP / Recall in %."""
    lines = [
        "| data set | sampler | seeds | test NDCG@50 (%) | MAP@50 (%) | Recall@50 (%) | MMR | ARI | AMI "
        "| kNN genre acc. |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (ds, sampler), g in df.groupby(["dataset", "sampler"], sort=False):

        def ms(col, scale=1.0, digits=2, g=g):
            x = g[col].dropna() * scale
            if x.empty:
                return "–"
            return f"{x.mean():.{digits}f} ± {x.std(ddof=1) if len(x) > 1 else 0:.{digits}f}"

        lines.append(
            f"| {ds} | {sampler} | {len(g)} | {ms('ndcg@50', 100)} | {ms('map@50', 100)} | {ms('recall@50', 100)} | "
            f"{ms('mmr', 1, 1)} | {ms('ari', 1, 3)} | {ms('ami', 1, 3)} | {ms('knn_accuracy', 1, 3)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    runs = [(d, s, seed) for d in args.datasets for seed in args.seeds for s in args.samplers]
    print(f"{len(runs)} runs of {args.pairs:,} pairs: {', '.join(args.samplers)} x seeds {args.seeds}", flush=True)
    if args.false_negatives:
        print("\n".join(false_negative_rates(args)))
        return 0
    if args.dry_run:
        for r in runs:
            print(*r)
        return 0
    import pandas as pd

    from cml_tf import training
    from cml_tf.io import write_text_atomic
    from cml_tf.training.config import DEFAULT_STAGE2_WEIGHT_CAP
    from cml_tf.training.data import load_data
    from experiments.stage2_sweep import Run as SweepRun
    from experiments.stage2_sweep import run_config

    os.makedirs(args.out_dir, exist_ok=True)
    command = "python -m experiments.side_info " + " ".join(sys.argv[1:] if argv is None else argv)
    write_text_atomic(os.path.join(args.out_dir, "command.txt"), command.strip() + "\n")
    data, rows = {}, []
    for i, (ds, sampler, seed) in enumerate(runs, 1):
        if ds not in data:
            base = data_config(args, ds)
            data[ds] = load_data(base)
        interactions, split = data[ds]
        cap = DEFAULT_STAGE2_WEIGHT_CAP if sampler == "2stage" else None  # the default 2-stage (λ = 4)
        run = SweepRun(ds, "side_info", sampler, seed, weight_cap=cap)
        config = run_config(run, args.data_root, args.pairs, interactions.n_items, args.evals)
        model_dir = os.path.join(args.runs_dir, f"pairs{args.pairs}", ds, f"{sampler}-s{seed}")
        t0 = time.perf_counter()
        results = training.train(config, model_dir, data=(interactions, split), verbose=0)
        row = {
            "dataset": ds,
            "sampler": sampler,
            "seed": seed,
            "pairs": config.max_steps * config.batch_size,
            "val_ndcg@50": results["valid"]["ndcg@50"],
            **{k: results[k] for k in ("ndcg@50", "map@50", "recall@50", "mmr", "train_seconds")},
        }
        if ds == "ml100k":
            row.update(clustering_row(model_dir, config.data_path, interactions, split))
        rows.append(row)
        df = pd.DataFrame(rows, columns=COLUMNS)
        write_text_atomic(os.path.join(args.out_dir, "results.csv"), df.to_csv(index=False))
        write_text_atomic(os.path.join(args.out_dir, "side_info.md"), render(df))
        extra = f", ARI {row['ari']:.3f}, AMI {row['ami']:.3f}, kNN {row['knn_accuracy']:.3f}" if "ari" in row else ""
        print(
            f"[{i}/{len(runs)}] {ds} {sampler} seed {seed}: test ndcg@50 {row['ndcg@50']:.4f}, mmr {row['mmr']:.1f}"
            f"{extra} ({time.perf_counter() - t0:.0f}s)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
