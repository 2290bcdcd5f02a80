"""CML (Hsieh et al., WWW 2017) with the 2-stage sampler of Tran et al. (SIGIR 2019): score ``−‖u − v‖²``.

Everything CML needs is the shared machinery of `cml_tf.models.base.MetricModel` with no relation (r = 0), which
is why the evaluator ranks it with one matmul per batch of users.
"""

from __future__ import annotations

from cml_tf.models.base import MetricModel


class CML(MetricModel):
    """Collaborative Metric Learning; the arguments are `MetricModel`'s."""


__all__ = ["CML"]
