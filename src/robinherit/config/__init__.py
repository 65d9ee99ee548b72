"""Typed, frozen, validated experiment configuration.

Every stage reads its settings from one :class:`ExperimentConfig`. Unknown keys are an error that lists
the valid ones; closed sets are Enums; sizes that default from ``data.d`` are properties, so
``--set data.d=96`` alone gives a consistent config.
"""

from __future__ import annotations

import hashlib
import json
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from robinherit.data.datasets import LOADERS
from robinherit.errors import ConfigError
from robinherit.models.encoder import ENCODERS
from robinherit.models.units import UNITS
from robinherit.plugins import load_plugins


class Dictionary(str, Enum):
    orthogonal = "orthogonal"
    identity = "identity"
    overcomplete = "overcomplete"


class Sparsity(str, Enum):
    exact = "exact"
    bernoulli = "bernoulli"


class Values(str, Enum):
    sign = "sign"
    uniform = "uniform"


class Activation(str, Enum):
    """The shipped units (names of ``activations.UNITS``, which may hold more: ``model.activation`` takes any)."""

    sym_relu = "sym_relu"
    relu = "relu"


class Method(str, Enum):
    supervised = "supervised"
    contrastive = "contrastive"


class Norm(str, Enum):
    l2 = "l2"
    linf = "linf"


class AttackKind(str, Enum):
    pgd = "pgd"
    fgm = "fgm"


class Optimizer(str, Enum):
    adam = "adam"
    sgd = "sgd"


class LrSchedule(str, Enum):
    constant = "constant"
    cosine = "cosine"  # cosine decay from lr to 0 over the head's optimiser steps (Loshchilov & Hutter 2017)


class Augmentation(str, Enum):
    none = "none"
    noise = "noise"
    mask = "mask"
    feature_dropout = "feature_dropout"


class AdversarialView(str, Enum):
    one = "one"
    both = "both"


class HeadKind(str, Enum):
    clean = "clean"
    adversarial = "adversarial"


class EncoderKind(str, Enum):
    two_layer = "two_layer"
    conv = "conv"


class Protocol(str, Enum):
    same_task = "same_task"  # head on the pre-training labels (robust SSL benchmarks' SLF / ALF)
    relabel = "relabel"  # head on a derived task (digit parity, low/high class halves)
    class_split = "class_split"  # pre-train on some classes, head on the others (Shafahi et al. 2020)


class Relabel(str, Enum):
    parity = "parity"  # y mod 2 (digits: odd vs even)
    halves = "halves"  # y >= C/2


class AutoAttackSet(str, Enum):
    custom = "custom"  # APGD-CE, APGD-T (when >= 4 classes), Square: each run on its own, per-example worst case
    standard = "standard"  # torchattacks.AutoAttack(version="standard"): APGD-CE, APGD-T, FAB-T, Square
    none = "none"  # PGD only


class DictMethod(str, Enum):
    ica = "ica"  # FastICA (Hyvarinen & Oja 2000)
    dictionary_learning = "dictionary_learning"  # online dictionary learning (Mairal et al. 2009)


# Data sets read from packages or the user's files: the names of robinherit.data.datasets.LOADERS, read when a config is
# validated, so a data set registered there is a valid data.source. "synthetic" is the sparse-coding world.
REAL_SOURCES = LOADERS  # a live view: membership and the listed names follow the registry

# Bumped whenever a change of code changes any number a run produces (data streams, update rules, evaluation):
# it is part of every run id, so a store written by older code never answers for newer code.
# 3: exact-k codes draw k indices per row (Floyd's sampling without replacement), k signs and k magnitudes instead
# of D uniform keys, D signs and D magnitudes: the same distribution of codes, a different random stream.
NUMERICS_VERSION = 3
# Also 3: two-layer contrastive pre-training trains in closed form (batched.contrastive_grads), equal to autograd to
# float tolerance but not bit for bit, on every source.
# The versions at which each kind of run last changed its numbers (``numerics_kind``): 3 changed the synthetic
# sampler and the contrastive step, so a supervised real-data run (which draws no codes) computes what it did at 2
# and keeps its id, and stores of real-data studies stay valid. Bump every kind a change reaches.
NUMERICS_BY_KIND = {"synthetic": NUMERICS_VERSION, "real": 2, "real_contrastive": 3}


def device_field() -> Any:
    """The ``device`` field of every top-level config."""
    return Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description="torch device: cpu, cuda or cuda:N")


