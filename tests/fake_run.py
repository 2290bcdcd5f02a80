"""A finished run directory built by hand (no training): string ids, hand-placed embeddings on the unit circle.

The data set is a small CSV (users ``ann``, ``bob``, ``cy``, ``dee``; items ``i0`` .. ``i7``, string ids) and the
config's split is computed by `cml_tf.training.data.load_data`, exactly as a trained run's would be. Item ``iN`` sits at
angle ``N * pi / 8`` on the unit circle (d = 2), so from a point at angle 0 the items rank i0, i1, ..., i7 with
score ``-||u - v||^2 = -(2 - 2 cos(N pi / 8))``. ``cy`` has a single interaction (``i0``): with two folds a user with
fewer than two items stays entirely in training, so cy's seen items are exactly {i0}.
"""

from __future__ import annotations

import json
import os

import numpy as np

from cml_tf.evaluation.evaluator import Evaluator
from cml_tf.io import save_npy_atomic, write_json_atomic
from cml_tf.training.config import Config
from cml_tf.training.data import load_data

PAIRS = [
    ("ann", "i0"), ("ann", "i1"), ("ann", "i2"), ("ann", "i5"),
    ("bob", "i3"), ("bob", "i4"), ("bob", "i6"), ("bob", "i7"),
    ("cy", "i0"),
    ("dee", "i1"), ("dee", "i2"), ("dee", "i3"), ("dee", "i4"), ("dee", "i6"),
]  # fmt: skip
USER_ANGLES = {"ann": 0.0, "bob": np.pi, "cy": 0.0, "dee": 0.45 * np.pi}  # no two items equidistant


def item_angle(item: str) -> float:
    return int(item[1:]) * np.pi / 8


def circle(angles) -> np.ndarray:
    a = np.asarray(angles, np.float64)
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


def make_run(root, name: str = "run", finished: bool = True) -> tuple[str, Config]:
    """Writes the data and a run directory under ``root``; returns (run dir, config)."""
    root = str(root)
    data = os.path.join(root, f"{name}-data.csv")
    with open(data, "w", encoding="utf-8") as f:
        f.writelines(f"{u},{i}\n" for u, i in PAIRS)
    config = Config(dataset="csv", data_path=data, split="kfold", num_folds=2, fold=0, valid_fraction=0.1)
    config = config.resolved()
    interactions, _ = load_data(config, use_cache=False)
    model_dir = os.path.join(root, name)
    os.makedirs(os.path.join(model_dir, "embeddings"), exist_ok=True)
    write_json_atomic(os.path.join(model_dir, "config.json"), config.to_dict())
    emb = os.path.join(model_dir, "embeddings")
    save_npy_atomic(os.path.join(emb, "user_embeddings.npy"), circle([USER_ANGLES[u] for u in interactions.user_ids]))
    save_npy_atomic(os.path.join(emb, "item_embeddings.npy"), circle([item_angle(i) for i in interactions.item_ids]))
    save_npy_atomic(os.path.join(emb, "user_ids.npy"), interactions.user_ids)
    save_npy_atomic(os.path.join(emb, "item_ids.npy"), interactions.item_ids)
    if finished:  # the test metrics training would have written (recommend checks its rebuilt split against them)
        _, split = load_data(config, use_cache=False)
        evaluator = Evaluator((split.train + split.valid).tocsr(), split.test, k=config.k)
        users, items = (np.load(os.path.join(emb, f"{t}_embeddings.npy")) for t in ("user", "item"))
        with open(os.path.join(model_dir, "results.json"), "w", encoding="utf-8") as f:
            json.dump({"ndcg@50": evaluator.evaluate(users, items)["ndcg@50"]}, f)
    return model_dir, config


def seen_items(config: Config, which: str = "train") -> dict[str, set[str]]:
    """{user: items} the run counts as seen, straight from the split (the reference)."""
    interactions, split = load_data(config, use_cache=False)
    m = (split.train + split.valid).tocsr() if which == "train" else interactions.matrix
    return {
        str(u): {str(interactions.item_ids[j]) for j in m.indices[m.indptr[r] : m.indptr[r + 1]]}
        for r, u in enumerate(interactions.user_ids)
    }


def expected_ranking(user: str, exclude: set[str]) -> list[tuple[str, float]]:
    """Items by descending -||u - v||^2 from the user's angle, excluded ones left out (hand formula)."""
    u = USER_ANGLES[user]
    items = [f"i{n}" for n in range(8) if f"i{n}" not in exclude]
    scores = {i: -(2 - 2 * np.cos(u - item_angle(i))) for i in items}
    return sorted(scores.items(), key=lambda kv: (-round(kv[1], 6), int(kv[0][1:])))
