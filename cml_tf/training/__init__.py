"""Training: the run's `Config` (``config``), its data (``data``), the optimizers, tf.distribute, one run end to
end (``run.train``), its callbacks, what it writes (``outputs``) and how the notebooks read it (``rundirs``).

``from cml_tf.training import Config, train`` is the Python entry point (``train(config, model_dir)``); importing
``train`` imports TensorFlow without its start-up lines (`cml_tf.import_tensorflow`).
"""

from cml_tf import lazy_exports

__getattr__ = lazy_exports(
    __name__,
    {"Config": "cml_tf.training.config", "PRESETS": "cml_tf.training.config", "train": "cml_tf.training.run"},
    tensorflow=("train",),
)