class _Strict(BaseModel):
    # inf/nan are never meaningful settings (an infinite lr or budget only fails later, mid-run).
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False, allow_inf_nan=False)


class DataConfig(_Strict):
    """The sparse-coding world: x = M z + noise, tasks are signs of linear functions of z."""

    source: Literal["synthetic"] = Field("synthetic", description="synthetic (this world) or a real data set")
    d: int = Field(64, ge=1, description="input dimension")
    n_features: int | None = Field(None, ge=1, description="dictionary size D (default: d)")
    k: int = Field(3, ge=1, description="non-zero latent coordinates per sample (expected, for bernoulli)")
    sparsity: Sparsity = Field(Sparsity.exact, description="exact: k non-zeros; bernoulli: each w.p. k/D")
    values: Values = Field(Values.sign, description="sign: +-1; uniform: +-U[value_low, 1]")
    value_low: float = Field(0.5, ge=0.0, le=1.0, description="lower end a of |z_j| ~ U[a, 1]")
    noise: float = Field(0.05, ge=0.0, description="sigma: xi ~ N(0, sigma^2/d I)")
    dictionary: Dictionary = Field(Dictionary.orthogonal, description="orthogonal, identity or overcomplete")
    coherence: float = Field(
        0.0, ge=0.0, lt=1.0, description="share of a common direction mixed into every column (0 = none)"
    )
    n_tasks: int = Field(1, ge=1, description="number of pre-training tasks K")
    n_train: int | None = Field(None, ge=1, description="fixed pre-training set size (default: fresh batches)")

    @property
    def D(self) -> int:  # noqa: N802 - the paper's symbol
        return self.n_features if self.n_features is not None else self.d

    @model_validator(mode="after")
    def _check_sizes(self) -> DataConfig:
        if self.k > self.D:
            raise ValueError(
                f"data.k={self.k} exceeds data.n_features={self.D}: a code cannot have more non-zeros than "
                "features; lower data.k or raise data.n_features"
            )
        if self.dictionary == Dictionary.overcomplete and self.d >= self.D:
            raise ValueError(
                f"data.dictionary=overcomplete needs data.n_features > data.d (got {self.D} <= {self.d}); "
                "set data.n_features larger than data.d"
            )
        if self.dictionary != Dictionary.overcomplete and self.d != self.D:
            raise ValueError(
                f"data.dictionary={self.dictionary.value} needs data.n_features == data.d "
                f"(got {self.D} != {self.d}); use data.dictionary=overcomplete for D > d"
            )
        if self.values == Values.sign and self.sparsity == Sparsity.exact and self.k % 2 == 0:
            # <theta, z> is a sum of k terms +-1: with even k it can be 0 and labels become ties.
            raise ValueError(
                f"data.k={self.k} is even with +-1 values, so <theta, z> can be 0 and labels are ties; "
                "use an odd data.k or data.values=uniform"
            )
        return self


class RealDataConfig(_Strict):
    """A real data set, flat inputs in [0, 1] (robinherit.data.datasets), and the protocol that makes its two tasks."""

    source: str = Field(description="a data set of robinherit.data.datasets.LOADERS: digits, mnist1d, mnist, ...")

    @field_validator("source")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in LOADERS:
            raise ValueError(f"data.source={v!r} is not a data set; allowed values: {', '.join(LOADERS)}")
        return v

    root: str | None = Field(
        None, description="folder of the data files (mnist, fashion_mnist, cifar10; default: the usual places)"
    )
    n_train: int | None = Field(None, ge=2, description="cap on training examples (a fixed subset; None = all)")
    mnist1d_samples: int = Field(5000, ge=20, description="examples MNIST-1D's generator makes (80% train)")
    center: bool = Field(True, description="subtract the training mean inside the encoder (inputs stay in [0, 1])")
    protocol: Protocol = Field(Protocol.same_task, description="same_task, relabel or class_split")
    relabel: Relabel = Field(Relabel.parity, description="derived downstream task of relabel: parity or halves")
    pretrain_classes: tuple[int, ...] | None = Field(
        None, description="class_split: classes seen in pre-training (default: the lower half)"
    )


class ConvConfig(_Strict):
    """Shape of the conv encoder's stack; the feature layer's width, unit and threshold come from ``model``."""

    channels: tuple[int, ...] = Field((16, 32), min_length=1, description="output channels of each conv layer")
    kernel: int = Field(3, ge=1, description="square kernel size of every conv layer")


