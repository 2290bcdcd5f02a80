"""Train CML: ``python -m cml_tf.train --dataset=echonest --data_path=... --sampler=2stage``.

With no flags it trains on the embedded synthetic data set (about a minute on 2 CPU cores). Flags only live here;
they build a `cml_tf.config.Config` that `cml_tf.training.train` runs. Run the same command again to resume an
interrupted run from its last checkpoint.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported: no C++ INFO lines

import dataclasses
import json
import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging

from cml_tf import data_flags  # noqa: F401  (defines --dataset, --data_path and the filter flags)
from cml_tf.config import PRESETS, REFRESH_NEVER, Config
from cml_tf.interactions import DataError

_D = Config()

flags.DEFINE_enum(
    "preset",
    "paper",
    sorted(PRESETS),
    "Starting point for every other flag: the paper's settings "
    "or CollMetric's CML.py. Flags given explicitly override the preset.",
)
flags.DEFINE_enum(
    "split",
    _D.split,
    ["kfold", "original"],
    "kfold: per-user K-fold (--fold of --num_folds); original: CollMetric's per-user 3:1:1 train/valid/test.",
)
flags.DEFINE_integer("num_folds", _D.num_folds, "K of the per-user K-fold split.")
flags.DEFINE_integer("fold", _D.fold, "Which fold is the test set (0-based).")
flags.DEFINE_float(
    "valid_fraction", _D.valid_fraction, "Fraction of each user's training items held out for validation (kfold split)."
)
flags.DEFINE_string("sampler", _D.sampler, "Negative sampler: uniform, popular or 2stage.")
flags.DEFINE_integer("batch_size", _D.batch_size, "Positive pairs per step.")
flags.DEFINE_integer("num_negatives", _D.num_negatives, "|N_ij|: negatives per positive pair.")
flags.DEFINE_integer("num_candidates", _D.num_candidates, "C: stage-1 candidates per batch (2stage).")
flags.DEFINE_float("beta", _D.beta, "Popularity exponent β of the popular and 2-stage samplers.")
flags.DEFINE_float(
    "popularity_smoothing",
    _D.popularity_smoothing,
    "Added to item counts before ^β; 0 never draws items absent from training (the original's behaviour).",
)
flags.DEFINE_string(
    "stage2_weight_cap",
    str(_D.stage2_weight_cap).lower(),
    "2stage: λ of Wu et al.'s min(λ, q(s)^-1), the cap on the inverse-density weight in units of its value at s = 0 "
    "(1 = uniform over the candidates with s >= 0; 'none' = uncapped, the paper taken literally, which is "
    "hardest-negative mining at d = 128). The default was chosen by experiments/stage2_sweep.py.",
)
flags.DEFINE_float(
    "stage2_cutoff",
    _D.stage2_cutoff,
    "2stage: D_min, ignore candidates closer than this distance to the positive on the unit sphere "
    "(D = sqrt(2 - 2s); 0 = off).",
)
flags.DEFINE_string(
    "stage2_refresh_every",
    str(_D.stage2_refresh_every),
    "2stage: the item table stage 2 reads: 0 = the current one at every step; K = a copy refreshed every K steps; "
    "'never' = the copy made at initialisation (what the original code's forked sampler workers read).",
)
flags.DEFINE_integer(
    "split_seed",
    None,
    "Seed of the split alone (default 1 for --split=original, CollMetric's split; 0 for kfold). --seed does not "
    "change the split, so several training seeds share one split.",
)
flags.DEFINE_integer("embedding_dim", _D.embedding_dim, "d.")
flags.DEFINE_float("margin", _D.margin, "Hinge margin α.")
flags.DEFINE_float("learning_rate", _D.learning_rate, "Learning rate.")
flags.DEFINE_string("optimizer", _D.optimizer, "adam (paper), adagrad (CollMetric) or sgd.")
flags.DEFINE_bool(
    "sparse_updates",
    _D.sparse_updates,
    "Lazy row-sparse optimizer updates (O(batch) per step); "
    "--nosparse_updates uses Keras' exact dense optimizer (O(catalog) per step).",
)
flags.DEFINE_float(
    "gor_weight",
    None,
    "λ_g of Global Orthogonal Regularisation; default the paper's: 0.01 for "
    "|N_ij| in {1, 2}, 0.001 otherwise; 0 disables.",
)
flags.DEFINE_string(
    "geometry", _D.geometry, "sphere (paper: unit-normalised rows) or ball (CollMetric: rows clipped to norm <= 1)."
)
flags.DEFINE_bool("use_rank_weight", _D.use_rank_weight, "CollMetric's WARP rank weight log(rank + 1).")
flags.DEFINE_float("cov_loss_weight", _D.cov_loss_weight, "Covariance loss weight (0 disables).")
flags.DEFINE_float("init_stddev", None, "Std of the normal embedding initialiser (default 1/sqrt(d)).")
flags.DEFINE_string("features", None, "CML+F item features: 'tags' (citeulike-t tag-item.dat beside users.dat).")
flags.DEFINE_integer("feature_min_count", _D.feature_min_count, "CML+F: keep tags used at least this many times.")
flags.DEFINE_float("feature_l2_reg", _D.feature_l2_reg, "CML+F: feature loss weight.")
flags.DEFINE_float("feature_scale", _D.feature_scale, "CML+F: projection scale (applied before the clip).")
flags.DEFINE_float("feature_dropout", _D.feature_dropout, "CML+F: dropout on the MLP's hidden layer.")
flags.DEFINE_integer("feature_hidden_dim", _D.feature_hidden_dim, "CML+F: hidden units of the MLP.")
flags.DEFINE_float(
    "clip_norm", _D.clip_norm, "Radius of the ball (--geometry=ball) and bound of the CML+F projections."
)
flags.DEFINE_float("epochs", _D.epochs, "Passes over the training pairs (ignored when --max_steps is set).")
flags.DEFINE_integer("max_steps", None, "Training steps (overrides --epochs).")
flags.DEFINE_integer("eval_every", _D.eval_every, "Validation evaluation (and checkpoint) every N steps.")
flags.DEFINE_integer("eval_users", None, "Evaluate a seeded sample of this many validation users (default all).")
flags.DEFINE_integer("k", _D.k, "Cut-off of the ranking metrics.")
flags.DEFINE_integer(
    "early_stopping_patience",
    _D.early_stopping_patience,
    "Stop after this many evaluations without a better validation NDCG@k (0: never).",
)
flags.DEFINE_integer(
    "steps_per_execution",
    _D.steps_per_execution,
    "Training steps per compiled call (amortises Python overhead; results do not depend on it).",
)
flags.DEFINE_integer("seed", _D.seed, "Seed of every random operation (split, init, sampling).")
flags.DEFINE_string("strategy", _D.strategy, "tf.distribute strategy: default, mirrored or multi_worker (TF_CONFIG).")
flags.DEFINE_string("model_dir", None, "Run directory (default runs/<dataset>-<sampler>-b<batch>-n<neg>-f<fold>).")
flags.DEFINE_bool("overwrite", False, "Discard an existing run in --model_dir instead of resuming it.")
flags.DEFINE_integer("verbose", 1, "1: progress bar; 2: one line per evaluation; 0: silent.")

FLAGS = flags.FLAGS

# flag name -> Config field, for the flags that map one to one.
# flags parsed from text: stage2_weight_cap ('none' = uncapped), stage2_refresh_every ('never')
_PARSED_FLAGS = ("stage2_weight_cap", "stage2_refresh_every")
_CONFIG_FLAGS = [f.name for f in dataclasses.fields(Config) if f.name not in ("dataset_options", *_PARSED_FLAGS)]


def config_from_flags(flag_values=FLAGS) -> Config:
    """Builds the run's Config: the preset, then every flag the user set explicitly (and the data flags)."""
    name, options = data_flags.options_from_flags(flag_values)
    values = dict(PRESETS[flag_values.preset])
    for field in _CONFIG_FLAGS:
        if field in flag_values and (flag_values[field].present or field not in values):
            values[field] = flag_values[field].value
    values["dataset"] = name
    values["dataset_options"] = options
    if flag_values["stage2_weight_cap"].present:
        values["stage2_weight_cap"] = _parse_weight_cap(flag_values.stage2_weight_cap)
    if flag_values["stage2_refresh_every"].present:
        values["stage2_refresh_every"] = _parse_refresh(flag_values.stage2_refresh_every)
    config = Config(**values)
    config.validate()
    return config


