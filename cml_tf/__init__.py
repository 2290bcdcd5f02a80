"""cml_tf: Collaborative Metric Learning with efficient negative sampling, in TensorFlow 2 / Keras 3."""

__version__ = "0.1.0"


def __getattr__(name):
    # `cml_tf.Recommender` without importing it (and scipy) with the package
    if name == "Recommender":
        from cml_tf.recommender import Recommender

        return Recommender
    raise AttributeError(f"module 'cml_tf' has no attribute {name!r}")