class ModelConfig(_Strict):
    """Two-layer network h_i(x) = act(<w_i, x>, b_i) with a linear head."""

    @field_validator("activation", mode="before")
    @classmethod
    def _unit(cls, v: Any) -> Any:
        name = getattr(v, "value", v)
        if name not in UNITS:
            raise ValueError(f"model.activation={name!r} is not a unit; allowed values: {', '.join(UNITS)}")
        return name

    width: int = Field(128, ge=1, description="hidden nodes m")
    activation: str = Field(
        "sym_relu", description="hidden unit, a name of activations.UNITS: sym_relu (thresholded, symmetric) or relu"
    )
    threshold: float = Field(0.3, ge=0.0, description="initial threshold b >= 0 of every node")
    learn_threshold: bool = Field(False, description="train b (kept >= 0) instead of fixing it")
    normalize_rows: bool = Field(True, description="use w_i / ||w_i|| inside the forward pass")
    encoder: str = Field(
        EncoderKind.two_layer,
        description="a name of models.encoder.ENCODERS: two_layer (the theory's network), conv (image data sets "
        "only) or a registered one",
    )

    @field_validator("encoder")
    @classmethod
    def _encoder(cls, v: str) -> str:
        name = getattr(v, "value", v)
        if name not in ENCODERS:
            raise ValueError(f"model.encoder={name!r} is not an encoder; allowed values: {', '.join(ENCODERS)}")
        return EncoderKind(name) if name in EncoderKind.__members__ else name  # the shipped names stay members

    conv: ConvConfig = Field(ConvConfig(), description="conv stack of encoder=conv")


class PretrainConfig(_Strict):
    method: Method = Field(Method.supervised, description="supervised or contrastive")
    eps: float = Field(0.25, ge=0.0, description="adversarial budget during pre-training (0 = clean)")
    norm: Norm = Field(Norm.l2, description="threat model of the inner maximisation")
    attack: AttackKind = Field(AttackKind.pgd, description="inner maximisation: pgd or fgm")
    attack_steps: int = Field(5, ge=1, description="PGD steps of the inner maximisation")
    steps: int = Field(2000, ge=1, description="optimiser steps")
    batch_size: int = Field(256, ge=2, description="examples per step")
    # The upper bound only rejects typos: beyond ~1e37 the optimiser's float32 step overflows with a raw error.
    lr: float = Field(1e-2, gt=0.0, le=1e6, description="learning rate")
    optimizer: Optimizer = Field(Optimizer.adam, description="adam or sgd")
    weight_decay: float = Field(0.0, ge=0.0, description="L2 weight decay")
    # contrastive pre-training (method=contrastive)
    temperature: float = Field(0.2, gt=0.0, description="InfoNCE temperature")
    augmentation: Augmentation = Field(Augmentation.noise, description="none, noise, mask or feature_dropout")
    aug_strength: float = Field(
        0.1, ge=0.0, description="noise: std of the added noise; mask: 1 - keep prob; feature_dropout: drop prob"
    )
    adversarial_view: AdversarialView = Field(AdversarialView.one, description="perturb one view or both")
    projector_dim: int = Field(0, ge=0, description="linear projector output size (0 = no projector)")

    @model_validator(mode="after")
    def _check_aug(self) -> PretrainConfig:
        if self.augmentation in (Augmentation.mask, Augmentation.feature_dropout) and self.aug_strength >= 1.0:
            raise ValueError(
                f"pretrain.aug_strength={self.aug_strength} drops everything for {self.augmentation.value}; "
                "it is a drop probability and must be < 1"
            )
        return self


class DownstreamConfig(_Strict):
    heads: tuple[HeadKind, ...] = Field(
        (HeadKind.clean, HeadKind.adversarial), min_length=1, description="heads to train on frozen features"
    )
    eps: float = Field(0.25, ge=0.0, description="budget of the adversarial head's training attack")
    steps: int = Field(300, ge=1, description="head optimiser steps (full batch)")
    n_train: int = Field(2000, ge=2, description="downstream training examples")
    lr: float = Field(5e-2, gt=0.0, le=1e6, description="head learning rate (Adam)")
    attack_steps: int = Field(5, ge=1, description="PGD steps for the adversarial head")
    batch_size: int | None = Field(
        None, ge=1, description="head minibatch (epochs over a shuffled training set); None: full batch every step"
    )
    weight_decay: float = Field(0.0, ge=0.0, description="L2 weight decay of the head: bounds its norm")
    epochs: int | None = Field(
        None,
        ge=1,
        description="passes over the training set (with batch_size: the field's SLF / ALF protocol); set, it "
        "replaces steps by epochs x ceil(n_train / batch_size)",
    )
    optimizer: Optimizer = Field(Optimizer.adam, description="head optimiser: adam, or sgd (momentum 0.9)")
    lr_schedule: LrSchedule = Field(
        LrSchedule.constant,
        description="head learning rate over its steps: constant, or cosine (decays to 0 by the last step, so a "
        "minibatch head ends at a converged point rather than wherever the last batches left it)",
    )


