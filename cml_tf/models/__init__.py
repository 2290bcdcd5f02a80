"""The models: CML and its relational successors, one file each, on a shared base (`cml_tf.models.base`).

========  ==========================================================================  ===========================
name      score                                                                       extra hyper-parameters
========  ==========================================================================  ===========================
cml       ``−‖u − v‖²``                                                               –
lrml      ``−‖u + r − v‖²``, ``r = softmax((u ⊙ v) K) · Mem``                          num_memories
transcf   ``r = mean(u's items) ⊙ mean(v's users)``, + two regularisers               transcf_*_weight
attcml    ``r = Σ_j softmax_j(⟨p_j, v⟩) p_j`` over u's reference items                max_num_prefs
hlr       ``r = Σ_p softmax_p(⟨r_p, u⟩) r_p``, ``r_p = softmax((v ⊙ x_p) K) · Mem``    max_num_prefs, num_memories
========  ==========================================================================  ===========================
"""

from __future__ import annotations

from cml_tf.models.attcml import AttCML
from cml_tf.models.base import MetricModel
from cml_tf.models.cml import CML
from cml_tf.models.hlr import HLR
from cml_tf.models.lrml import LRML
from cml_tf.models.relational import RelationalModel
from cml_tf.models.transcf import TransCF

#: --model name -> class
MODELS = {"cml": CML, "lrml": LRML, "transcf": TransCF, "attcml": AttCML, "hlr": HLR}

__all__ = ["AttCML", "CML", "HLR", "LRML", "MODELS", "MetricModel", "RelationalModel", "TransCF"]
