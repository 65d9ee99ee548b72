"""The experiment configuration's models: typed, frozen, validated.

Every stage reads its settings from one :class:`ExperimentConfig`. Unknown keys are an error that lists
the valid ones; closed sets are Enums; sizes that default from ``data.d`` are properties, so
``--set data.d=96`` alone gives a consistent config. Every field declares beside its type whether it is part of a
run's identity, and where it is inert (``robinherit.config.identity``).

Names that plugins can add to (``model.activation``, ``data.source``) are checked against the registries of
``robinherit.registry``, which know the built-in names without importing the units or the loaders.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Discriminator, Tag, field_validator, model_validator

from robinherit.config import identity, inert
from robinherit.config.data_sections import DataConfig, RealDataConfig, Strict
from robinherit.config.enums import (
    AdversarialView,
    AttackKind,
    Augmentation,
    AutoAttackSet,
    DictMethod,
    EncoderKind,
    HeadKind,
    LrSchedule,
    Method,
    Norm,
    Optimizer,
)
from robinherit.config.identity import HashedAs, InertAt, field, torch_device_type
from robinherit.registry import DATASETS, ENCODERS, EVAL_ATTACKS, UNITS

# Data sets read from packages or the user's files: the names of robinherit.registry.DATASETS, read when a config is
# validated, so a data set registered there is a valid data.source. "synthetic" is the sparse-coding world.
REAL_SOURCES = DATASETS  # a live view: membership and the listed names follow the registry


_FRACTION = re.compile(r"^\s*([0-9.eE+-]+)\s*/\s*([0-9.eE+-]+)\s*$")


def _fraction(value: Any) -> Any:
    """A budget may be written as the field writes it: ``8/255`` (in YAML, ``--set`` and the API) is 8 / 255."""
    if isinstance(value, str) and (m := _FRACTION.match(value)):
        try:
            return float(m.group(1)) / float(m.group(2))
        except (ValueError, ZeroDivisionError):
            return value  # left to the float check, which names the value
    return value


# an attack budget: a number, or a fraction such as 8/255
Budget = Annotated[float, BeforeValidator(_fraction)]


def device_field() -> Any:
    """The ``device`` field of every top-level config: in a run's id by its type only (CUDA and the CPU draw
    different random streams; which GPU does not matter)."""
    return field(
        "cpu",
        identity=HashedAs("device_type", torch_device_type),
        pattern=r"^(cpu|cuda(:\d+)?)$",
        description="torch device: cpu, cuda or cuda:N",
    )


class ConvConfig(Strict):
    """Shape of the conv encoder's stack; the feature layer's width, unit and threshold come from ``model``."""

    channels: tuple[int, ...] = field(
        (16, 32), identity="always", min_length=1, description="output channels of each conv layer"
    )
    kernel: int = field(3, identity="always", ge=1, description="square kernel size of every conv layer")


class ModelConfig(Strict):
    """Two-layer network h_i(x) = act(<w_i, x>, b_i) with a linear head."""

    @field_validator("activation", mode="before")
    @classmethod
    def _unit(cls, v: Any) -> Any:
        name = getattr(v, "value", v)
        if name not in UNITS:
            raise ValueError(f"model.activation={name!r} is not a unit; allowed values: {UNITS.allowed()}")
        return name

    width: int = field(128, identity="always", ge=1, description="hidden nodes m")
    activation: str = field(
        "sym_relu",
        identity="always",
        description="hidden unit, a name of robinherit.registry.UNITS: sym_relu (thresholded, symmetric) or relu",
    )
    threshold: float = field(0.3, identity="always", ge=0.0, description="initial threshold b >= 0 of every node")
    learn_threshold: bool = field(False, identity="always", description="train b (kept >= 0) instead of fixing it")
    normalize_rows: bool = field(True, identity="always", description="use w_i / ||w_i|| inside the forward pass")
    encoder: str = field(
        EncoderKind.two_layer,
        identity="always",
        description="a name of robinherit.registry.ENCODERS: two_layer (the theory's network), conv (image data sets "
        "only) or a registered one",
    )

    @field_validator("encoder")
    @classmethod
    def _known_encoder(cls, v: Any) -> Any:
        name = getattr(v, "value", v)
        if not isinstance(name, str) or name not in ENCODERS:
            raise ValueError(f"model.encoder={name!r} is not an encoder; allowed values: {ENCODERS.allowed()}")
        return EncoderKind(name) if name in EncoderKind.__members__ else name  # the shipped names stay members

    conv: ConvConfig = field(ConvConfig(), identity=inert.not_conv, description="conv stack of encoder=conv")


class PretrainConfig(Strict):
    method: Method = field(Method.supervised, identity="always", description="supervised or contrastive")
    eps: Budget = field(
        0.25, identity="always", ge=0.0, description="adversarial budget during pre-training (0 = clean)"
    )
    # Resolved to ``eps`` (and reset to None) before a run has an id (robinherit.runs.relative_budget), so a run
    # set by a fraction is the run of its absolute budget; None, the behaviour before the field, changes no id.
    eps_rel: float | None = field(
        None,
        identity=InertAt(None),
        ge=0.0,
        description="pre-training budget as a fraction of the world's feature scale (sets eps; synthetic data only)",
    )
    norm: Norm = field(Norm.l2, identity=inert.clean, description="threat model of the inner maximisation")
    attack: AttackKind = field(AttackKind.pgd, identity=inert.clean, description="inner maximisation: pgd or fgm")
    attack_steps: int = field(5, identity=inert.clean, ge=1, description="PGD steps of the inner maximisation")
    steps: int = field(2000, identity="always", ge=1, description="optimiser steps")
    batch_size: int = field(256, identity="always", ge=2, description="examples per step")
    # The upper bound only rejects typos: beyond ~1e37 the optimiser's float32 step overflows with a raw error.
    lr: float = field(1e-2, identity="always", gt=0.0, le=1e6, description="learning rate")
    optimizer: Optimizer = field(Optimizer.adam, identity="always", description="adam or sgd")
    weight_decay: float = field(0.0, identity="always", ge=0.0, description="L2 weight decay")
    # contrastive pre-training (method=contrastive)
    temperature: float = field(0.2, identity=inert.supervised, gt=0.0, description="InfoNCE temperature")
    augmentation: Augmentation = field(
        Augmentation.noise, identity=inert.supervised, description="none, noise, mask or feature_dropout"
    )
    aug_strength: float = field(
        0.1,
        identity=inert.supervised,
        ge=0.0,
        description="noise: std of the added noise; mask: 1 - keep prob; feature_dropout: drop prob",
    )
    adversarial_view: AdversarialView = field(
        AdversarialView.one, identity=inert.supervised_or_clean, description="perturb one view or both"
    )
    projector_dim: int = field(
        0, identity=inert.supervised, ge=0, description="linear projector output size (0 = no projector)"
    )

    @model_validator(mode="after")
    def _check_aug(self) -> PretrainConfig:
        if self.augmentation in (Augmentation.mask, Augmentation.feature_dropout) and self.aug_strength >= 1.0:
            raise ValueError(
                f"pretrain.aug_strength={self.aug_strength} drops everything for {self.augmentation.value}; "
                "it is a drop probability and must be < 1"
            )
        return self


class DownstreamConfig(Strict):
    heads: tuple[HeadKind, ...] = field(
        (HeadKind.clean, HeadKind.adversarial),
        identity="always",
        min_length=1,
        description="heads to train on frozen features",
    )
    eps: Budget = field(
        0.25, identity=inert.no_adversarial_head, ge=0.0, description="budget of the adversarial head's training attack"
    )
    eps_rel: float | None = field(
        None,
        identity=InertAt(None),
        ge=0.0,
        description="the adversarial head's budget as a fraction of the world's feature scale (sets eps)",
    )
    steps: int = field(300, identity=inert.set_by_epochs, ge=1, description="head optimiser steps (full batch)")
    n_train: int = field(2000, identity="always", ge=2, description="downstream training examples")
    lr: float = field(5e-2, identity="always", gt=0.0, le=1e6, description="head learning rate (Adam)")
    attack_steps: int = field(
        5, identity=inert.no_adversarial_head, ge=1, description="PGD steps for the adversarial head"
    )
    batch_size: int | None = field(
        None,
        identity="always",
        ge=1,
        description="head minibatch (epochs over a shuffled training set); None: full batch every step",
    )
    weight_decay: float = field(
        0.0, identity="always", ge=0.0, description="L2 weight decay of the head: bounds its norm"
    )
    epochs: int | None = field(
        None,
        identity="always",
        ge=1,
        description="passes over the training set (with batch_size: the field's SLF / ALF protocol); set, it "
        "replaces steps by epochs x ceil(n_train / batch_size)",
    )
    optimizer: Optimizer = field(
        Optimizer.adam, identity="always", description="head optimiser: adam, or sgd (momentum 0.9)"
    )
    lr_schedule: LrSchedule = field(
        LrSchedule.constant,
        identity=InertAt(LrSchedule.constant),
        description="head learning rate over its steps: constant, or cosine (decays to 0 by the last step, so a "
        "minibatch head ends at a converged point rather than wherever the last batches left it)",
    )


class EvalConfig(Strict):
    eps_grid: tuple[Budget, ...] = field(
        (0.0, 0.1, 0.25, 0.5, 1.0, 2.0), identity="always", min_length=1, description="budgets for robust accuracy"
    )
    eps_rel_grid: tuple[float, ...] | None = field(
        None,
        identity=InertAt(None),
        min_length=1,
        description="evaluation budgets as fractions of the world's feature scale (sets eps_grid)",
    )
    norm: Norm = field(Norm.l2, identity="always", description="threat model of the evaluation attack")
    steps: int = field(20, identity="always", ge=1, description="PGD steps")
    restarts: int = field(2, identity="always", ge=1, description="random restarts (worst case kept per example)")
    n_test: int | None = field(
        1000,
        identity="always",
        ge=1,
        description="test examples (real data: a fixed subset of the test split; None = all of it)",
    )
    batch_size: int | None = field(
        None,
        identity=InertAt(None),
        ge=1,
        description="test examples attacked at a time (every attack and check runs chunk by chunk; None: all at "
        "once). On the CPU a conv net's attacks run about 1.6x faster in chunks of a few hundred than on 1,000 at "
        "once: the activations of a whole test set stream through memory at every step",
    )
    autoattack: AutoAttackSet = field(
        AutoAttackSet.none,
        identity=inert.synthetic,
        description="AutoAttack beside PGD (real data only, inputs in [0, 1]): custom, standard or none",
    )
    attacks: tuple[str, ...] = field(
        (),
        identity="always",
        description="more attacks beside PGD, names of robinherit.registry.EVAL_ATTACKS (per-example worst case)",
    )
    per_attack: bool = field(
        False,
        identity=inert.no_extra_attacks,
        description="run every attack beside PGD on every example and report each one's robust accuracy (the "
        "diagnostics); false: AutoAttack's cascade, each attack only on the examples still correct, which gives the "
        "same per-example worst case for a fraction of the work",
    )
    apgd_steps: int = field(
        100, identity=inert.no_autoattack, ge=1, description="APGD iterations (AutoAttack uses 100)"
    )
    square_queries: int = field(
        1000, identity=inert.no_autoattack, ge=1, description="Square attack queries (AutoAttack uses 5000)"
    )
    dictionary: DictMethod = field(
        DictMethod.ica,
        identity=inert.synthetic,
        description="real data: learned dictionary the purity proxy reads loadings on",
    )
    dictionary_atoms: int | None = field(
        None, identity=inert.synthetic, ge=1, description="atoms (None: effective rank of the data)"
    )
    max_patches: int = field(
        20000,
        identity=inert.synthetic_or_not_conv,
        ge=100,
        description="patches sampled to learn a conv filter dictionary",
    )

    @field_validator("attacks")
    @classmethod
    def _known_attacks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [n for n in v if n not in EVAL_ATTACKS]
        if unknown:
            raise ValueError(
                f"eval.attacks names {', '.join(unknown)}, which is not an evaluation attack; allowed values: "
                f"{EVAL_ATTACKS.allowed()}"
            )
        return v

    @field_validator("eps_grid")
    @classmethod
    def _grid(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(e < 0 for e in v):
            raise ValueError(f"eval.eps_grid has a negative budget {v}; budgets are radii and must be >= 0")
        return tuple(sorted(set(float(e) for e in v)))


def _default_source(raw: Any) -> Any:
    # No ``source`` means the synthetic world, so every YAML file written before real data joined keeps working.
    if isinstance(raw, dict) and "source" not in raw:
        return {"source": "synthetic", **raw}
    return raw


DataSection = Annotated[
    Annotated[DataConfig, Tag("synthetic")] | Annotated[RealDataConfig, Tag("real")],
    Discriminator(lambda v: _source_tag(v.get("source", "synthetic") if isinstance(v, dict) else v.source)),
]


def _source_tag(source: Any) -> str | None:
    if source == "synthetic":
        return "synthetic"
    return "real" if source in REAL_SOURCES else None


_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class ExperimentConfig(Strict):
    data: DataSection = field(
        DataConfig(), identity="always", description="the data source: synthetic world or a real data set"
    )
    model: ModelConfig = field(ModelConfig(), identity="always")
    pretrain: PretrainConfig = field(PretrainConfig(), identity="always")
    downstream: DownstreamConfig = field(DownstreamConfig(), identity="always")
    eval: EvalConfig = field(EvalConfig(), identity="always")
    seed: int = field(
        0,
        identity="always",
        ge=0,
        le=2**63 - 1,  # SQLite keeps a seed as a signed 64-bit integer
        description="seed of everything: dictionary, tasks, data, init, attacks",
    )
    device: str = device_field()
    plugins: tuple[str, ...] = field(
        (),
        identity="never",
        description="modules to import before the config is validated, e.g. ones that register units or data sets "
        "(what they register is named by the settings that use it, which are part of the run's id)",
    )

    @field_validator("plugins")
    @classmethod
    def _module_names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            if not (_MODULE_NAME.fullmatch(name) or name.endswith(".py")):
                raise ValueError(
                    f"plugins: {name!r} is neither a dotted module name (such as my_package.units) nor a .py file"
                )
        return v

    @field_validator("data", mode="before")
    @classmethod
    def _data_source(cls, v: Any) -> Any:
        if isinstance(v, dict) and v.get("source", "synthetic") not in ("synthetic", *REAL_SOURCES):
            raise ValueError(
                f"data.source={v['source']!r} is not a data source; "
                f"allowed values: synthetic, {', '.join(REAL_SOURCES)}"
            )
        return _default_source(v)

    @model_validator(mode="after")
    def _check_source(self) -> ExperimentConfig:
        real = self.is_real
        if not real and self.eval.autoattack != AutoAttackSet.none:
            raise ValueError(
                f"eval.autoattack={self.eval.autoattack.value} needs inputs in [0, 1] (torchattacks clamps to that "
                "box), but the synthetic world's inputs are unbounded; set eval.autoattack=none or use a real "
                "data.source"
            )
        if not real and self.eval.n_test is None:
            raise ValueError("eval.n_test=null means the whole test split, which only real data has; give a number")
        if self.model.encoder == EncoderKind.conv and not real:
            raise ValueError(
                "model.encoder=conv needs a real data set (data.source one of "
                f"{', '.join(REAL_SOURCES)}); the synthetic world has no image shape: use model.encoder=two_layer"
            )
        return self

    @property
    def is_real(self) -> bool:
        return isinstance(self.data, RealDataConfig)

    def resolved(self) -> dict[str, Any]:
        """The config as plain JSON data with derived sizes filled in."""
        out = self.model_dump(mode="json")
        if not self.is_real:
            out["data"]["n_features"] = self.data.D
        return out

    def identity(self) -> dict[str, Any]:
        """What a run's numbers depend on: the resolved config less the settings that are inert for this run, the
        device by its type, and the numerics version of its kind (``robinherit.config.identity``)."""
        return identity.run_identity(self)

    def config_hash(self) -> str:
        """Identity of a run: 16 hex digits of the SHA-256 of :meth:`identity` (seed included)."""
        return identity.config_hash(self)

    def pretrain_hash(self) -> str:
        """Identity of a run's pre-trained encoder: :meth:`identity` less the downstream and evaluation settings,
        which only act after pre-training. Runs with equal ``pretrain_hash`` train the same encoder, so a batch of
        them (a sweep over the head's training or the evaluation) pre-trains it once."""
        return identity.pretrain_hash(self)
