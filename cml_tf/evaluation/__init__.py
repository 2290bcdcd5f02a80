"""Evaluation: ranking metrics (``metrics``), full-ranking evaluation with masking (``evaluator``), score
functions (``scores``), the top-k lists a run keeps (``toplists``) and clustering metrics (``clustering``)."""

from cml_tf import lazy_exports

__getattr__ = lazy_exports(__name__, {"Evaluator": "cml_tf.evaluation.evaluator"})
