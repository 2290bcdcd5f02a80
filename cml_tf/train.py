"""Train CML: ``python -m cml_tf.train --dataset=echonest --data_path=... --sampler=2stage``.

With no flags it trains on the embedded synthetic data set (about a minute on 2 CPU cores). Flags only live here;
they build a `cml_tf.training.config.Config` that `cml_tf.training.train` runs. Run the same command again to resume an
interrupted run from its last checkpoint.

Everything that can be checked runs before TensorFlow is imported (flags, the data file and its filters), and the
data-dependent checks run before the run directory is created. Only cml_tf's own lines (stderr) and the progress
(stdout, then the results as JSON) are printed; ``-v 1`` adds TensorFlow's start-up and log lines.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys

from absl import app, flags

# data_flags defines --dataset, --data_path and the filter flags
from cml_tf.cli import console, data_flags, parse
from cml_tf.cli.help import grouped_help
from cml_tf.cli.model_dir import default_model_dir
from cml_tf.data.interactions import DataError
from cml_tf.data.loaders.filters import NothingLeft
from cml_tf.messages import use_flag_names
from cml_tf.training.config import GIVEN_SPLIT_DATASETS, MODEL_NAMES, PRESETS, Config
from cml_tf.training.unused import unused_fields

_D = Config()

flags.DEFINE_enum(
    "preset",
    "paper",
    sorted(PRESETS),
    "Starting point for every other flag: paper (the paper's settings), original (the samplers as the original "
    "code runs them: uncapped stage 2 on a never-refreshed table, batch-distinct popular negatives, no GOR), "
    "collmetric / collmetric_f (CollMetric's CML.py), accurate (the most accurate found: --loss=softmax over the "
    "2stage candidates, --epochs=50, τ picked on validation by --temperature_probe=0.5,0.2). Flags given explicitly "
    "override the preset; give it once. Recorded in config.json.",
)
flags.DEFINE_string(
    "model",
    _D.model,
    f"Model: {', '.join(MODEL_NAMES)} (docs/models.md). cml scores -||u - v||^2; the others translate the user by a "
    "relation r(u, v) and score -||u + r - v||^2.",
)
flags.DEFINE_integer("num_memories", _D.num_memories, "lrml, hlr: M, memory slots of the latent relations.")
flags.DEFINE_integer("max_num_prefs", _D.max_num_prefs, "attcml, hlr: P, reference items per user (a seeded sample).")
flags.DEFINE_float("transcf_neighbour_weight", _D.transcf_neighbour_weight, "transcf: neighbourhood regulariser α_nbr.")
flags.DEFINE_float("transcf_distance_weight", _D.transcf_distance_weight, "transcf: distance regulariser α_dist.")
flags.DEFINE_enum(
    "split",
    _D.split,
    ["kfold", "original", "fo", "given"],
    "kfold: per-user K-fold (--fold of --num_folds); original: CollMetric's per-user 3:1:1 train/valid/test; "
    "fo: the HLR reference code's random split of interactions (--test_fraction, then --valid_fraction of the rest); "
    "given: the split in files (--dataset=lightgcn|recbole --data_path=DIR, where it is the default, or "
    "--train_path/--test_path[/--valid_path]; docs/given_splits.md).",
)
flags.DEFINE_enum(
    "protocol",
    None,
    ["cml", "reference"],
    "Test ranking: cml masks training + validation items; reference masks the training file's items only "
    "(LightGCN's code). Default: reference for --split=given, else cml.",
)
flags.DEFINE_float("test_fraction", _D.test_fraction, "fo split: share of the interactions in the test set.")
flags.DEFINE_integer("num_folds", _D.num_folds, "K of the per-user K-fold split.")
flags.DEFINE_integer("fold", _D.fold, "Which fold is the test set (0-based).")
flags.DEFINE_float(
    "valid_fraction", _D.valid_fraction, "Fraction of each user's training items held out for validation (kfold split)."
)
flags.DEFINE_string(
    "sampler",
    _D.sampler,
    "Negative sampler: uniform, popular, 2stage, side_info (items sharing a genre / tag with the positive), dns (the "
    "hardest of --dns_k uniform draws by the current scores) or in_batch (the batch's other positives).",
)
flags.DEFINE_integer("batch_size", _D.batch_size, "Positive pairs per step.")
flags.DEFINE_integer(
    "num_negatives",
    _D.num_negatives,
    "|N_ij|: negatives per positive pair (with --loss=softmax: the per-row negatives of the uniform, popular and "
    "side_info samplers; refused with 2stage and in_batch, whose pool is the candidates or the batch's positives).",
)
flags.DEFINE_integer("num_candidates", _D.num_candidates, "C: stage-1 candidates per batch (2stage).")
flags.DEFINE_float("beta", _D.beta, "Popularity exponent β of the popular and 2-stage samplers.")
flags.DEFINE_float(
    "popularity_smoothing",
    _D.popularity_smoothing,
    "Added to item counts before ^β; 0 never draws items absent from training (the original's behaviour).",
)
flags.DEFINE_float(
    "popularity_uniform_mix",
    _D.popularity_uniform_mix,
    "popular, 2stage: ε, draw items (stage-1 candidates for 2stage) from (1 - ε)·popularity^β + ε·uniform over the "
    "catalog (0 = popularity alone).",
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
flags.DEFINE_bool(
    "stage2_mask_opposite",
    _D.stage2_mask_opposite,
    "2stage: candidates pointing away from the positive (s < 0) get weight 0, as in the paper and the original "
    "code; --nostage2_mask_opposite weighs them by w(|s|).",
)
flags.DEFINE_bool(
    "stage2_replacement",
    _D.stage2_replacement,
    "2stage: draw a row's |N_ij| negatives independently (with replacement) instead of successively without.",
)
flags.DEFINE_float(
    "stage2_uniform_mix",
    _D.stage2_uniform_mix,
    "2stage: ρ, draw from (1 - ρ)·w(s) + ρ·uniform over the candidates that are not positives (0 = off).",
)
flags.DEFINE_bool(
    "batch_distinct_negatives",
    _D.batch_distinct_negatives,
    "popular: the batch's B·|N_ij| negatives are distinct items (drawn without replacement over the batch, "
    "positives redrawn), as the original popular sampler draws them.",
)
flags.DEFINE_integer("dns_k", _D.dns_k, "dns: uniform draws per negative; the closest to the user is kept.")
flags.DEFINE_enum(
    "loss",
    _D.loss,
    ["hinge", "softmax"],
    "hinge: the triplet hinge over the sampled negatives (the paper); softmax: the sampled softmax over logits "
    "-D²(u,v)/τ of the positive against the batch's pool (the 2stage candidates, the per-row negatives, in-batch "
    "positives), corrected by log q, the user's positives left out.",
)
flags.DEFINE_float(
    "temperature", _D.temperature, "softmax: τ of the logits -D²(u,v)/τ (the start with --learn_temperature)."
)
flags.DEFINE_string(
    "temperature_probe",
    None,
    "softmax: τ values to probe, e.g. 0.5,0.2: each trains --temperature_probe_epochs first, and the one with the best "
    "validation NDCG@k goes on (from its probe's checkpoint) as --temperature; 'none' = off. Default: the preset's "
    "(accurate: 0.5,0.2), else none.",
)
flags.DEFINE_float(
    "temperature_probe_epochs",
    _D.temperature_probe_epochs,
    "softmax: the length of each --temperature_probe run (rounded to whole --eval_every periods).",
)
flags.DEFINE_bool("learn_temperature", _D.learn_temperature, "softmax: train log τ with the tables.")
flags.DEFINE_bool("softmax_in_batch", _D.softmax_in_batch, "softmax: the batch's positives join the pool of negatives.")
flags.DEFINE_enum(
    "hinge",
    _D.hinge,
    ["min", "mean"],
    "The triplet hinge over |N_ij| negatives: min = [D(u,p) - min_k D(u,n_k) + α]+, the hardest (the paper); "
    "mean = one hinge per negative, averaged. Default: mean for --sampler=2stage with --num_negatives > 1 "
    "(the measured best there), else min.",
)
flags.DEFINE_integer(
    "split_seed",
    None,
    "Seed of the split alone (default 1 for --split=original, CollMetric's split; 0 for kfold). --seed does not "
    "change the split, so several training seeds share one split.",
)
flags.DEFINE_integer("embedding_dim", _D.embedding_dim, "d: dimension of the user and item embeddings.")
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
flags.DEFINE_float(
    "init_stddev",
    None,
    "Std of the normal embedding initialiser (default 1e-3 on the sphere, 1/sqrt(d) in the ball; docs/training.md).",
)
flags.DEFINE_float(
    "user_history_weight",
    _D.user_history_weight,
    "g of the user tower (SimpleX's behaviour aggregation): a user is the normalised (1 - g)·u + g·(the mean of its "
    "history items' vectors); 0 = off.",
)
flags.DEFINE_integer(
    "user_history_size", _D.user_history_size, "The user tower's history: a seeded sample of at most N training items."
)
flags.DEFINE_string(
    "features",
    None,
    "CML+F item features: 'tags' (citeulike-t tag-item.dat beside users.dat) or 'genres' (MovieLens 100K u.item).",
)
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
flags.DEFINE_float(
    "max_train_seconds",
    None,
    "Budget of training seconds (evaluation excluded): stop at the first validation past it (default none).",
)
flags.DEFINE_integer("eval_every", _D.eval_every, "Validation evaluation (and checkpoint) every N steps.")
flags.DEFINE_integer("eval_users", None, "Evaluate a seeded sample of this many validation users (default all).")
flags.DEFINE_integer(
    "test_users", None, "Test a sample of this many test users, seeded by the split's seed (default all)."
)
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
flags.DEFINE_string(
    "model_dir",
    None,
    "Run directory (default runs/<dataset>[-<data file>][-<preset>][-<model>]-<sampler>[-softmax]-b<batch_size>"
    "[-n<num_negatives>]-<split>, <split> = kfold<fold> or original or fo, e.g. runs/synthetic-2stage-b256-n1-kfold0; "
    "docs/training.md).",
)
flags.DEFINE_bool("overwrite", False, "Discard an existing run in --model_dir instead of resuming it.")
flags.DEFINE_integer(
    "verbose",
    None,
    "Progress on stdout: 1 a progress bar per validation period, 2 one line per period, 0 none "
    "(default 1 on a terminal, 2 otherwise, e.g. into a log file).",
)
flags.adopt_module_key_flags(data_flags)

FLAGS = flags.FLAGS
log = logging.getLogger("cml_tf")

# flag name -> Config field, for the flags that map one to one.
# flags parsed from text (`cml_tf.cli.parse`)
_PARSED_FLAGS = ("stage2_weight_cap", "stage2_refresh_every", "temperature_probe")
_CONFIG_FLAGS = [
    f.name for f in dataclasses.fields(Config) if f.name not in ("preset", "dataset_options", *_PARSED_FLAGS)
]


def _ignored_flag(config: Config, flag_values) -> str | None:
    """A message for the first explicitly given flag that the run of ``config`` does not read
    (`cml_tf.training.unused.unused_fields`, the rule that also saves those fields as None), else None."""
    unused = unused_fields(config)
    for name in (*_CONFIG_FLAGS, *_PARSED_FLAGS):
        if name in unused and name in flag_values and flag_values[name].present:
            return f"--{name} {unused[name]}"
    return None


def config_from_flags(flag_values=FLAGS) -> Config:
    """Builds the run's Config: the preset, then every flag the user set explicitly (and the data flags).

    Raises ValueError naming the flag for a bad value, or for a flag that the chosen mode ignores.
    """
    use_flag_names()
    name, options = data_flags.options_from_flags(flag_values)
    preset = PRESETS[flag_values.preset]
    values = {}
    for field in _CONFIG_FLAGS:
        if field in flag_values and (flag_values[field].present or field not in preset):
            values[field] = flag_values[field].value
    values["dataset"] = name
    values["dataset_options"] = options
    if name in GIVEN_SPLIT_DATASETS and not flag_values["split"].present:
        values["split"] = "given"  # their files are the split
    if flag_values["stage2_weight_cap"].present:
        values["stage2_weight_cap"] = parse.weight_cap(flag_values.stage2_weight_cap)
    if flag_values["stage2_refresh_every"].present:
        values["stage2_refresh_every"] = parse.refresh_every(flag_values.stage2_refresh_every)
    if flag_values["temperature_probe"].present:
        values["temperature_probe"] = parse.temperatures(flag_values.temperature_probe)
        if values["temperature_probe"] and flag_values["temperature"].present:
            raise ValueError(
                "--temperature and --temperature_probe: give one (the probe chooses --temperature among its values)"
            )
    config = Config(preset=flag_values.preset, **values)
    config.validate()
    ignored = _ignored_flag(config, flag_values)
    if ignored:
        raise ValueError(ignored)
    return config


def _error(message) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def main(argv):
    if len(argv) > 1:
        return _error(f"unexpected arguments: {' '.join(argv[1:])}")
    verbose_logs = FLAGS.verbosity >= 1
    console.setup_logging(verbose_logs)
    try:
        config = config_from_flags()
        split = None
        if config.split == "given":  # the split's files, read and checked before TensorFlow
            from cml_tf.training.data import load_given_split

            interactions, split = load_given_split(config)
        else:
            interactions = data_flags.load_interactions_from_flags(FLAGS)  # before TensorFlow: bad files fail fast
    except NothingLeft as e:
        return _error(f"{e}; {data_flags.filter_hint(config.dataset, config.dataset_options)}")
    except (ValueError, DataError) as e:
        return _error(e)
    console.import_tensorflow(verbose_logs)
    from cml_tf import training
    from cml_tf.training.data import TooLittleData, split_data
    from cml_tf.training.outputs import RunError, interrupted_message

    model_dir = FLAGS.model_dir or default_model_dir(config, FLAGS.preset)
    try:
        split = split if split is not None else split_data(config, interactions)
        parts = split.summary()
        where = {
            "kfold": f"kfold, fold {config.fold} of {config.num_folds}",
            "original": "original 3:1:1",
            "fo": f"fo (random interactions: test {config.test_fraction:g}, valid {config.valid_fraction:g})",
            "given": "given by its files",
        }[config.split]
        log.info(
            f"{config.dataset}: {interactions.n_users:,} users x {interactions.n_items:,} items, "
            f"{interactions.nnz:,} pairs; split {where}: {parts['train_pairs']:,} training, "
            f"{parts['valid_pairs']:,} validation, {parts['test_pairs']:,} test pairs"
        )
        results = training.train(
            config, model_dir, data=(interactions, split), overwrite=FLAGS.overwrite, verbose=FLAGS.verbose
        )
    except TooLittleData as e:
        hint = data_flags.filter_hint(config.dataset, config.dataset_options)
        return _error(f"{e}{'; or ' + hint if hint else ''}")
    except (ValueError, DataError, RunError) as e:
        return _error(e)
    except KeyboardInterrupt:
        print(interrupted_message(model_dir), file=sys.stderr)
        return 130
    print(json.dumps({"model_dir": model_dir, **results}, indent=2, sort_keys=True))
    return 0


# --------------------------------------------------------------------------------------------------- help
_HELP_GROUPS = [
    (
        "Data (docs/data.md)",
        ["dataset", "data_path", "train_path", "valid_path", "test_path", *data_flags.FLAG_TO_OPTION, "cache_dir"],
        ("use_cache",),
    ),
    (
        "Sampling",
        [
            "sampler",
            "batch_size",
            "num_negatives",
            "num_candidates",
            "beta",
            "popularity_smoothing",
            "popularity_uniform_mix",
            "loss",
            "hinge",
        ],
        ("stage2_", "batch_distinct_negatives", "dns_k", "temperature", "learn_temperature", "softmax_in_batch"),
    ),
    (
        "Training",
        [
            "optimizer",
            "learning_rate",
            "sparse_updates",
            "epochs",
            "max_steps",
            "max_train_seconds",
            "eval_every",
            "eval_users",
            "test_users",
            "k",
            "protocol",
        ],
        ("early_stopping_patience",),
    ),
    ("Split", ["split", "num_folds", "fold", "valid_fraction", "test_fraction"], ("split_",)),
    (
        "Model",
        [
            "model",
            "num_memories",
            "max_num_prefs",
            "transcf_neighbour_weight",
            "transcf_distance_weight",
            "embedding_dim",
            "margin",
            "geometry",
            "init_stddev",
            "user_history_weight",
            "user_history_size",
            "gor_weight",
            "use_rank_weight",
            "cov_loss_weight",
        ],
        ("features", "feature_", "clip_norm"),
    ),
    ("Run", ["model_dir", "overwrite", "preset", "seed", "verbose"], ("steps_per_execution", "strategy")),
]


def help_text(flag_values=FLAGS) -> str:
    """``--help``: usage, then this command's and the data flags, grouped, the ones a user needs first."""
    mine = {f.name: f for f in flag_values.get_key_flags_for_module(sys.modules[__name__])}
    mine.update({f.name: f for f in flag_values.get_key_flags_for_module(data_flags)})
    mine.pop("help", None)
    usage = [
        "Train CML (or --model=lrml|transcf|attcml|hlr): python -m cml_tf.train [--flags]; no flags trains on the "
        "embedded synthetic data set.",
        "",
        "  python -m cml_tf.train --dataset=echonest --data_path=train_triplets.txt --sampler=2stage",
        "  python -m cml_tf.train --dataset=movielens --data_path=ml-100k/u.data --sampler=popular --max_steps=2000",
        "",
        "Run the same command again to resume; -v 1 shows TensorFlow's own lines; --helpfull lists every flag.",
    ]
    return grouped_help(mine, usage, _HELP_GROUPS)


_HELP = {"--help", "-help", "-h", "-?", "--helpshort", "-helpshort"}


def _parse_flags(argv):
    """absl flag parsing with a one-line error and exit code 1 on a bad flag."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


def _repeated_preset(argv) -> str | None:
    """A message when ``--preset`` is given more than once (absl would take the last), else None."""
    given = [a for a in argv[1:] if a.split("=", 1)[0] in ("--preset", "-preset")]
    if len(given) < 2:
        return None
    return f"--preset given {len(given)} times ({' '.join(given)}): give one; flags given explicitly override it"


def run(argv=None):
    argv = list(sys.argv if argv is None else argv)
    if any(a in _HELP for a in argv[1:]):  # absl's --help exits with status 1 and leaves out the data flags
        print(help_text())
        sys.exit(0)
    if any(a in ("--helpfull", "-helpfull") for a in argv[1:]):
        print(FLAGS.get_help())
        sys.exit(0)
    repeated = _repeated_preset(argv)
    if repeated:
        sys.exit(_error(repeated))
    app.run(main, argv=argv, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
