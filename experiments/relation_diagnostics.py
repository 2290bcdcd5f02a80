"""What the relational models' translation vectors do: how much r(u, v) varies between pairs and how sharply their
attentions choose, on sampled test pairs of trained runs.

    python -m experiments.relation_diagnostics runs/hlr_table/ml-100k/hlr/lr0.005/seed0 [RUN_DIR ...]

For each run directory (a finished `cml_tf.train` run of a relational model; its best checkpoint is loaded and its
split rebuilt from config.json) and ``--pairs`` test pairs drawn with ``--seed``:

* ``norm r``: the mean norm of the relation vectors, against ``dist``, the mean user–item distance ‖u − v‖;
* ``spread``: mean ‖r − r̄‖ / mean ‖r‖ with r̄ the mean relation over the pairs: 0 when every pair gets the same
  translation (the relation is then one global offset, and the model ranks as CML does);
* ``slot H``: for the memory models (LRML, HLR), the entropy of the attention over the M memory slots divided by
  log M (1: uniform, every pair reads the same mixture of slots);
* ``ref H``: for the models that attend over the user's reference items (AttCML, HLR), the entropy of that
  attention divided by log(number of valid references).

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import numpy as np


def normalised_entropy(weights: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Mean over rows of H(w) / log(n) (n: the valid entries of the row; rows with n < 2 are left out).

    Args:
        weights: [..., n] rows that sum to 1 (0 where not valid).
        valid: [..., n] bool; default all.
    """
    w = weights.reshape(-1, weights.shape[-1]).astype(np.float64)
    n = np.full(len(w), w.shape[1]) if valid is None else valid.reshape(-1, w.shape[1]).sum(1)
    h = -np.sum(np.where(w > 0, w * np.log(np.maximum(w, 1e-300)), 0.0), axis=1)
    keep = n >= 2
    return float(np.mean(h[keep] / np.log(n[keep]))) if keep.any() else float("nan")


def diagnose(run_dir: str, pairs: int, seed: int) -> dict:
    """The diagnostics of one run directory (see the module docstring)."""
    import tensorflow as tf

    from cml_tf.models import relations as R
    from cml_tf.serving.runs import load_run_config, resolve_data_path
    from cml_tf.training.data import load_data
    from cml_tf.training.run import build_model

    config = load_run_config(run_dir)  # tolerant of other versions' keys; data found from the run's directory
    config = dataclasses.replace(config, data_path=resolve_data_path(config.data_path, run_dir))
    interactions, split = load_data(config)
    model = build_model(config, *split.train.shape, train=split.train)
    checkpoint = tf.train.Checkpoint(model=model)
    checkpoint.restore(tf.train.latest_checkpoint(os.path.join(run_dir, "best"))).expect_partial()
    test = split.test.tocoo()
    rng = np.random.default_rng(seed)
    pick = rng.choice(test.nnz, min(pairs, test.nnz), replace=False)
    users = tf.constant(test.row[pick], tf.int32)
    items = tf.constant(test.col[pick], tf.int32)[:, None]
    u, v = model.user_vectors(users), model.item_vectors(items)
    r = model.relation(users, u, items, v)[:, 0].numpy()
    row = {
        "run": run_dir,
        "model": config.model,
        "norm r": float(np.linalg.norm(r, axis=1).mean()),
        "dist": float(tf.reduce_mean(tf.norm(u - v[:, 0], axis=1))),
        "spread": float(np.linalg.norm(r - r.mean(0), axis=1).mean() / max(np.linalg.norm(r, axis=1).mean(), 1e-12)),
        "slot H": float("nan"),
        "ref H": float("nan"),
    }
    if config.model == "lrml":
        row["slot H"] = normalised_entropy(R.lram(u, v, model.keys, model.memories)[1].numpy())
    elif config.model == "attcml":
        prefs, mask = model.references(users)
        row["ref H"] = normalised_entropy(R.preference_attention(v, prefs, mask)[1].numpy(), mask.numpy()[:, None])
    elif config.model == "hlr":
        refs, mask = model.reference_vectors(users, u)
        slots = tf.nn.softmax(tf.tensordot(v[:, :, None, :] * refs[:, None], model.keys, 1), axis=-1)
        row["slot H"] = normalised_entropy(slots.numpy()[mask.numpy()[:, None, :]])
        weights = R.hierarchical_relation(u, v, refs, mask, model.keys, model.memories)[1]
        row["ref H"] = normalised_entropy(weights.numpy(), mask.numpy()[:, None])
    return row


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.relation_diagnostics", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dirs", nargs="+", help="finished runs of relational models")
    p.add_argument("--pairs", type=int, default=2000, help="test pairs sampled")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    missing = [d for d in args.run_dirs if not os.path.exists(os.path.join(d, "results.json"))]
    if missing:
        p.error(f"not a finished run (no results.json): {', '.join(missing)}")
    from cml_tf.cli import console

    console.setup_logging(False)
    console.import_tensorflow(False)
    columns = ["model", "norm r", "dist", "spread", "slot H", "ref H", "run"]
    print("| " + " | ".join(columns) + " |\n|---|" + "---:|" * (len(columns) - 2) + "---|")
    for run_dir in args.run_dirs:
        row = diagnose(run_dir, args.pairs, args.seed)
        cells = [row["model"]] + [f"{row[c]:.3f}" for c in columns[1:-1]] + [run_dir]
        print("| " + " | ".join(c.replace("nan", "–") for c in cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
