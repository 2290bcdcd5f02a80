"""The default run directory of ``python -m cml_tf.train``: named after what tells runs apart."""

from __future__ import annotations

import os
import re

from cml_tf.training.config import Config
from cml_tf.training.unused import unused_fields


def default_model_dir(config: Config, preset: str = "paper") -> str:
    """``runs/<dataset>[-<data file>][-<preset>][-<model>]-<sampler>[-softmax]-b<B>[-n<N>]-<split>``.

    The data file's name (without its extension) appears when ``data_path`` names a file (not a directory), so
    two files of one data set get two directories; the preset when it is not ``paper``; the model when it is not
    ``cml``; the loss when it is not ``hinge``; ``n<N>`` where |N_ij| is read (not by the softmax over the 2stage
    candidates or the in-batch positives). ``<split>`` is ``kfold<fold>``, ``original`` or ``fo``.
    """
    parts = [config.dataset]
    if config.data_path and not os.path.isdir(config.data_path):
        stem = os.path.basename(os.path.normpath(config.data_path)).removesuffix(".gz").rsplit(".", 1)[0]
        parts.append(re.sub(r"[^A-Za-z0-9_.-]+", "_", stem))
    if preset != "paper":
        parts.append(preset)
    if config.model != "cml":
        parts.append(config.model)
    parts.append(config.sampler)
    if config.loss != "hinge":
        parts.append(config.loss)
    parts.append(f"b{config.batch_size}")
    if "num_negatives" not in unused_fields(config):
        parts.append(f"n{config.num_negatives}")
    parts.append(f"{config.split}{config.fold if config.split == 'kfold' else ''}")
    return os.path.join("runs", "-".join(parts))