class EvalConfig(_Strict):
    eps_grid: tuple[float, ...] = Field(
        (0.0, 0.1, 0.25, 0.5, 1.0, 2.0), min_length=1, description="budgets for robust accuracy"
    )
    norm: Norm = Field(Norm.l2, description="threat model of the evaluation attack")
    steps: int = Field(20, ge=1, description="PGD steps")
    restarts: int = Field(2, ge=1, description="random restarts (worst case kept per example)")
    n_test: int | None = Field(
        1000, ge=1, description="test examples (real data: a fixed subset of the test split; None = all of it)"
    )
    autoattack: AutoAttackSet = Field(
        AutoAttackSet.none,
        description="AutoAttack beside PGD (real data only, inputs in [0, 1]): custom, standard or none",
    )
    attacks: tuple[str, ...] = Field(
        (), description="more attacks beside PGD, names of evaluation.EVAL_ATTACKS (per-example worst case)"
    )
    apgd_steps: int = Field(100, ge=1, description="APGD iterations (AutoAttack uses 100)")
    square_queries: int = Field(1000, ge=1, description="Square attack queries (AutoAttack uses 5000)")
    dictionary: DictMethod = Field(
        DictMethod.ica, description="real data: learned dictionary the purity proxy reads loadings on"
    )
    dictionary_atoms: int | None = Field(None, ge=1, description="atoms (None: effective rank of the data)")
    max_patches: int = Field(20000, ge=100, description="patches sampled to learn a conv filter dictionary")

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


class ExperimentConfig(_Strict):
    data: DataSection = Field(DataConfig(), description="the data source: synthetic world or a real data set")
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    downstream: DownstreamConfig = DownstreamConfig()
    eval: EvalConfig = EvalConfig()
    seed: int = Field(0, ge=0, description="seed of everything: dictionary, tasks, data, init, attacks")
    device: str = device_field()
    plugins: list[str] = Field([], description="modules imported first in every process (robinherit.plugins)")

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
        """What a run's numbers depend on: the resolved config less the settings that are inert for this run,
        plus the device type (CUDA and CPU draw different random streams) and the numerics version of its kind
        (``NUMERICS_BY_KIND``)."""
        out = self.resolved()
        out.pop("device")
        out.pop("plugins")  # where entries come from, not what a run computes
        for path in inert_paths(self):
            drop_path(out, path)
        out["device_type"] = torch_device_type(self.device)
        out["numerics"] = NUMERICS_BY_KIND[numerics_kind(self)]
        return out

    def config_hash(self) -> str:
        """Identity of a run: 16 hex digits of the SHA-256 of :meth:`identity` (seed included)."""
        return _digest(self.identity())

    def pretrain_hash(self) -> str:
        """Identity of a run's pre-trained encoder: :meth:`identity` less the downstream and evaluation settings,
        which only act after pre-training. Runs with equal ``pretrain_hash`` train the same encoder, so a batch of
        them (a sweep over the head's training or the evaluation) pre-trains it once."""
        out = self.identity()
        out.pop("downstream")
        out.pop("eval")
        return _digest(out)


def _digest(identity: dict[str, Any]) -> str:
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def numerics_kind(cfg: ExperimentConfig) -> str:
    """Which entry of ``NUMERICS_BY_KIND`` versions ``cfg``'s numbers."""
    if not cfg.is_real:
        return "synthetic"
    return "real_contrastive" if cfg.pretrain.method == Method.contrastive else "real"


def torch_device_type(device: str) -> str:
    """ "cuda:1" -> "cuda": the index does not change the numbers, the type does."""
    return device.split(":", 1)[0]


_CONTRASTIVE_ONLY = ("temperature", "augmentation", "aug_strength", "adversarial_view", "projector_dim")
_ATTACK = ("norm", "attack", "attack_steps")
_AUTOATTACK = ("apgd_steps", "square_queries")


