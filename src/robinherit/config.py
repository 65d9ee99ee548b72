"""Typed, frozen, validated experiment configuration.

Every stage reads its settings from one :class:`ExperimentConfig`. Unknown keys are an error that lists
the valid ones; closed sets are Enums; sizes that default from ``data.d`` are properties, so
``--set data.d=96`` alone gives a consistent config.
"""

from __future__ import annotations

import hashlib
import json
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from robinherit.errors import ConfigError


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


def device_field() -> Any:
    """The ``device`` field of every top-level config."""
    return Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description="torch device: cpu, cuda or cuda:N")


class _Strict(BaseModel):
    # inf/nan are never meaningful settings (an infinite lr or budget only fails later, mid-run).
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False, allow_inf_nan=False)


class DataConfig(_Strict):
    """The sparse-coding world: x = M z + noise, tasks are signs of linear functions of z."""

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


class ModelConfig(_Strict):
    """Two-layer network h_i(x) = act(<w_i, x>, b_i) with a linear head."""

    width: int = Field(128, ge=1, description="hidden nodes m")
    activation: Activation = Field(Activation.sym_relu, description="sym_relu (thresholded, symmetric) or relu")
    threshold: float = Field(0.3, ge=0.0, description="initial threshold b >= 0 of every node")
    learn_threshold: bool = Field(False, description="train b (kept >= 0) instead of fixing it")
    normalize_rows: bool = Field(True, description="use w_i / ||w_i|| inside the forward pass")


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


class EvalConfig(_Strict):
    eps_grid: tuple[float, ...] = Field(
        (0.0, 0.1, 0.25, 0.5, 1.0, 2.0), min_length=1, description="budgets for robust accuracy"
    )
    norm: Norm = Field(Norm.l2, description="threat model of the evaluation attack")
    steps: int = Field(20, ge=1, description="PGD steps")
    restarts: int = Field(2, ge=1, description="random restarts (worst case kept per example)")
    n_test: int = Field(1000, ge=1, description="test examples")

    @field_validator("eps_grid")
    @classmethod
    def _grid(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(e < 0 for e in v):
            raise ValueError(f"eval.eps_grid has a negative budget {v}; budgets are radii and must be >= 0")
        return tuple(sorted(set(float(e) for e in v)))


class ExperimentConfig(_Strict):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    downstream: DownstreamConfig = DownstreamConfig()
    eval: EvalConfig = EvalConfig()
    seed: int = Field(0, ge=0, description="seed of everything: dictionary, tasks, data, init, attacks")
    device: str = device_field()

    def resolved(self) -> dict[str, Any]:
        """The config as plain JSON data with derived sizes filled in."""
        out = self.model_dump(mode="json")
        out["data"]["n_features"] = self.data.D
        return out

    def config_hash(self) -> str:
        """Identity of a run: the hash of the resolved config (seed included; device excluded)."""
        return hash_resolved(self.resolved())


def hash_resolved(resolved: dict[str, Any]) -> str:
    """16 hex digits of the SHA-256 of a resolved config without its device (where a run computes is not
    part of what it computes)."""
    payload = {k: v for k, v in resolved.items() if k != "device"}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _fmt_validation_error(err: ValidationError, model: type[BaseModel]) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            parent = _submodel(model, e["loc"][:-1])
            valid = ", ".join(sorted(parent.model_fields)) if parent else "?"
            prefix = ".".join(str(p) for p in e["loc"][:-1])
            where = f" in '{prefix}'" if prefix else ""
            lines.append(f"unknown key '{path}'{where}; valid keys: {valid}")
        elif e["type"] == "enum":
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
        field = cur.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        cur = field.annotation
    return cur if isinstance(cur, type) and issubclass(cur, BaseModel) else None


def build_config(raw: dict[str, Any]) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_fmt_validation_error(err, ExperimentConfig)) from None


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["data.d=96", "eval.eps_grid=[0,0.2]"]`` -> nested dict; values parsed as YAML."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set '{item}' is not of the form path=value, e.g. --set pretrain.eps=0.25")
        path, _, text = item.partition("=")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {path}: cannot parse '{text}' as YAML ({err})") from None
        set_path(out, path.strip(), value)
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


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{p}' does not exist; pass a YAML file such as configs/supervised.yaml")
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