def _parse_weight_cap(text: str) -> float | None:
    text = text.strip().lower()
    if text in ("none", "inf", "infinity"):
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--stage2_weight_cap: expected a number >= 1 or 'none', got {text!r}") from None


def _parse_refresh(text: str) -> int:
    text = text.strip().lower()
    if text == "never":
        return REFRESH_NEVER
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"--stage2_refresh_every: expected an integer >= 0 or 'never', got {text!r}") from None
    if value < 0:
        raise ValueError(f"--stage2_refresh_every: expected an integer >= 0 or 'never', got {value}")
    return value


def default_model_dir(config: Config) -> str:
    return os.path.join(
        "runs",
        f"{config.dataset}-{config.sampler}-b{config.batch_size}-n{config.num_negatives}-"
        f"{config.split}{config.fold if config.split == 'kfold' else ''}",
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    absl_logging.set_verbosity(absl_logging.WARNING)  # e.g. TensorFlow's per-checkpoint INFO lines
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        config = config_from_flags()
    except (ValueError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    from cml_tf import training  # TensorFlow is imported only once the flags are known to be good

    model_dir = FLAGS.model_dir or default_model_dir(config)
    try:
        interactions = data_flags.load_interactions_from_flags(FLAGS)
        split = training.split_data(config, interactions)
        print(
            f"{config.dataset}: {interactions.n_users:,} users x {interactions.n_items:,} items; "
            f"split {config.split}: {split.summary()}",
            file=sys.stderr,
        )
        results = training.train(
            config, model_dir, data=(interactions, split), overwrite=FLAGS.overwrite, verbose=FLAGS.verbose
        )
    except (ValueError, DataError, training.RunError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"model_dir": model_dir, **results}, indent=2, sort_keys=True))
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
