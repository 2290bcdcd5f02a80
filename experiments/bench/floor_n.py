"""The speed floor of ../shared/bench/floor.py at any |N_ij|: a bare TensorFlow 2-stage CML step.

    python experiments/bench/floor_n.py N_USERS N_ITEMS [BATCH [NUM_NEGATIVES]]   ->  ms/step and positive pairs/s

The same step as the shared floor (stage 1: C = 2000 popularity candidates by ``tf.random.categorical``; forward
and backward of the triplet hinge, min over the negatives; stage 2: ``tf.random.categorical`` over the inverse-
density logits of the s > 0 candidates; NO optimizer update), with |N_ij| negatives per positive drawn by that
categorical (independent draws). At |N_ij| = 1 it is the shared floor. A stand-alone script (run in a fresh process
by `experiments.bench.timing.run_floor`), not a subcommand.
"""

import sys
import time

import numpy as np
import tensorflow as tf

n_users, n_items = int(sys.argv[1]), int(sys.argv[2])
B = int(sys.argv[3]) if len(sys.argv) > 3 else 256
N = int(sys.argv[4]) if len(sys.argv) > 4 else 1
d, C = 128, 2000
rng = np.random.default_rng(0)
U = tf.Variable(tf.random.normal([n_users, d], stddev=0.1))
V = tf.Variable(tf.random.normal([n_items, d], stddev=0.1))
log_pop = tf.constant(np.log(rng.zipf(1.5, n_items).clip(1, 1e5)).astype(np.float32))


@tf.function
def step(u, p):
    cand = tf.random.categorical(log_pop[None, :], C)[0]  # stage 1: [C]
    with tf.GradientTape() as tape:
        ue = tf.math.l2_normalize(tf.gather(U, u), -1)  # [B, d]
        pe = tf.math.l2_normalize(tf.gather(V, p), -1)  # [B, d]
        ce = tf.math.l2_normalize(tf.gather(V, cand), -1)  # [C, d]
        s = tf.clip_by_value(tf.stop_gradient(pe @ tf.transpose(ce)), -0.999, 0.999)  # [B, C]
        logits = tf.where(s > 0, -(d - 3) / 2 * tf.math.log1p(-s * s), -1e9)  # inverse density
        neg = tf.gather(ce, tf.random.categorical(logits, N))  # stage 2: [B, N, d]
        dp = tf.reduce_sum(tf.square(ue - pe), -1)
        dn = tf.reduce_min(tf.reduce_sum(tf.square(ue[:, None] - neg), -1), -1)
        loss = tf.reduce_sum(tf.nn.relu(dp - dn + 1.0))
    return tape.gradient(loss, [U, V])


u = tf.constant(rng.integers(0, n_users, B))
p = tf.constant(rng.integers(0, n_items, B))
for _ in range(5):
    step(u, p)
n = 50
t = time.perf_counter()
for _ in range(n):
    step(u, p)
dt = (time.perf_counter() - t) / n
print(f"floor: users={n_users} items={n_items} B={B} N={N}: {dt * 1e3:.2f} ms/step, {B / dt:,.0f} pos pairs/s")
