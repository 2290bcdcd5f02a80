"""cml_tf: Collaborative Metric Learning with efficient negative sampling, in TensorFlow 2 / Keras 3.

The package follows the data flow: ``data`` (raw files -> `Interactions` -> splits) -> ``sampling`` (negatives,
the tf.data stream) -> ``models`` (tables, losses, the training step) -> ``evaluation`` (metrics, the evaluator) ->
``training`` (config, one run end to end, its directory) -> ``serving`` (recommendations, SavedModel, retrieval).
The commands are ``python -m cml_tf.train``, ``.recommend``, ``.export`` and ``.stats`` (``cli`` holds what they
share).

From Python: ``cml_tf.Config(preset="accurate", dataset=..., data_path=...)`` (also ``cml_tf.training.Config``),
``cml_tf.training.train(config, model_dir)`` (``cml_tf.train`` is the command), ``cml_tf.Recommender``.
``import cml_tf`` does not import TensorFlow; ``train`` and ``Recommender`` import it quietly (`import_tensorflow`).
"""

from __future__ import annotations

import importlib
import os
import sys

__version__ = "0.1.0"


def import_tensorflow(verbose: bool = False):
    """Imports and returns TensorFlow (and Keras) with their start-up lines hidden unless ``verbose``.

    Importing TensorFlow prints start-up lines on every machine (``cudart_stub.cc … Could not find cuda drivers``,
    ``cuda_platform.cc … failed call to cuInit: … CUDA error`` on a CPU machine), some from C++ code that logs
    before its logging is initialised and ignores ``TF_CPP_MIN_LOG_LEVEL``. Unless ``verbose``, this sets that
    variable to 3 where it is not set (for the C++ log lines of the run itself) and points file descriptor 2 at
    ``/dev/null`` while the import runs; Python's own error output is restored before anything can fail in Python.
    Nothing happens where TensorFlow is imported already.
    """
    if verbose or "tensorflow" in sys.modules:
        import keras  # noqa: F401
        import tensorflow

        return tensorflow
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import keras  # noqa: F401
        import tensorflow
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return tensorflow


def lazy_exports(package: str, names: dict[str, str], tensorflow: tuple[str, ...] = ()):
    """A module ``__getattr__`` that imports ``names`` (attribute -> module) on first use, so that importing a
    package does not import TensorFlow (the commands check their flags before it loads).

    The modules of the attributes in ``tensorflow`` import TensorFlow: for a Python user it is imported first by
    `import_tensorflow`, quietly, unless the user chose TensorFlow's log level (``TF_CPP_MIN_LOG_LEVEL`` set).
    """

    def __getattr__(name):
        if name in names:
            if name in tensorflow:
                import_tensorflow(verbose="TF_CPP_MIN_LOG_LEVEL" in os.environ)
            return getattr(importlib.import_module(names[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


__getattr__ = lazy_exports(
    __name__,
    {
        "Config": "cml_tf.training.config",
        "PRESETS": "cml_tf.training.config",
        "Recommender": "cml_tf.serving.recommender",
    },
    tensorflow=("Recommender",),
)
