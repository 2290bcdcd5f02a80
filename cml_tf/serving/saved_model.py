"""A servable SavedModel of a trained run (`export_saved_model`; the command is ``python -m cml_tf.export``).

The SavedModel holds everything it needs (tables, id vocabularies, seen items) and no cml_tf code: it loads with
``tf.saved_model.load`` in any process with TensorFlow, and TF Serving serves it (give it ``--export_dir=base/1``,
TF Serving's versioned layout). Signatures:

``serving_default``: ``users`` string [n] (the data set's own user ids) ->
    ``items`` string [n, k] (item ids, best first), ``scores`` float32 [n, k] (``-||u - v||^2``, higher is
    closer), ``known`` bool [n]. Each user's seen items (``--seen``: training + validation interactions by
    default, ``all`` for every interaction) are excluded. A user with fewer than k unseen items gets them all,
    then item ``""`` with score ``-inf``.
``similar_items``: ``items`` string [n] -> the k nearest items of each item (itself excluded), same outputs.

**Unknown ids** (not in the run's data): ``known`` is False and the row holds the k most popular items (most
users in the seen interactions, ties by lower item index) with score NaN, so a client can tell a fallback from a
model ranking while still showing something.

k is fixed at export time (``--k``). The signatures score users in blocks of at most ``--memory_mb`` of
``[block, n_items]`` float32 (a ``tf.map_fn`` over blocks), so a large request does not multiply memory. Tables and
seen items are variables (no 2 GB graph-constant limit); the id vocabularies are ``StaticHashTable`` constants.
``OUT/cml_tf_export.json`` records k, the run directory and the table sizes (ignored by TF Serving).

Load without cml_tf::

    import tensorflow as tf
    model = tf.saved_model.load("exports/ml100k/1")
    out = model.signatures["serving_default"](users=tf.constant(["42", "7"]))
    print(out["items"].numpy(), out["scores"].numpy())
"""

from __future__ import annotations

import os
import shutil

import numpy as np

from cml_tf.serving.recommender import Recommender
from cml_tf.serving.runs import RecommendError

EXPORT_INFO = "cml_tf_export.json"


