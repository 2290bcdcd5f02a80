"""The fields a run does not read, and why: the one rule behind the commands' refusals (``--hinge does not apply to
--loss=softmax``) and ``config.json``'s None for those fields (`cml_tf.training.config.Config.to_dict`)."""

from __future__ import annotations

import dataclasses

#: Config fields that only some models read: field -> the models that read it
MODEL_FIELDS = {
    "num_memories": ("lrml", "hlr"),
    "max_num_prefs": ("attcml", "hlr"),
    "transcf_neighbour_weight": ("transcf",),
    "transcf_distance_weight": ("transcf",),
}
#: CML+F's settings, read only with ``features``
FEATURE_FIELDS = ("feature_min_count", "feature_l2_reg", "feature_scale", "feature_dropout", "feature_hidden_dim")


def unused_fields(config) -> dict[str, str]:
    """The fields the run of ``config`` (a `cml_tf.training.config.Config`, which imports this module) does not read,
    each with why (``field -> "does not apply to ..."``).

    Decided by ``model``, ``split``, ``sampler``, ``loss``, ``geometry`` and ``features``, which are always read, and
    by ``temperature_probe`` and ``user_history_weight``, which switch on their companion fields.
    The commands refuse these fields given as flags (``--hinge does not apply to --loss=softmax ...``), and
    ``config.json`` holds None for them.
    """
    why: dict[str, str] = {}

    def unused(names, reason):
        for name in names:
            why.setdefault(name, reason)

    for name, models in MODEL_FIELDS.items():
        if config.model not in models:
            unused(
                [name],
                f"does not apply to --model={config.model} (only {' and '.join(f'--model={m}' for m in models)})",
            )
    if config.split != "fo":
        unused(["test_fraction"], f"does not apply to --split={config.split} (only fo)")
    if config.split == "fo":
        unused(["num_folds", "fold"], "does not apply to --split=fo (one random split of the interactions)")
    if config.split == "given":
        unused(["num_folds", "fold"], "does not apply to --split=given (the split is read from its files)")
    else:
        unused(["train_path", "valid_path", "test_path"], f"does not apply to --split={config.split} (only given)")
    if config.split == "original":
        unused(
            ["num_folds", "fold", "valid_fraction"],
            "does not apply to --split=original (CollMetric's fixed 3:1:1 split); drop it, or use --split=kfold",
        )
    stage2 = [f.name for f in dataclasses.fields(config) if f.name.startswith("stage2_")]
    if config.sampler != "2stage":
        unused(
            ["num_candidates", *stage2],
            f"does not apply to --sampler={config.sampler} (only 2stage has stage-1 candidates)",
        )
    if config.loss != "softmax":
        unused(
            ["temperature", "learn_temperature", "softmax_in_batch", "temperature_probe", "temperature_probe_epochs"],
            f"does not apply to --loss={config.loss} (only softmax)",
        )
    if not config.temperature_probe:
        unused(["temperature_probe_epochs"], "does not apply without --temperature_probe")
    if config.loss == "softmax":
        unused(["hinge", *stage2], "does not apply to --loss=softmax (the softmax reads the whole stage-1 pool)")
        unused(["margin"], "does not apply to --loss=softmax (the margin α is the hinge's)")
        if config.sampler in ("2stage", "in_batch"):
            pool = "the stage-1 candidates" if config.sampler == "2stage" else "the batch's positives"
            unused(
                ["num_negatives"],
                f"does not apply to --loss=softmax with --sampler={config.sampler} (the pool of negatives is {pool})",
            )
    if config.sampler != "dns":
        unused(["dns_k"], f"does not apply to --sampler={config.sampler} (only dns)")
    if not config.user_history_weight:
        unused(["user_history_size"], "does not apply without --user_history_weight (the user tower)")
    if config.sampler != "popular":
        unused(["batch_distinct_negatives"], f"does not apply to --sampler={config.sampler} (only popular)")
    if config.sampler not in ("popular", "2stage"):
        unused(
            ["beta", "popularity_smoothing", "popularity_uniform_mix"],
            f"does not apply to --sampler={config.sampler} (only popular and 2stage weigh items by popularity)",
        )
    if config.features is None:
        unused(FEATURE_FIELDS, "does not apply without --features (CML+F)")
        if config.geometry == "sphere":
            unused(["clip_norm"], "does not apply to --geometry=sphere without --features (only the ball and CML+F)")
    return why
