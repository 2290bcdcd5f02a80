"""User cold start on MovieLens 100K: popularity, CML fold-in, feature regression, semi-personalised segments and
ALS fold-in, scored on held-out users against the number n of interactions they have made.

    python -m experiments.cold_start --dataset=movielens --data_path=../shared/data/ml-100k     # ~3-5 min, 2 cores
    python -m experiments.cold_start --dataset=movielens --data_path=../shared/data/ml-100k --seeds=0,1,2

Protocol and methods: `cml_tf.models.cold_start`. Per seed: 20% of the users (``--cold_fraction``) are held out; CML is
trained on the warm users only (the default 2-stage sampler, batch 256, ``--pairs`` training pairs, d = 128; a
seeded 10% of each warm user's items is the validation set that picks the checkpoint, and the same warm training
part feeds every method); ALS (implicit, 128 factors) is tuned on that validation set over ``--als_trials``
settings (implicit's default, then random draws from the Table 2 search space, the same settings for every seed).
Then for every n in ``--ns`` each method ranks the catalog for every cold user, the first n items masked, and
`cml_tf.evaluation.Evaluator` scores NDCG@50, Recall@50, MAP@50 and MMR on the rest.

Outputs in ``--out_dir`` (default experiments/results/cold_start): results.csv (one row per seed, n and method),
cold_start.md (mean ± std over seeds), ndcg_vs_n.png, command.txt. CML runs go to ``--runs_dir`` and are reused
when finished.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

METHODS = ("popularity", "fold_in", "regression", "semi_personalised", "als_fold_in")
LABELS = {
    "popularity": "(a) popularity",
    "fold_in": "(b) CML fold-in",
    "regression": "(c) feature regression (MLP)",
    "semi_personalised": "(d) semi-personalised segments",
    "als_fold_in": "(e) ALS fold-in (implicit)",
}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="movielens", help="movielens (the one with user features and timestamps)")
    p.add_argument("--data_path", default=os.path.join(ROOT, "..", "shared", "data", "ml-100k"))
    p.add_argument("--ns", default="0,1,3,5,10", help="numbers of known interactions per cold user")
    p.add_argument("--cold_fraction", type=float, default=0.2)
    p.add_argument("--seeds", default="0", help="comma-separated: the cold users' draw and every model's seed")
    p.add_argument("--pairs", type=int, default=1_000_000, help="CML training pairs on the warm users")
    p.add_argument("--sampler", default="2stage")
    p.add_argument("--segments", type=int, default=20, help="k-means segments of the semi-personalised method")
    p.add_argument("--als_trials", type=int, default=16, help="ALS settings tried (implicit's default, then random)")
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--runs_dir", default=os.path.join(ROOT, "experiments", "runs", "cold_start"))
    p.add_argument("--out_dir", default=os.path.join(ROOT, "experiments", "results", "cold_start"))
    args = p.parse_args(argv)
    try:
        args.ns = sorted({int(n) for n in args.ns.split(",") if n.strip()})
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        p.error(f"--ns and --seeds are comma-separated integers, got --ns={args.ns!r} --seeds={args.seeds!r}")
    if not args.ns or min(args.ns) < 0:
        p.error(f"--ns must list integers >= 0, got {args.ns}")
    if args.dataset.lower() not in ("movielens", "ml"):
        p.error(f"--dataset={args.dataset}: cold start needs user features and timestamps, which only movielens has")
    if not 0 < args.cold_fraction < 1:
        p.error(f"--cold_fraction must be in (0, 1), got {args.cold_fraction}")
    if args.pairs < 256:
        p.error(f"--pairs must be >= 256 (one batch), got {args.pairs}")
    return args


def warm_split(split, seed: int):
    """Split(train, valid, valid) of the warm users: a seeded 10% (at least 1) of each warm user's items is valid."""
    import numpy as np
    import scipy.sparse as sp

    from cml_tf.data.splits import Split

    m = split.warm_matrix()
    rng = np.random.default_rng([seed, 10])
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    key = rng.random(m.nnz)
    perm = np.lexsort((key, rows))
    rank = np.empty(m.nnz, np.int64)
    rank[perm] = np.arange(m.nnz) - np.repeat(m.indptr[:-1], np.diff(m.indptr))
    take = np.maximum(1, np.floor(0.1 * np.diff(m.indptr))).astype(np.int64)
    valid = rank < np.repeat(take, np.diff(m.indptr))

    def part(mask):
        return sp.csr_matrix((m.data[mask], (rows[mask], m.indices[mask])), shape=m.shape, dtype=np.float32)

    return Split(part(~valid), part(valid), part(valid))


