"""cml_tf: Collaborative Metric Learning with efficient negative sampling, in TensorFlow 2 / Keras 3.

The package follows the data flow: ``data`` (raw files -> `Interactions` -> splits) -> ``sampling`` (negatives,
the tf.data stream) -> ``models`` (tables, losses, the training step) -> ``evaluation`` (metrics, the evaluator) ->
``training`` (config, one run end to end, its directory) -> ``serving`` (recommendations, SavedModel, retrieval).
The commands are ``python -m cml_tf.train``, ``.recommend``, ``.export`` and ``.stats`` (``cli`` holds what they
share).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"


def lazy_exports(package: str, names: dict[str, str]):
    """A module ``__getattr__`` that imports ``names`` (attribute -> module) on first use, so that importing a
    package does not import TensorFlow (the commands check their flags before it loads)."""

    def __getattr__(name):
        if name in names:
            return getattr(importlib.import_module(names[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


__getattr__ = lazy_exports(__name__, {"Recommender": "cml_tf.serving.recommender"})
