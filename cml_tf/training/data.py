"""The run's data: the config's data set loaded and split, its item features, and the config fitted to it.

Everything here runs before the run directory is touched, so what cannot work fails before anything is written.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from cml_tf.data import loaders
from cml_tf.data.interactions import Interactions
from cml_tf.data.splits import Split, given_split, make_split
from cml_tf.messages import wording
from cml_tf.training.config import Config

log = logging.getLogger("cml_tf")


class TooLittleData(ValueError):
    """The data (after the loader's filters and the split) cannot feed the run as configured."""


def load_data(config: Config, announce: bool = True, **load_kwargs) -> tuple[Interactions, Split]:
    """Loads the data set named by the config and splits it as the config says (``split='given'``: reads the
    split's files, `load_given_split`).

    Args:
        config: the run's config.
        announce: a given split says on stderr how the model is chosen (training); False where the data is only
            reloaded (serving a finished run).
        **load_kwargs: passed to `cml_tf.data.loaders.load` (``cache_dir``, ``use_cache``).
    """
    if config.split == "given":
        return load_given_split(config, announce=announce)
    interactions = loaders.load(config.dataset, config.data_path, **load_kwargs, **config.dataset_options)
    return interactions, split_data(config, interactions)


def load_given_split(config: Config, announce: bool = True) -> tuple[Interactions, Split]:
    """The split given by files (``--split=given``), checked, and (``announce``) one line on stderr saying how the
    model is chosen: on the validation file; without one, on ``valid_fraction`` of each user's training items held
    out with the split seed; with ``valid_fraction=0``, none: the last model of the fixed schedule is tested.
    """
    interactions, parts = loaders.load_given(
        config.dataset,
        config.data_path,
        train_path=config.train_path,
        valid_path=config.valid_path,
        test_path=config.test_path,
        **config.dataset_options,
    )
    seed = config.resolved().split_seed
    split = given_split(interactions, parts, valid_fraction=config.valid_fraction, seed=seed)
    split.validate()
    if not announce:
        return interactions, split
    if parts["valid"] is not None:
        log.info("given split: the model is chosen on %s", parts["valid"].file)
    elif split.valid.nnz:
        log.info(
            "given split: no validation file, so %g of each user's training items (%s pairs, split seed %d) are "
            "held out to choose the model; test is never used for a choice",
            config.valid_fraction,
            f"{split.valid.nnz:,}",
            seed,
        )
    else:
        log.info("given split: no validation file and --valid_fraction=0: the last model of the schedule is tested")
    return interactions, split


def split_data(config: Config, interactions: Interactions) -> Split:
    """The config's split of the interactions (seeded by ``split_seed``), validated. Not for ``split='given'``,
    whose parts are files (`load_given_split`)."""
    if config.split == "given":
        raise ValueError("--split=given: the split is read from its files (load_given_split), not made")
    options = {
        "kfold": {"num_folds": config.num_folds, "fold": config.fold, "valid_fraction": config.valid_fraction},
        "fo": {"test_fraction": config.test_fraction, "valid_fraction": config.valid_fraction},
        "original": {},
    }[config.split]
    split = make_split(interactions.matrix, config.split, seed=config.resolved().split_seed, **options)
    split.validate()
    return split


def data_identity(config: Config, interactions: Interactions) -> dict:
    """What binds a run to its data (saved as the run's data.json, compared on resume; see
    `cml_tf.training.outputs`): the path as given, the content's fingerprint (`Interactions.fingerprint`) and, for
    the messages, the sizes.

    Returns:
        ``{"data_path": str | None, "fingerprint": str, "users": int, "items": int, "pairs": int}``.
    """
    return {
        "data_path": config.data_path,
        "fingerprint": interactions.fingerprint(),
        "users": interactions.n_users,
        "items": interactions.n_items,
        "pairs": interactions.nnz,
    }


def item_features(config: Config, interactions: Interactions):
    """[n_items, F] sparse item features for CML+F, or None."""
    if config.features is None:
        return None
    if config.features == "tags":
        from cml_tf.data.loaders.citeulike import load_tag_features

        return load_tag_features(config.data_path, interactions.n_items, min_count=config.feature_min_count)
    if config.features == "genres":
        # MovieLens u.item's 19 genre flags (cml_tf.data.side_info), aligned to the interactions' items
        return loaders.load_side_info(config.dataset, config.data_path, interactions).item_groups
    raise ValueError(f"--features: unknown features {config.features!r}")


def fit_to_data(config: Config, split: Split) -> Config:
    """The config adjusted to the data, or TooLittleData naming the flag that cannot hold.

    ``num_candidates`` (2-stage) above the number of drawable items (the catalog; with ``popularity_smoothing=0``
    the items seen in training) is lowered to that number, with a one-line notice: C = catalog is "every item".
    ``batch_size`` above the training pairs and ``num_negatives`` not below the catalog are errors. Messages name
    the flags under a command, the fields from Python (`cml_tf.messages`).
    """
    n_users, n_items = split.train.shape
    pairs = int(split.train.nnz)
    where = f"the data has {n_users:,} users x {n_items:,} items after its filters"
    if config.batch_size > pairs:
        raise TooLittleData(
            wording(
                f"--batch_size={config.batch_size} exceeds the {pairs:,} training pairs ({where}); "
                f"use --batch_size={pairs} or less"
            )
        )
    if config.num_negatives >= n_items:
        raise TooLittleData(
            wording(f"--num_negatives={config.num_negatives} must be below the {n_items:,} items ({where})")
        )
    if config.sampler == "2stage":
        drawable = n_items
        if config.popularity_smoothing == 0 and config.beta > 0 and config.popularity_uniform_mix == 0:
            drawable = int(np.count_nonzero(np.diff(split.train.tocsc().indptr)))
        if config.num_candidates > drawable:
            what = "items" if drawable == n_items else "items with a training interaction (--popularity_smoothing=0)"
            used = f"--num_candidates={drawable}"
            log.warning(
                wording(f"--num_candidates={config.num_candidates} exceeds the {drawable:,} {what}: using {used}")
            )
            config = dataclasses.replace(config, num_candidates=drawable)
        if config.num_negatives > config.num_candidates:
            raise TooLittleData(
                wording(
                    f"--num_negatives={config.num_negatives} exceeds the {config.num_candidates:,} candidates "
                    f"the data allows ({where})"
                )
            )
    return config