def train_cml(args, interactions, split, seed: int):
    """CML on the warm users; returns (user vectors, item vectors, the warm Split)."""
    import numpy as np

    from cml_tf import training
    from cml_tf.training.config import Config

    warm = warm_split(split, seed)
    steps = max(1, args.pairs // 256)
    config = Config(
        dataset="movielens",
        data_path=os.path.abspath(args.data_path),
        sampler=args.sampler,
        batch_size=256,
        num_candidates=min(2000, interactions.n_items),
        max_steps=steps,
        eval_every=max(20, steps // 4),
        seed=seed,
    )
    model_dir = os.path.join(args.runs_dir, f"{args.sampler}-pairs{args.pairs}-cold{args.cold_fraction:g}-s{seed}")
    results = training.train(config, model_dir, data=(interactions, warm), verbose=0)
    emb = os.path.join(model_dir, "embeddings")
    users, items = (np.load(os.path.join(emb, f"{x}_embeddings.npy")) for x in ("user", "item"))
    print(f"seed {seed}: CML on {split.warm.size} warm users, valid ndcg@50 {results['valid']['ndcg@50']:.4f}")
    return users, items, warm


def fit_als(args, warm, seed: int):
    """implicit ALS tuned on the warm validation set (baselines' search), refitted on the warm training part."""
    import numpy as np

    from cml_tf.evaluation.evaluator import Evaluator
    from experiments import baselines

    users = np.flatnonzero(np.diff(warm.valid.indptr) > 0)
    evaluator = Evaluator(warm.train, warm.valid, k=args.k, users=users, scoring="dot")
    # the same candidate settings for every seed (only the data split and the fits vary with it)
    rng = np.random.default_rng([0, baselines.BASELINES.index("als")])
    best, best_params = -1.0, None
    for trial in range(args.als_trials):
        params = baselines.sample_params("als", trial, rng)
        fitted = baselines.fit("als", warm.train, params, factors=baselines.DEFAULT_FACTORS, seed=seed)
        score = baselines.evaluate(evaluator, fitted)[f"ndcg@{args.k}"]
        if score > best:
            best, best_params = score, params
    model = baselines.fit_model("als", warm.train, best_params, factors=baselines.DEFAULT_FACTORS, seed=seed)
    print(f"seed {seed}: ALS valid ndcg@50 {best:.4f} with {best_params}")
    return model


def method_scorers(args, split, side, warm, user_vectors, item_vectors, als, popularity, n: int, seed: int) -> dict:
    """{method: users [b] -> scores [b, n_items]} for the cold users knowing their first ``n`` items."""
    import numpy as np

    from cml_tf.evaluation.scores import distance_scores
    from cml_tf.models import cold_start as CS

    cold = split.cold
    known = split.first(n)[cold]
    has_known = np.diff(known.indptr) > 0

    def by_vectors(vectors):
        full = np.zeros_like(user_vectors)
        full[cold] = vectors
        return distance_scores(full, item_vectors)

    def by_rows(scores):  # [C, n_items] scores of the cold users, in cold order
        return lambda users: scores[np.searchsorted(cold, users)]

    inputs_warm = CS.regression_inputs(side.user_features, split, split.warm, n, item_vectors)
    inputs_cold = CS.regression_inputs(side.user_features, split, cold, n, item_vectors)
    fold = CS.fold_in(item_vectors, known, user_vectors[split.warm].mean(0), seed=seed)
    regression = CS.FeatureRegression(seed=seed).fit(inputs_warm, user_vectors[split.warm])
    semi = CS.SemiPersonalised(args.segments, seed=seed).fit(
        user_vectors[split.warm], inputs_warm, warm.train[split.warm]
    )
    als_scores = CS.als_fold_in(als, known) @ np.asarray(als.item_factors, np.float32).T
    als_scores = np.where(has_known[:, None], als_scores, popularity[None, :])  # no known item: popularity
    return {
        "popularity": lambda users: popularity,
        "fold_in": by_vectors(fold),
        "regression": by_vectors(regression.predict(inputs_cold)),
        "semi_personalised": by_rows(semi.score(inputs_cold)),
        "als_fold_in": by_rows(als_scores),
    }


def run_seed(args, interactions, side, timestamps, seed: int) -> list[dict]:

    from cml_tf.evaluation.evaluator import Evaluator
    from cml_tf.models import cold_start as CS

    split = CS.split_users(interactions.matrix, timestamps, args.cold_fraction, args.ns, seed)
    user_vectors, item_vectors, warm = train_cml(args, interactions, split, seed)
    als = fit_als(args, warm, seed)
    cold = split.cold
    popularity = CS.popularity_scores(warm.train)
    rows = []
    for n in args.ns:
        t0 = time.perf_counter()
        known = split.first(n)
        evaluator = Evaluator(known, split.target(n), k=args.k, users=cold, item_popularity=popularity)
        assert evaluator.num_excluded == 0
        scorers = method_scorers(args, split, side, warm, user_vectors, item_vectors, als, popularity, n, seed)
        for method, fn in scorers.items():
            m = evaluator.evaluate_scores(fn)
            rows.append(
                {"seed": seed, "n": n, "method": method, "users": m["users"], **{k: m[k] for k in m if k != "users"}}
            )
        best = max(rows[-len(scorers) :], key=lambda r: r[f"ndcg@{args.k}"])
        print(
            f"seed {seed}, n={n}: "
            + ", ".join(f"{r['method']} {r[f'ndcg@{args.k}']:.4f}" for r in rows[-len(scorers) :])
            + f" (best {best['method']}; {time.perf_counter() - t0:.0f}s)",
            flush=True,
        )
    return rows


def render(df, k: int) -> str:
    """Markdown tables: NDCG@k, Recall@k and MMR per method (rows) and n (columns), mean ± std over seeds."""
    out = []
    seeds = df.seed.nunique()
    for metric, scale, digits, title in (
        (f"ndcg@{k}", 100, 2, f"NDCG@{k} (%)"),
        (f"recall@{k}", 100, 2, f"Recall@{k} (%)"),
        ("mmr", 1, 1, "MMR (median warm popularity of the top 50)"),
    ):
        ns = sorted(df.n.unique())
        out.append(f"**{title}**, {df.users.iloc[0]} cold users, mean ± std over {seeds} seed(s)\n")
        out.append("| method | " + " | ".join(f"n = {n}" for n in ns) + " |")
        out.append("|---|" + "---:|" * len(ns))
        for method in METHODS:
            cells = []
            for n in ns:
                x = df[(df.method == method) & (df.n == n)][metric] * scale
                best = df[df.n == n].groupby("method")[metric].mean().idxmax() == method and metric != "mmr"
                text = f"{x.mean():.{digits}f}" + (f" ± {x.std(ddof=1):.{digits}f}" if len(x) > 1 else "")
                cells.append(f"**{text}**" if best else text)
            out.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def plot(df, k: int, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method in METHODS:
        g = df[df.method == method].groupby("n")[f"ndcg@{k}"]
        mean, std = g.mean() * 100, g.std().fillna(0) * 100
        ax.errorbar(mean.index, mean.values, yerr=std.values, marker="o", capsize=3, label=LABELS[method])
    ax.set_xlabel("n: interactions known for the cold user")
    ax.set_ylabel(f"NDCG@{k} (%) on the rest")
    ax.set_title("MovieLens 100K, cold users (20% held out)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    import pandas as pd

    from cml_tf.data import loaders
    from cml_tf.data.loaders import movielens
    from cml_tf.io import write_text_atomic

    t0 = time.perf_counter()
    interactions = loaders.load("movielens", args.data_path)
    side = loaders.load_side_info("movielens", args.data_path, interactions)
    if side.user_features is None:
        print(f"error: {args.data_path}: no u.user beside the ratings: cold start needs user features", file=sys.stderr)
        return 2
    timestamps = movielens.read_timestamps(movielens.resolve_path(args.data_path), interactions)
    print(
        f"{interactions.n_users:,} users x {interactions.n_items:,} items, {interactions.nnz:,} interactions; "
        f"{side.user_features.shape[1]} user features",
        flush=True,
    )
    os.makedirs(args.out_dir, exist_ok=True)
    write_text_atomic(
        os.path.join(args.out_dir, "command.txt"), "python -m experiments.cold_start " + " ".join(argv) + "\n"
    )
    rows = []
    for seed in args.seeds:
        rows += run_seed(args, interactions, side, timestamps, seed)
        df = pd.DataFrame(rows)
        write_text_atomic(os.path.join(args.out_dir, "results.csv"), df.to_csv(index=False))
        write_text_atomic(os.path.join(args.out_dir, "cold_start.md"), render(df, args.k))
        plot(df, args.k, os.path.join(args.out_dir, "ndcg_vs_n.png"))
    print(render(pd.DataFrame(rows), args.k))
    print(f"written to {args.out_dir} in {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