def inert_paths(cfg: ExperimentConfig) -> list[str]:
    """Dotted paths of settings that cannot change ``cfg``'s run: they are left out of its id, so e.g. a supervised
    run's InfoNCE temperature or a clean run's attack steps never split one run into two."""
    out: list[str] = []
    pre = cfg.pretrain
    if pre.method == Method.supervised:
        out += [f"pretrain.{k}" for k in _CONTRASTIVE_ONLY]
    if pre.eps == 0:
        out += [f"pretrain.{k}" for k in _ATTACK] + ["pretrain.adversarial_view"]
    if HeadKind.adversarial not in cfg.downstream.heads:
        out += ["downstream.eps", "downstream.attack_steps"]
    if cfg.downstream.epochs is not None:
        out.append("downstream.steps")
    if cfg.downstream.lr_schedule == LrSchedule.constant:
        # what every head did before schedules existed: left out, so the runs stored then keep their ids
        out.append("downstream.lr_schedule")
    if cfg.model.encoder != EncoderKind.conv:
        out.append("model.conv")
    if cfg.eval.autoattack == AutoAttackSet.none:
        out += [f"eval.{k}" for k in _AUTOATTACK]
    if not cfg.is_real:
        out += ["eval.dictionary", "eval.dictionary_atoms", "eval.max_patches", "eval.autoattack"]
    else:
        out.append("data.root")  # where the files are is not what they are
        if cfg.data.source != "mnist1d":
            out.append("data.mnist1d_samples")
        if cfg.data.protocol != Protocol.relabel:
            out.append("data.relabel")
        if cfg.data.protocol != Protocol.class_split:
            out.append("data.pretrain_classes")
        if cfg.model.encoder != EncoderKind.conv:
            out.append("eval.max_patches")
    return sorted(set(out))


def drop_path(tree: dict[str, Any], path: str) -> None:
    *parents, last = path.split(".")
    for p in parents:
        tree = tree.get(p, {})
    tree.pop(last, None)


_TAGGED = {"synthetic": DataConfig, "real": RealDataConfig}  # the data union's members by discriminator tag


def _plain_loc(loc: tuple) -> tuple:
    """A pydantic error location without the union's tag: ('data', 'real', 'k') -> ('data', 'k')."""
    return tuple(p for i, p in enumerate(loc) if not (i > 0 and loc[i - 1] == "data" and p in _TAGGED))


def _fmt_validation_error(err: ValidationError, model: type[BaseModel]) -> str:
    lines = []
    for e in err.errors():
        loc = _plain_loc(e["loc"])
        path = ".".join(str(p) for p in loc)
        if e["type"] == "extra_forbidden":
            parent = _submodel(model, e["loc"][:-1])
            valid = ", ".join(sorted(parent.model_fields)) if parent else "?"
            prefix = ".".join(str(p) for p in loc[:-1])
            where = f" in '{prefix}'" if prefix else ""
            hint = ""
            if parent is RealDataConfig and loc[-1] in DataConfig.model_fields:
                hint = " (a setting of the synthetic world; real data sets have no such key)"
            elif parent is DataConfig and loc[-1] == "name":
                hint = f" (real data sets are chosen with data.source: one of {', '.join(REAL_SOURCES)})"
            elif parent is DataConfig and loc[-1] in RealDataConfig.model_fields:
                hint = f" (a setting of real data sets: set data.source to one of {', '.join(REAL_SOURCES)})"
            lines.append(f"unknown key '{path}'{where}{hint}; valid keys: {valid}")
        elif e["type"] in ("enum", "literal_error"):
            allowed = e.get("ctx", {}).get("expected", "")
            lines.append(f"'{path}' = {e.get('input')!r} is not allowed; allowed values: {allowed}")
        elif e["type"] == "value_error":  # our own validators: the message names keys and fixes
            lines.append(e["msg"].removeprefix("Value error, "))
        else:
            lines.append(f"'{path}' = {e.get('input')!r}: {e['msg']}" if path else e["msg"])
    return "invalid config: " + "; ".join(lines)


def _submodel(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    cur: Any = model
    for part in loc:
        if cur is _UNION and part in _TAGGED:
            cur = _TAGGED[part]
            continue
        field = cur.model_fields.get(part) if isinstance(part, str) and isinstance(cur, type) else None
        if field is None:
            return None
        cur = _UNION if (cur is ExperimentConfig and part == "data") else field.annotation
    return cur if isinstance(cur, type) and issubclass(cur, BaseModel) else None


_UNION = object()  # stands for the data section's union while walking an error location


def build_config(raw: dict[str, Any]) -> ExperimentConfig:
    if isinstance(raw, dict) and isinstance(raw.get("plugins"), (list, tuple)):
        load_plugins(raw["plugins"])  # their entries make the config's names valid
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_fmt_validation_error(err, ExperimentConfig)) from None