def _serving_module(rec: Recommender, k: int, memory_bytes: int):
    """A `tf.Module` with the ``serving_default`` and ``similar_items`` functions of the recommender's tables."""
    import tensorflow as tf

    n_items = rec.n_items
    seen = rec.seen if rec.seen is not None else None
    popularity = rec.popularity()
    popular = np.lexsort((np.arange(n_items), -popularity))[:k]  # most seen first, ties by lower index
    block = int(max(1, min(1024, memory_bytes // (8 * n_items))))

    class Serving(tf.Module):
        def __init__(self):
            super().__init__(name="cml_serving")
            self.k = k
            self.block = block
            self.user_table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(rec.users.strings.tolist(), tf.string), tf.range(rec.n_users, dtype=tf.int64)
                ),
                default_value=-1,
            )
            self.item_table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(rec.items.strings.tolist(), tf.string), tf.range(n_items, dtype=tf.int64)
                ),
                default_value=-1,
            )
            self.user_vectors = tf.Variable(rec.user_vectors, trainable=False, name="user_vectors")
            self.item_vectors = tf.Variable(rec.item_vectors, trainable=False, name="item_vectors")
            self.item_sq = tf.Variable(
                np.einsum("ij,ij->i", rec.item_vectors, rec.item_vectors), trainable=False, name="item_sq"
            )
            self.item_ids = tf.Variable(tf.constant(rec.items.strings.tolist(), tf.string), trainable=False)
            indptr = seen.indptr if seen is not None else np.zeros(rec.n_users + 1)
            indices = seen.indices if seen is not None else np.zeros(0)
            self.seen_indptr = tf.Variable(indptr.astype(np.int64), trainable=False, name="seen_indptr")
            self.seen_indices = tf.Variable(indices.astype(np.int64), trainable=False, name="seen_indices")
            self.popular = tf.Variable(popular.astype(np.int64), trainable=False, name="popular_items")

        def _rank(self, queries, exclude_ranges, exclude_single):
            """queries [n, d]; exclude_ranges [n, 2] (start, end) into seen_indices; exclude_single [n] item or -1.

            Returns ([n, k] scores, [n, k] int32 item rows), computed in blocks of ``self.block`` queries."""
            n = tf.shape(queries)[0]
            size = tf.minimum(self.block, tf.maximum(n, 1))  # a small request is one small block
            blocks = tf.maximum(1, (n + size - 1) // size)  # at least one (padded) block: map_fn needs an element
            pad = blocks * size - n
            q = tf.pad(queries, [[0, pad], [0, 0]])
            ranges = tf.pad(exclude_ranges, [[0, pad], [0, 0]])
            single = tf.pad(exclude_single, [[0, pad]], constant_values=-1)

            def one_block(args):
                qb, rb, sb = args  # [B, d], [B, 2], [B]
                scores = 2.0 * tf.matmul(qb, self.item_vectors, transpose_b=True) - self.item_sq[None, :]
                spans = tf.ragged.range(rb[:, 0], rb[:, 1])  # each query's positions in seen_indices
                cols = tf.gather(self.seen_indices, spans.flat_values)
                rows = spans.value_rowids()
                has_single = sb >= 0
                rows = tf.concat([rows, tf.boolean_mask(tf.range(tf.shape(sb)[0], dtype=tf.int64), has_single)], 0)
                cols = tf.concat([cols, tf.boolean_mask(sb, has_single)], 0)
                scores = tf.tensor_scatter_nd_update(
                    scores, tf.stack([rows, cols], axis=1), tf.fill(tf.shape(rows), float("-inf"))
                )
                values, top = tf.math.top_k(scores, k=self.k)
                return values - tf.reduce_sum(tf.square(qb), axis=1, keepdims=True), top

            d = tf.shape(q)[1]
            values, top = tf.map_fn(
                one_block,
                (
                    tf.reshape(q, [blocks, size, d]),
                    tf.reshape(ranges, [blocks, size, 2]),
                    tf.reshape(single, [blocks, size]),
                ),
                fn_output_signature=(tf.float32, tf.int32),
                parallel_iterations=1,
            )
            return tf.reshape(values, [-1, self.k])[:n], tf.reshape(top, [-1, self.k])[:n]

        def _outputs(self, rows, values, top):
            known = rows >= 0
            ids = tf.gather(self.item_ids, top)
            ids = tf.where(tf.math.is_inf(values), tf.constant("", tf.string), ids)
            fallback_ids = tf.gather(self.item_ids, self.popular)[None, :]
            n = tf.shape(rows)[0]
            ids = tf.where(known[:, None], ids, tf.tile(fallback_ids, [n, 1]))
            values = tf.where(known[:, None], values, tf.fill(tf.shape(values), float("nan")))
            return {"items": ids, "scores": values, "known": known}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="users")])
        def serve(self, users):
            rows = self.user_table.lookup(users)
            safe = tf.maximum(rows, 0)
            starts = tf.where(rows >= 0, tf.gather(self.seen_indptr, safe), 0)
            ends = tf.where(rows >= 0, tf.gather(self.seen_indptr, safe + 1), 0)
            single = tf.fill(tf.shape(rows), tf.constant(-1, tf.int64))
            values, top = self._rank(tf.gather(self.user_vectors, safe), tf.stack([starts, ends], 1), single)
            return self._outputs(rows, values, top)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="items")])
        def similar(self, items):
            rows = self.item_table.lookup(items)
            safe = tf.maximum(rows, 0)
            none = tf.zeros([tf.shape(rows)[0], 2], tf.int64)
            values, top = self._rank(tf.gather(self.item_vectors, safe), none, rows)
            return self._outputs(rows, values, top)

    return Serving()


def export_saved_model(
    rec: Recommender,
    export_dir: str,
    k: int = 10,
    *,
    overwrite: bool = False,
    memory_bytes: int = 256 << 20,
    info: dict | None = None,
) -> str:
    """Writes the recommender as a SavedModel (see the module docstring) and returns ``export_dir``.

    Args:
        rec: a `Recommender` (its seen items are the ones excluded; its index is not used: serving is exact).
        export_dir: output directory; must not exist or be empty unless ``overwrite``.
        k: items per query, 1 <= k <= n_items - 1 (``similar_items`` excludes the item itself).
        overwrite: replace an existing export_dir.
        memory_bytes: bound on a serving block of ``[block, n_items]`` float32 scores.
        info: extra entries for ``cml_tf_export.json``.

    Raises:
        RecommendError: bad k, export_dir not empty.
    """
    import tensorflow as tf

    from cml_tf.io import write_json_atomic

    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise RecommendError(f"--k must be a positive integer, got {k!r}")
    if k > rec.n_items - 1:
        raise RecommendError(f"--k={k} exceeds the catalogue less the queried item ({rec.n_items - 1:,} items)")
    if os.path.exists(export_dir) and (not os.path.isdir(export_dir) or os.listdir(export_dir)):
        if not overwrite:
            raise RecommendError(f"--export_dir={export_dir} exists and is not empty; use --overwrite to replace it")
        shutil.rmtree(export_dir) if os.path.isdir(export_dir) else os.unlink(export_dir)
    module = _serving_module(rec, int(k), memory_bytes)
    tmp = export_dir.rstrip(os.sep) + ".tmp-export"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve, "similar_items": module.similar})
    write_json_atomic(
        os.path.join(tmp, EXPORT_INFO),
        {"k": int(k), "users": rec.n_users, "items": rec.n_items, "dim": int(rec.item_vectors.shape[1])} | (info or {}),
    )
    if os.path.isdir(export_dir):
        os.rmdir(export_dir)  # empty (checked above)
    os.replace(tmp, export_dir)
    return export_dir
