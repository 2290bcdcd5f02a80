"""Compatibility module: the CML model now lives in `cml_tf.models` (one file per model, a shared base)."""

from cml_tf.models.base import FIRST_NONFINITE_STEP, GEOMETRIES, FirstNonFiniteStep
from cml_tf.models.cml import CML

__all__ = ["CML", "FIRST_NONFINITE_STEP", "GEOMETRIES", "FirstNonFiniteStep"]