def parse_override(item: str) -> tuple[str, Any]:
    """``"eval.eps_grid=[0,0.2]"`` -> ``("eval.eps_grid", [0, 0.2])``: a dotted path and its value parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"--set '{item}' is not of the form path=value, e.g. --set pretrain.eps=0.25")
    path, _, text = item.partition("=")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {path}: cannot parse '{text}' as YAML ({err})") from None
    return path.strip(), value


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["data.d=96", "eval.eps_grid=[0,0.2]"]`` -> nested dict; values parsed as YAML."""
    out: dict[str, Any] = {}
    for item in items:
        set_path(out, *parse_override(item))
    return out


def set_path(tree: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    cur = tree
    for p in parts[:-1]:
        nxt = cur.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"cannot set '{path}': '{p}' is a value, not a section")
        cur = nxt
    cur[parts[-1]] = value


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, val in override.items():
        if isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], val)
        else:
            out[key] = val
    return out


def packaged_files(kind: str) -> dict[str, Path]:
    """The YAML files shipped inside the package under ``kind`` ("configs" or "sweeps"), by stem."""
    folder = resources.files("robinherit") / kind
    return {Path(f.name).stem: Path(str(f)) for f in folder.iterdir() if f.name.endswith((".yaml", ".yml"))}


def resolve_path(path: str | Path, kind: str = "configs") -> Path:
    """``path`` itself when it is a file, else the packaged file of that name (``supervised`` or
    ``supervised.yaml`` -> the shipped configs/supervised.yaml), so the shipped configs work from any folder."""
    p = Path(path)
    if p.is_file():
        return p
    shipped = packaged_files(kind)
    stem = p.stem if p.suffix in (".yaml", ".yml") else p.name
    if stem in shipped and (len(p.parts) == 1 or p.parent.name == kind):
        return shipped[stem]
    raise ConfigError(
        f"{kind[:-1]} file '{p}' does not exist; pass a YAML file or the name of a shipped one "
        f"({', '.join(sorted(shipped))})"
    )


def load_yaml(path: str | Path, kind: str = "configs") -> dict[str, Any]:
    p = resolve_path(path, kind)
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file '{p}' is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file '{p}' must hold a mapping of sections (data, model, ...), not {type(raw)}")
    return raw


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), **extra: Any
) -> ExperimentConfig:
    raw = load_yaml(path) if path is not None else {}
    raw = deep_merge(raw, parse_overrides(overrides))
    raw = deep_merge(raw, extra)
    return build_config(raw)


def with_updates(cfg: ExperimentConfig, **paths: Any) -> ExperimentConfig:
    """A copy of ``cfg`` with dotted-path updates, validated again: ``with_updates(c, **{"pretrain.eps": 0})``."""
    raw = cfg.model_dump(mode="json")
    for path, value in paths.items():
        set_path(raw, path, value)
    return build_config(raw)


def explain_config(cfg: ExperimentConfig) -> list[tuple[str, str, str, str, str]]:
    """(path, type, value, default, description) for every setting of ``cfg``, in the order of the config
    models: the field descriptions written here are what ``robinherit config --explain`` shows."""
    rows: list[tuple[str, str, str, str, str]] = []

    def fmt(v: Any) -> str:
        if isinstance(v, Enum):
            return v.value
        if isinstance(v, tuple):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return "null" if v is None else str(v)

    def type_name(field: Any) -> str:
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, Enum):
            return " | ".join(e.value for e in ann)
        text = getattr(ann, "__name__", None) or str(ann)
        return text.replace("typing.", "").replace("robinherit.config.", "")

    def walk(model: BaseModel, prefix: str) -> None:
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            path = f"{prefix}{name}"
            if isinstance(value, BaseModel):
                walk(value, path + ".")
                continue
            if name == "source" and prefix == "data.":
                kind, default = "synthetic | " + " | ".join(REAL_SOURCES), "synthetic"
            else:
                kind, default = type_name(field), fmt(field.default)
            rows.append((path, kind, fmt(value), default, field.description or ""))

    walk(cfg, "")
    return rows
