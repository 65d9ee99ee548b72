"""Typed, frozen, validated experiment configuration.

- :mod:`~robinherit.config.schema`: the models (``ExperimentConfig`` and its sections), with the closed sets of
  :mod:`~robinherit.config.enums`;
- :mod:`~robinherit.config.identity`: a run's identity and id, derived from what each field declares (when a field
  is inert: :mod:`~robinherit.config.inert`);
- :mod:`~robinherit.config.io`: YAML files, ``--set`` overrides, validation errors, ``config --explain``.

This package sits below data and models: it validates the names they register (``data.source``,
``model.activation``) through ``robinherit.registry`` without importing them.
"""

from robinherit.config.enums import (
    Activation,
    AdversarialView,
    AttackKind,
    Augmentation,
    AutoAttackSet,
    Dictionary,
    DictMethod,
    EncoderKind,
    HeadKind,
    LrSchedule,
    Method,
    Norm,
    Optimizer,
    Protocol,
    Relabel,
    Sparsity,
    Values,
)
from robinherit.config.identity import (
    NUMERICS_BY_KIND,
    NUMERICS_VERSION,
    HashedAs,
    InertAt,
    field,
    inert_paths,
    numerics_kind,
    torch_device_type,
)
from robinherit.config.io import (
    as_config,
    build_config,
    explain_config,
    load_config,
    load_yaml,
    packaged_files,
    parse_override,
    parse_overrides,
    resolve_path,
    with_updates,
)
from robinherit.config.schema import (
    REAL_SOURCES,
    ConvConfig,
    DataConfig,
    DataSection,
    DownstreamConfig,
    EvalConfig,
    ExperimentConfig,
    ModelConfig,
    PretrainConfig,
    RealDataConfig,
    device_field,
)
from robinherit.paths import deep_merge, drop_path, set_path

__all__ = [
    "NUMERICS_BY_KIND",
    "NUMERICS_VERSION",
    "REAL_SOURCES",
    "Activation",
    "AdversarialView",
    "AttackKind",
    "Augmentation",
    "AutoAttackSet",
    "ConvConfig",
    "DataConfig",
    "DataSection",
    "DictMethod",
    "Dictionary",
    "DownstreamConfig",
    "EncoderKind",
    "EvalConfig",
    "ExperimentConfig",
    "HashedAs",
    "HeadKind",
    "InertAt",
    "LrSchedule",
    "Method",
    "ModelConfig",
    "Norm",
    "Optimizer",
    "PretrainConfig",
    "Protocol",
    "RealDataConfig",
    "Relabel",
    "Sparsity",
    "Values",
    "as_config",
    "build_config",
    "deep_merge",
    "device_field",
    "drop_path",
    "explain_config",
    "field",
    "inert_paths",
    "load_config",
    "load_yaml",
    "numerics_kind",
    "packaged_files",
    "parse_override",
    "parse_overrides",
    "resolve_path",
    "set_path",
    "torch_device_type",
    "with_updates",
]
