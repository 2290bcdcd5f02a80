"""The sampled softmax's matrix products alone, in float32 and bfloat16, by TensorFlow's kernels and by XLA.

    python -m experiments.bench matmul                                   # B = 256 and 1024, C = 2000, d = 128
    python -m experiments.bench matmul --batch_sizes=1024 --rounds=9

A softmax step over a shared pool multiplies three times: the logits [B, d] x [d, C] and their two gradients
([B, C] x [C, d], [C, B] x [B, d]), 3·B·C·d multiply-adds. This times exactly those three products (inputs cast to
the dtype, results summed in float32) as one `tf.function`, once with TensorFlow's own kernels (oneDNN on x86) and
once compiled by XLA (``jit_compile=True``, as `cml_tf.models.step` compiles the fused softmax step), in float32
and in bfloat16. Reports the median ms of ``--rounds`` rounds of ``--calls`` calls, the multiply-adds per second
and each one's time against float32 by TensorFlow's kernels in the same round: what a bfloat16 logits path would buy
on this CPU before its accuracy is looked at.
"""

from __future__ import annotations

import time

from experiments.bench.flags import names
from experiments.bench.report import Table, median, spread

DTYPES = ("float32", "bfloat16")


def add_arguments(p) -> None:
    """The matmul benchmark's flags."""
    p.add_argument("--batch_sizes", type=names, default=["256", "1024"], help="comma list of B")
    p.add_argument("--candidates", type=int, default=2000, help="C, the shared pool's size")
    p.add_argument("--dim", type=int, default=128, help="d")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=50, help="calls timed per round")


def three_products(dtype):
    """The function timed: (u [B, d], v [C, d], g [B, C]) -> the sum of u vᵀ, g v and gᵀ u, each cast to float32."""
    import tensorflow as tf

    def f(u, v, g):
        u, v, g = (tf.cast(x, dtype) for x in (u, v, g))
        products = (tf.matmul(u, v, transpose_b=True), tf.matmul(g, v), tf.matmul(g, u, transpose_a=True))
        return tf.add_n([tf.reduce_sum(tf.cast(p, tf.float32)) for p in products])

    return f


def run(args) -> list[Table]:
    """One table: a row per batch size x kernels x dtype."""
    import tensorflow as tf

    from cml_tf.cli import console

    if args.rounds < 1 or args.calls < 1 or args.candidates < 1 or args.dim < 1:
        console.fail("--rounds, --calls, --candidates and --dim must be positive")
    try:
        batches = [int(b) for b in args.batch_sizes]
    except ValueError:
        console.fail(f"--batch_sizes: expected whole numbers, got {','.join(args.batch_sizes)}")
    rows = []
    for batch in batches:
        rng = tf.random.Generator.from_seed(0)
        inputs = (
            rng.normal([batch, args.dim]),
            rng.normal([args.candidates, args.dim]),
            rng.normal([batch, args.candidates]),
        )
        variants = {
            (xla, dtype): tf.function(three_products(getattr(tf, dtype)), jit_compile=xla)
            for xla in (False, True)
            for dtype in DTYPES
        }
        for f in variants.values():
            f(*inputs).numpy()  # trace and compile
        ms: dict = {key: [] for key in variants}
        for _ in range(args.rounds):
            for key, f in variants.items():
                start = time.perf_counter()
                for _ in range(args.calls):
                    f(*inputs).numpy()
                ms[key].append((time.perf_counter() - start) / args.calls * 1e3)
        base = ms[(False, "float32")]
        macs = 3 * batch * args.candidates * args.dim
        for (xla, dtype), values in ms.items():
            rows.append(
                {
                    "B": batch,
                    "kernels": "XLA" if xla else "TensorFlow (oneDNN)",
                    "dtype": dtype,
                    "ms": median(values),
                    "ms min..max": spread(values),
                    "GMAC/s": macs / median(values) / 1e6,
                    "/ float32 TF": median([v / b for v, b in zip(values, base)]),
                }
            )
    heading = (
        f"The softmax step's three products (C={args.candidates}, d={args.dim}): median of {args.rounds} rounds of "
        f"{args.calls} calls"
    )
    columns = ["B", "kernels", "dtype", "ms", "ms min..max", "GMAC/s", "/ float32 TF"]
    return [Table(heading, columns, rows, digits={"/ float32 TF": 2})]
