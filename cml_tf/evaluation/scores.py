"""Score functions: users x the whole catalog, from embeddings (one matmul) or from a model (in blocks).

The evaluator ranks these scores; `cml_tf.evaluation.toplists` and the serving layer use them too.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

#: floats one block of the chunked ranking may hold (users x items x the model's ``pair_cost``): 128 MiB
MAX_BLOCK_FLOATS = 2**25


def block_scores(
    score_block: Callable, users: tf.Tensor, n_items: int, chunk: int, prepare: Callable | None = None
) -> tf.Tensor:
    """Scores of users x the whole catalog, computed ``chunk`` items at a time (graph code, fixed shapes).

    The catalog is cut into ``ceil(n_items / chunk)`` chunks of exactly ``chunk`` items (the last one padded with
    the last item, whose extra scores are dropped), scored one after the other by ``tf.map_fn`` (one trace of
    ``score_block``, at most one block alive at a time), and laid side by side.

    Args:
        score_block: ``(users [b] int32, items [chunk] int32) -> [b, chunk] float32`` scores, traceable; with
            ``prepare``, ``(prepare(users), items) -> [b, chunk]``.
        users: [b] int32 user ids.
        n_items: the catalog size.
        chunk: items per block.
        prepare: optional ``users -> state`` computed once for all chunks (e.g. a model's `user_state`).

    Returns:
        [b, n_items] float32 scores.
    """
    n_chunks = -(-n_items // chunk)
    state = prepare(users) if prepare is not None else users

    def one(i):
        items = tf.minimum(i * chunk + tf.range(chunk, dtype=tf.int32), n_items - 1)
        return tf.cast(score_block(state, items), tf.float32)

    blocks = tf.map_fn(
        one,
        tf.range(n_chunks, dtype=tf.int32),
        fn_output_signature=tf.TensorSpec([None, chunk], tf.float32),
        parallel_iterations=1,
    )  # [n_chunks, b, chunk]
    b = tf.shape(users)[0]
    return tf.reshape(tf.transpose(blocks, [1, 0, 2]), [b, n_chunks * chunk])[:, :n_items]


def item_chunk(users: int, n_items: int, pair_cost: int, max_floats: int = MAX_BLOCK_FLOATS) -> int:
    """Items per block so that ``users x chunk x pair_cost`` floats stay under ``max_floats`` (at least 1)."""
    return int(max(1, min(n_items, max_floats // max(1, users * pair_cost))))


def model_scores(model, n_items: int) -> Callable[[np.ndarray], np.ndarray]:
    """users [b] -> [b, n_items] numpy scores of a `cml_tf.models` model (chunked for relational models)."""
    if not getattr(model, "relational", False):
        return distance_scores(*(np.asarray(t) for t in model.embeddings()))
    batch = model.block_users()
    chunk = item_chunk(batch, n_items, model.pair_cost())
    step = tf.function(
        lambda users: block_scores(model.state_scores, users, n_items, chunk, prepare=model.user_state),
        input_signature=[tf.TensorSpec([None], tf.int32)],
    )

    def scores(users):
        users = np.asarray(users, np.int32)
        parts = [step(tf.constant(users[i : i + batch])).numpy() for i in range(0, len(users), batch)]
        return np.concatenate(parts) if parts else np.zeros((0, n_items), np.float32)

    return scores


def distance_scores(user_vectors: np.ndarray, item_vectors: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """users [b] -> [b, n_items] scores ``2 u.v - ||v||^2``: ranks as ``-||u - v||^2`` (CML's distance)."""
    u, v = np.asarray(user_vectors), np.asarray(item_vectors)
    sq = (v * v).sum(1)
    return lambda users: 2.0 * u[users] @ v.T - sq[None, :]
