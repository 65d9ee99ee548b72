"""Configs in and out: YAML files (the shipped ones by name), ``--set path=value`` overrides, validation with
errors that name the key and the fix, and the ``config --explain`` table."""

from __future__ import annotations

from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from robinherit.config.schema import REAL_SOURCES, DataConfig, ExperimentConfig, RealDataConfig
from robinherit.errors import ConfigError
from robinherit.paths import deep_merge, set_path
from robinherit.plugins import load_plugins

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
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file '{p}' is not valid YAML: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"config file '{p}' is not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8"
        ) from None
    except OSError as err:
        raise ConfigError(f"config file '{p}' cannot be read ({err.strerror or err})") from None
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


def as_config(
    config: str | Path | dict[str, Any] | ExperimentConfig, updates: dict[str, Any] | None = None
) -> ExperimentConfig:
    """A config from what a caller holds (a YAML path, a shipped config's name, a dict of sections or a config),
    with dotted-path ``updates`` applied: what ``robinherit.run`` and ``robinherit.audit`` take."""
    if isinstance(config, ExperimentConfig):
        cfg = config
    elif isinstance(config, dict):
        cfg = build_config(dict(config))
    else:
        cfg = load_config(config)
    return with_updates(cfg, **updates) if updates else cfg


def with_updates(cfg: ExperimentConfig, **paths: Any) -> ExperimentConfig:
    """A copy of ``cfg`` with dotted-path updates, validated again: ``with_updates(c, **{"pretrain.eps": 0})``."""
    raw = cfg.model_dump(mode="json")
    for path, value in paths.items():
        set_path(raw, path, value)
    return build_config(raw)


def describe_path(path: str) -> str | None:
    """The description a config path's field declares (what ``config --explain`` shows), for axis labels; None for
    a path that is no config field (a metric, say). ``config.pretrain.eps`` and ``pretrain.eps`` alike."""
    parts = path.removeprefix("config.").split(".")
    model: Any = ExperimentConfig
    for i, part in enumerate(parts):
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return None
        info = fields[part]
        if i == len(parts) - 1:
            return info.description
        ann = info.annotation
        sections = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if part == "data":  # a union on data.source: the synthetic world's section first, then real data's
            sections = [DataConfig, RealDataConfig]
            found = next((s for s in sections if parts[i + 1] in s.model_fields), None)
            model = found
            continue
        if not sections:
            return None
        model = sections[0]
    return None


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
        return text.replace("typing.", "").replace("robinherit.config.enums.", "").replace("robinherit.config.", "")

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
