"""cml_tf: Collaborative Metric Learning with efficient negative sampling, in TensorFlow 2 / Keras 3."""

__version__ = "0.1.0"
