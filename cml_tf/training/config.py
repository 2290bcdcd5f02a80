"""The configuration of one run: a frozen dataclass saved whole to ``config.json``.

Flags live only in the command modules (`cml_tf.train`); they build a `Config`. Library code and experiment
runners build one directly: ``Config(dataset="citeulike", data_path=..., sampler="uniform", batch_size=4096)``, or
from a preset, the fields given overriding it: ``Config(preset="accurate", dataset="citeulike", epochs=25)``.

One rule for the fields a run does not read (`cml_tf.training.unused.unused_fields`: ``hinge`` with the softmax,
``temperature`` with the hinge, ``dns_k`` without ``sampler='dns'``, ...): the commands refuse such a flag given
explicitly, and ``config.json`` holds None for them (`Config.to_dict`); `Config.resolved` sets them back to their
defaults.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from cml_tf.messages import wording
from cml_tf.training.presets import PRESETS, REFRESH_NEVER
from cml_tf.training.unused import MODEL_FIELDS, unused_fields

# Paper defaults (Tran et al. 2019, section 5): d=128, α=1, Adam lr 1e-4, C=2000, β=1, λ_g by |N_ij|.
PAPER_GOR_WEIGHT = {1: 0.01, 2: 0.01}
PAPER_GOR_WEIGHT_OTHER = 0.001
# On the sphere each looked-up row is normalised, so a row's angular step is about lr / ||raw row||: the raw norm
# sets the effective learning rate. A small initial norm lets the paper's Adam lr 1e-4 move rows at a useful pace
# from the first epoch, and the norm grows with every update (the normalisation's gradient is orthogonal to the
# row), which anneals the step. Measured on citeulike-t (uniform, B=256, 1M pairs): validation NDCG@50 0.073 with
# std 1e-3 at lr 1e-4, the same as std 1/sqrt(d) at lr 1e-2, against 0.006 with std 1/sqrt(d) at lr 1e-3.
SPHERE_INIT_STDDEV = 1e-3
# Stage 2's cap λ on the inverse-density weight (Wu et al. 2017's min(λ, q⁻¹), q⁻¹ relative to its value at s = 0),
# chosen on validation across four data sets by experiments/stage2_sweep.py (results in
# experiments/results/stage2_sweep/): validation NDCG@50 1.02x uniform@256's on average, MMR 0.84x. None is the paper
# taken literally, which at d = 128 is hardest-negative mining (0.43x uniform's NDCG).
DEFAULT_STAGE2_WEIGHT_CAP: float | None = 4.0


def default_hinge(sampler: str, num_negatives: int) -> str:
    """The triplet hinge a run gets without ``--hinge``: 'mean' for the 2-stage sampler at |N_ij| > 1, else 'min'.

    The paper's hinge takes the hardest of the |N_ij| negatives. Stage 2 already draws hard negatives, and the min
    over 5 of them is harder still: measured by experiments/negatives_study.py (results in
    experiments/results/negatives_study/), the min loses to uniform@256 at |N_ij| = 5 on all four data sets
    (validation NDCG@50 0.85x on average), one hinge per negative averaged matches it (1.00x) with a lower MMR (0.91x).
    Uniform negatives are easy, so the min over them (a WARP-like hardness) is kept, as is the paper's formula at
    |N_ij| = 1, where the two are the same.
    """
    return "mean" if sampler == "2stage" and num_negatives > 1 else "min"


#: --model names (classes in `cml_tf.models`)
MODEL_NAMES = ("cml", "lrml", "transcf", "attcml", "hlr")
SPLITS = ("kfold", "original", "fo", "given")
#: test protocols (`cml_tf.data.splits.Split.excluded_at_test`): what is masked from the test ranking
PROTOCOLS = ("cml", "reference")
#: data sets whose files are a given split
GIVEN_SPLIT_DATASETS = ("lightgcn", "recbole")
SAMPLERS = ("uniform", "popular", "2stage", "side_info", "dns", "in_batch")
#: fields that record, but do not change, a run: not compared when a run directory is resumed
RECORD_FIELDS = ("data_path", "preset")


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that determines a run's result (and where it is written).

    ``preset``: the `PRESETS` entry the config started from (None: the dataclass defaults, the paper's);
    ``Config(preset="accurate", epochs=25)`` takes the preset's values, then the fields given, as the command
    takes ``--preset``, then the flags given. It is recorded in ``config.json`` and does not change a run itself.
    Data: ``dataset``, ``data_path``, ``dataset_options`` (loader filters), ``split`` ('kfold' | 'original' |
    'fo' | 'given'), ``num_folds``, ``fold``, ``valid_fraction``, ``test_fraction`` ('fo'); 'given' (the only split
    of the lightgcn and recbole data sets): ``train_path``, ``valid_path``, ``test_path`` (other loaders' files),
    ``valid_fraction`` carved from train when there is no validation file (docs/given_splits.md).
    Model: ``model`` (one of `MODEL_NAMES`) and the relational models' ``num_memories`` (M, LRML and HLR),
    ``max_num_prefs`` (P, AttCML and HLR), ``transcf_neighbour_weight`` / ``transcf_distance_weight`` (TransCF's
    regularisers); ``embedding_dim``, ``geometry`` ('sphere' | 'ball'), ``margin``, ``gor_weight`` (None = the
    paper's value for ``num_negatives``), ``use_rank_weight``, ``cov_loss_weight``, ``init_stddev``,
    ``user_history_weight`` (g of the user tower: a user is the normalised (1 − g)·u + g·the mean of its history items;
    0 = off) and ``user_history_size`` (a seeded sample of at most that many training items per user), CML+F
    ``features``
    ('tags' for citeulike-t, 'genres' for MovieLens 100K's u.item) and its settings.
    Sampling: ``sampler``, ``batch_size``, ``num_negatives``, ``num_candidates``, ``beta``, ``popularity_smoothing``,
    ``popularity_uniform_mix`` (ε: popular and 2-stage items by (1 − ε)·popularity^β + ε·uniform; 0 = off),
    ``stage2_weight_cap`` (λ; None = the paper's uncapped inverse density), ``stage2_cutoff`` (D_min; 0 = off),
    ``stage2_refresh_every`` (0 = current embeddings, K = a copy refreshed every K steps, -1 = never refreshed),
    ``stage2_mask_opposite`` (candidates with s < 0 get weight 0), ``stage2_replacement`` (independent stage-2 draws
    instead of successive ones), ``stage2_uniform_mix`` (ρ of a mixture with uniform over the candidates),
    ``batch_distinct_negatives`` (popular only: the batch's B·N negatives are distinct items, as the original popular
    sampler draws them), ``hinge`` ('min': the hinge of the hardest of the |N_ij| negatives, the paper's; 'mean': one
    hinge per negative, averaged; None = `default_hinge`: 'mean' for the 2-stage sampler at |N_ij| > 1, else 'min'),
    ``dns_k`` (``sampler='dns'``: uniform draws per negative, the hardest is
    kept).
    Loss: ``loss`` ('hinge': the triplet hinge over the sampled negatives; 'softmax': the sampled softmax over the
    batch's pool of negatives with the log q correction), ``temperature`` (τ of the softmax logits −D²/τ; the initial
    value with ``learn_temperature``), ``softmax_in_batch`` (the batch's positives join the pool),
    ``temperature_probe`` (τ values, each trained ``temperature_probe_epochs`` first; the one with the best validation
    NDCG@k goes on training, and ``temperature`` is set to it: `cml_tf.training.run.probe_temperature`; () = off).
    ``split_seed``: the split's own seed (None: 1 for 'original', CollMetric's, and 0 for 'kfold'); ``seed`` seeds
    initialisation, sampling and validation-user sampling.
    Optimisation: ``optimizer``, ``learning_rate``, ``sparse_updates`` (lazy row-sparse optimizer; False = Keras'
    exact dense one), ``epochs`` (over training pairs) or ``max_steps`` (wins when set), ``max_train_seconds`` (a
    wall-clock budget of training, evaluation excluded: the run stops at the first validation past it).
    Evaluation: ``eval_every`` steps, ``eval_users`` (a seeded sample of validation users; None = all),
    ``test_users`` (a sample of test users seeded by the split's seed, so every model and seed on one split ranks
    the same users; None = all), ``k``,
    ``early_stopping_patience`` (evaluations without improvement of validation NDCG@k; 0 = never stop early),
    ``protocol`` (what the test ranking masks: 'cml' = train + valid, 'reference' = the training file's items, as
    LightGCN's code; None = 'reference' for a given split, else 'cml').
    """

    preset: str | None = None
    # data
    dataset: str = "synthetic"
    data_path: str | None = None
    dataset_options: dict = dataclasses.field(default_factory=dict)
    split: str = "kfold"
    split_seed: int | None = None
    num_folds: int = 4
    fold: int = 0
    valid_fraction: float = 0.1
    test_fraction: float = 0.2
    train_path: str | None = None
    valid_path: str | None = None
    test_path: str | None = None
    # model
    model: str = "cml"
    num_memories: int = 20
    max_num_prefs: int = 50
    transcf_neighbour_weight: float = 0.1
    transcf_distance_weight: float = 0.1
    embedding_dim: int = 128
    geometry: str = "sphere"
    margin: float = 1.0
    gor_weight: float | None = None
    use_rank_weight: bool = False
    cov_loss_weight: float = 0.0
    init_stddev: float | None = None
    user_history_weight: float = 0.0
    user_history_size: int = 50
    features: str | None = None
    feature_min_count: int = 5
    feature_l2_reg: float = 0.1
    feature_hidden_dim: int = 512
    feature_dropout: float = 0.0
    feature_scale: float = 1.0
    clip_norm: float = 1.0
    # sampling
    sampler: str = "2stage"
    batch_size: int = 256
    num_negatives: int = 1
    num_candidates: int = 2000
    beta: float = 1.0
    popularity_smoothing: float = 1.0
    popularity_uniform_mix: float = 0.0
    stage2_weight_cap: float | None = DEFAULT_STAGE2_WEIGHT_CAP
    stage2_cutoff: float = 0.0
    stage2_refresh_every: int = 0
    stage2_mask_opposite: bool = True
    stage2_replacement: bool = False
    stage2_uniform_mix: float = 0.0
    batch_distinct_negatives: bool = False
    hinge: str | None = None
    dns_k: int = 8
    loss: str = "hinge"
    temperature: float = 0.1
    learn_temperature: bool = False
    softmax_in_batch: bool = False
    temperature_probe: tuple[float, ...] = ()
    temperature_probe_epochs: float = 5.0
    # optimisation
    optimizer: str = "adam"
    learning_rate: float = 1e-4
    sparse_updates: bool = True
    epochs: float = 20.0
    max_steps: int | None = None
    max_train_seconds: float | None = None
    # evaluation
    eval_every: int = 1000
    eval_users: int | None = None
    test_users: int | None = None
    k: int = 50
    early_stopping_patience: int = 0
    protocol: str | None = None
    seed: int = 0
    # execution: training steps per tf.function call (amortises Python/callback overhead; no effect on results)
    steps_per_execution: int = 20
    # distribution
    strategy: str = "default"

    def __post_init__(self):
        # config.json holds the τ values as a list; flags and callers may give any sequence
        object.__setattr__(self, "temperature_probe", tuple(float(t) for t in self.temperature_probe or ()))

    def resolved(self) -> Config:
        """The config as run: derived defaults filled in (``gor_weight``, ``init_stddev``, ``split_seed``,
        ``hinge`` with the hinge loss), and the fields the run does not read (`unused_fields`) at their defaults,
        so that configs that differ only there are equal (``config.json`` holds None for them: `to_dict`)."""
        self = self._defaults_for_unused()
        gor = self.gor_weight
        if gor is None:  # the paper's λ_g belongs to its hinge; the softmax runs without GOR unless asked
            gor = PAPER_GOR_WEIGHT.get(self.num_negatives, PAPER_GOR_WEIGHT_OTHER) if self.loss == "hinge" else 0.0
        init = self.init_stddev
        if init is None:
            init = SPHERE_INIT_STDDEV if self.geometry == "sphere" else 1.0 / self.embedding_dim**0.5
        split_seed = self.split_seed
        if split_seed is None:
            split_seed = 1 if self.split == "original" else 0
        return dataclasses.replace(
            self,
            hinge=(self.hinge or default_hinge(self.sampler, self.num_negatives)) if self.loss == "hinge" else None,
            gor_weight=float(gor),
            init_stddev=float(init),
            split_seed=int(split_seed),
            protocol=self.protocol or ("reference" if self.split == "given" else "cml"),
            dataset_options=dict(self.dataset_options),
        )

    def _defaults_for_unused(self) -> Config:
        """The config with the fields its run does not read at their defaults (None, from config.json, included)."""
        defaults = {f.name: _field_default(f) for f in dataclasses.fields(self)}
        unused = {name: defaults[name] for name in unused_fields(self) if getattr(self, name) != defaults[name]}
        return dataclasses.replace(self, **unused) if unused else self

    def validate(self) -> None:
        """Raises ValueError naming the flag (the field, for a Python caller: `cml_tf.messages`) for values that can
        never work (before any data is read); the fields the run does not read are not checked."""
        try:
            self._defaults_for_unused()._check()
        except ValueError as e:
            raise ValueError(wording(str(e))) from None

    def _check(self) -> None:
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"--preset: unknown {self.preset!r}; expected one of {', '.join(sorted(PRESETS))}")
        for field in dataclasses.fields(self):  # NaN or infinity in any number: --learning_rate=inf trains NaN
            value = getattr(self, field.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"--{field.name} must be a finite number, got {value}")
        if self.init_stddev is not None and not self.init_stddev > 0:
            raise ValueError(f"--init_stddev must be positive, got {self.init_stddev}")
        checks = [
            (self.batch_size > 0, f"--batch_size must be positive, got {self.batch_size}"),
            (self.num_negatives > 0, f"--num_negatives must be positive, got {self.num_negatives}"),
            (self.num_candidates > 0, f"--num_candidates must be positive, got {self.num_candidates}"),
            (
                self.sampler != "2stage" or self.num_negatives <= self.num_candidates,
                f"--num_negatives={self.num_negatives} exceeds --num_candidates={self.num_candidates}",
            ),
            (
                self.sampler in SAMPLERS,
                f"--sampler: unknown sampler {self.sampler!r}; expected one of {', '.join(SAMPLERS)}",
            ),
            (self.geometry in ("sphere", "ball"), f"--geometry: unknown {self.geometry!r}; expected sphere or ball"),
            (
                self.optimizer in ("adam", "adagrad", "sgd"),
                f"--optimizer: unknown {self.optimizer!r}; expected adam, adagrad or sgd",
            ),
            (self.split in SPLITS, f"--split: unknown {self.split!r}; expected kfold, original, fo or given"),
            (
                self.protocol in (None, *PROTOCOLS),
                f"--protocol: unknown {self.protocol!r}; expected one of {', '.join(PROTOCOLS)}",
            ),
            (
                self.split == "given" or self.dataset.lower() not in GIVEN_SPLIT_DATASETS,
                f"--dataset={self.dataset} is a given split (its files): use --split=given, not --split={self.split}",
            ),
            (
                self.split == "given" or (self.train_path, self.valid_path, self.test_path) == (None, None, None),
                f"--train_path / --valid_path / --test_path apply only to --split=given, not --split={self.split}",
            ),
            (
                self.model in MODEL_NAMES,
                f"--model: unknown model {self.model!r}; expected one of {', '.join(MODEL_NAMES)}",
            ),
            (self.num_memories > 0, f"--num_memories must be positive, got {self.num_memories}"),
            (self.max_num_prefs > 0, f"--max_num_prefs must be positive, got {self.max_num_prefs}"),
            (
                0 <= self.user_history_weight < 1,
                f"--user_history_weight must be in [0, 1), got {self.user_history_weight}",
            ),
            (self.user_history_size > 0, f"--user_history_size must be positive, got {self.user_history_size}"),
            (
                self.model == "cml" or not self.user_history_weight,
                f"--user_history_weight applies only to --model=cml, not --model={self.model}",
            ),
            (self.transcf_neighbour_weight >= 0, "--transcf_neighbour_weight must be >= 0"),
            (self.transcf_distance_weight >= 0, "--transcf_distance_weight must be >= 0"),
            (
                self.model == "cml" or self.features is None,
                f"--features applies only to --model=cml, not --model={self.model}",
            ),
            (
                self.model == "cml" or self.strategy == "default",
                f"--strategy={self.strategy} applies only to --model=cml (the relational models run on one device)",
            ),
            (0 < self.test_fraction < 1, f"--test_fraction must be in (0, 1), got {self.test_fraction}"),
            (self.embedding_dim > 0, f"--embedding_dim must be positive, got {self.embedding_dim}"),
            (self.margin >= 0, f"--margin must be >= 0, got {self.margin}"),
            (self.learning_rate > 0, f"--learning_rate must be positive, got {self.learning_rate}"),
            (self.beta >= 0, f"--beta must be >= 0, got {self.beta}"),
            (self.gor_weight is None or self.gor_weight >= 0, f"--gor_weight must be >= 0, got {self.gor_weight}"),
            (self.num_folds >= 2, f"--num_folds must be >= 2, got {self.num_folds}"),
            (0 <= self.fold < self.num_folds, f"--fold must be in [0, {self.num_folds}), got {self.fold}"),
            (0 <= self.valid_fraction < 1, f"--valid_fraction must be in [0, 1), got {self.valid_fraction}"),
            (self.epochs > 0, f"--epochs must be positive, got {self.epochs}"),
            (self.max_steps is None or self.max_steps > 0, f"--max_steps must be positive, got {self.max_steps}"),
            (
                self.max_train_seconds is None or self.max_train_seconds > 0,
                f"--max_train_seconds must be positive, got {self.max_train_seconds}",
            ),
            (self.eval_every > 0, f"--eval_every must be positive, got {self.eval_every}"),
            (self.eval_users is None or self.eval_users > 0, f"--eval_users must be positive, got {self.eval_users}"),
            (self.test_users is None or self.test_users > 0, f"--test_users must be positive, got {self.test_users}"),
            (self.k > 0, f"--k must be positive, got {self.k}"),
            (self.steps_per_execution > 0, f"--steps_per_execution must be positive, got {self.steps_per_execution}"),
            (self.early_stopping_patience >= 0, "--early_stopping_patience must be >= 0"),
            (self.cov_loss_weight >= 0, f"--cov_loss_weight must be >= 0, got {self.cov_loss_weight}"),
            (self.clip_norm > 0, f"--clip_norm must be positive, got {self.clip_norm}"),
            (
                self.stage2_weight_cap is None or self.stage2_weight_cap >= 1,
                f"--stage2_weight_cap must be >= 1 (or none), got {self.stage2_weight_cap}",
            ),
            (0 <= self.stage2_cutoff <= 2, f"--stage2_cutoff must be in [0, 2], got {self.stage2_cutoff}"),
            (
                0 <= self.popularity_uniform_mix <= 1,
                f"--popularity_uniform_mix must be in [0, 1], got {self.popularity_uniform_mix}",
            ),
            (
                0 <= self.stage2_uniform_mix <= 1,
                f"--stage2_uniform_mix must be in [0, 1], got {self.stage2_uniform_mix}",
            ),
            (self.hinge in (None, "min", "mean"), f"--hinge: unknown {self.hinge!r}; expected min or mean"),
            (self.loss in ("hinge", "softmax"), f"--loss: unknown {self.loss!r}; expected hinge or softmax"),
            (self.temperature > 0, f"--temperature must be positive, got {self.temperature}"),
            (
                all(t > 0 and math.isfinite(t) for t in self.temperature_probe),
                f"--temperature_probe values must be positive, got {_listed(self.temperature_probe)}",
            ),
            (
                not self.temperature_probe or len(set(self.temperature_probe)) >= 2,
                f"--temperature_probe needs 2 or more distinct values, got {_listed(self.temperature_probe)}",
            ),
            (
                self.temperature_probe_epochs > 0,
                f"--temperature_probe_epochs must be positive, got {self.temperature_probe_epochs}",
            ),
            (self.dns_k >= 1, f"--dns_k must be positive, got {self.dns_k}"),
            (
                self.loss == "hinge" or self.strategy == "default",
                f"--loss=softmax runs on one device, not --strategy={self.strategy}",
            ),
            (self.loss == "hinge" or not self.use_rank_weight, "--use_rank_weight applies only to --loss=hinge"),
            (
                self.loss == "hinge" or self.sampler != "dns",
                "--sampler=dns picks hinge negatives by the current scores; use it with --loss=hinge",
            ),
            (
                self.stage2_refresh_every >= REFRESH_NEVER,
                f"--stage2_refresh_every must be >= 0 or 'never', got {self.stage2_refresh_every}",
            ),
            (self.feature_min_count >= 1, f"--feature_min_count must be >= 1, got {self.feature_min_count}"),
            (0 <= self.feature_dropout < 1, f"--feature_dropout must be in [0, 1), got {self.feature_dropout}"),
            (
                self.features in (None, "tags", "genres"),
                f"--features: unknown {self.features!r}; expected tags, genres or none",
            ),
            (
                self.sampler != "side_info"
                or self.dataset.lower().replace("-", "_") in ("movielens", "ml", "citeulike", "citeulike_t"),
                f"--sampler=side_info needs item side information: --dataset=movielens (genres) or citeulike (tags), "
                f"got --dataset={self.dataset}",
            ),
            (
                self.features != "genres" or self.dataset.lower() in ("movielens", "ml"),
                f"--features=genres needs --dataset=movielens (u.item's genres), got --dataset={self.dataset}",
            ),
            (
                self.strategy in ("default", "mirrored", "multi_worker"),
                f"--strategy: unknown {self.strategy!r}; expected default, mirrored or multi_worker",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def to_dict(self) -> dict[str, Any]:
        """Every field by name (what ``config.json`` holds), None for the fields the run does not read."""
        d = dataclasses.asdict(self)
        d.update(dict.fromkeys(unused_fields(self)))
        return d

    def model_options(self) -> dict[str, Any]:
        """The model-specific fields the chosen ``model`` reads, by name (see `MODEL_FIELDS`)."""
        return {name: getattr(self, name) for name, models in MODEL_FIELDS.items() if self.model in models}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        """The config of ``d`` (e.g. a ``config.json``; a field it lacks, such as ``preset`` in one written before
        that field, reads as its default; a field the run does not read, None there, reads as its default)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**d)._defaults_for_unused()

    @classmethod
    def load(cls, path: str) -> Config:
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))


def _listed(values) -> str:
    return ",".join(f"{v:g}" for v in values) or "none"


def _field_default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


_fields_init = Config.__init__


def _init_from_preset(self, *, preset: str | None = None, **fields) -> None:
    """``Config(preset=None, **fields)``: the preset's values (`PRESETS`), then the fields given (a ``temperature``
    given without ``temperature_probe`` also drops the preset's probe: the τ given is the τ run)."""
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(wording(f"--preset: unknown {preset!r}; expected one of {', '.join(sorted(PRESETS))}"))
        base = dict(PRESETS[preset])
        if "temperature" in fields and "temperature_probe" not in fields:
            base.pop("temperature_probe", None)  # a τ given is the τ run: the preset's probe would replace it
        fields = {**base, **fields}
    _fields_init(self, preset=preset, **fields)


Config.__init__ = _init_from_preset


def config_differences(saved: dict[str, Any], config: Config) -> list[str]:
    """The fields in which the ``config.json`` dict ``saved`` (of this version or an older one) describes another run
    than ``config``: the fields either run reads that differ, and the keys this version does not know.

    A field ``saved`` lacks reads as its default; the fields a run does not read count as equal (a run saved before
    they were None holds their values), as do the `RECORD_FIELDS` (where the data lives, the preset started from).
    """
    names = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(saved) - names)
    before = json.loads(
        json.dumps(Config.from_dict({k: v for k, v in saved.items() if k in names}).resolved().to_dict())
    )
    now = json.loads(json.dumps(config.resolved().to_dict()))
    return unknown + sorted(k for k in names - set(RECORD_FIELDS) if before.get(k) != now.get(k))
