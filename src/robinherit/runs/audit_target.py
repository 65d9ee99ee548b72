"""What an audit audits: an encoder spec resolved to a module (a file's or a package's callable, a registered
architecture with weights, a stored run), its weights' hash, and the audit's id; a stored run's encoder and heads.

It sits with the runs, below the audit itself, because a sweep over audit settings and the readers of a sweep's
records (``records_of``) find an audit's record by its id, and the records of the Python API load a run's encoder.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robinherit.config import ExperimentConfig, HeadKind, as_config, build_config
from robinherit.config.identity import digest, run_identity
from robinherit.data.sources import build_source
from robinherit.errors import ConfigError
from robinherit.runs.experiment import fit_head, frozen_encoder
from robinherit.runs.spec import Sweep
from robinherit.runs.store import ResultStore

AUDIT_VERSION = 1  # bumped when a change of code changes an audit's numbers


def state_sha256(module: nn.Module) -> str:
    """sha256 of a module's state dict: names, dtypes, shapes and raw bytes, in name order."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def audit_config(
    data: str | Path | Mapping[str, Any] | ExperimentConfig, updates: Mapping[str, Any]
) -> ExperimentConfig:
    """The settings of an audit: a config (its data, downstream and eval sections are what the audit reads)."""
    return as_config(dict(data) if isinstance(data, Mapping) else data, dict(updates))


def audit_id(cfg: ExperimentConfig, encoder_sha: str, classifier_sha: str | None) -> str:
    """An audit's id: its weights' hashes and what its numbers depend on (the data, heads and evaluation settings,
    the seed, the device type), never the pre-training settings of the config it borrowed them from."""
    identity = run_identity(cfg)
    for section in ("pretrain", "model"):
        identity.pop(section, None)
    return digest({"audit": AUDIT_VERSION, "encoder": encoder_sha, "classifier": classifier_sha, **identity})


def resolve_encoder(
    spec: nn.Module | str, data: Any, weights: str | Path | None, db: ResultStore | None
) -> tuple[nn.Module, Any, bool]:
    """(module, the config its data comes from, whether the module takes the user's input convention)."""
    if isinstance(spec, nn.Module):
        _load_weights(spec, weights)
        return spec, _need_data(data), True
    if not isinstance(spec, str) or not spec:
        raise ConfigError(
            f"encoder {spec!r} is neither a module nor a spec; give path/file.py:callable, "
            "package.module:callable, a registered encoder name with --weights, or a stored run id"
        )
    if ":" in spec:
        module = _from_callable(spec)
        _load_weights(module, weights)
        return module, _need_data(data), True
    from robinherit.registry import ENCODERS

    if spec in ENCODERS:
        if weights is None:
            raise ConfigError(f"encoder '{spec}' is a registered architecture: give its weights with --weights FILE")
        cfg = audit_config(_need_data(data), {"model.encoder": spec})
        module = frozen_encoder(cfg, None)
        _load_weights(module, weights)
        return module, cfg, False
    return _from_store(spec, data, db)


def _need_data(data: Any) -> Any:
    if data is None:
        raise ConfigError(
            "give the data to audit on: --data NAME (a shipped config such as fashion_mnist or digits, or a YAML file)"
        )
    return data


def _from_callable(spec: str) -> nn.Module:
    """``path/file.py:callable`` or ``package.module:callable``, called with no arguments."""
    where, _, name = spec.rpartition(":")
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise ConfigError(f"encoder file '{where}' does not exist; give path/to/file.py:callable")
            loader = importlib.util.spec_from_file_location(f"robinherit_audit_{path.stem}", path)
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except ConfigError:
        raise
    except Exception as err:  # the user's file: anything it raises on import is theirs to fix
        raise ConfigError(f"encoder spec '{spec}': importing '{where}' failed ({type(err).__name__}: {err})") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(f"encoder spec '{spec}': '{where}' has no callable '{name}'; give path/file.py:callable")
    out = fn()
    if not isinstance(out, nn.Module):
        raise ConfigError(f"encoder spec '{spec}': {name}() returned {type(out).__name__}, not a torch nn.Module")
    return out


def _load_weights(module: nn.Module, weights: str | Path | None) -> None:
    """A state dict from ``weights`` (read with ``weights_only``: tensors only, nothing in the file runs)."""
    if weights is None:
        return
    path = Path(weights)
    if not path.is_file():
        raise ConfigError(f"weights file '{path}' does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, Mapping) and "state_dict" in state:
            state = state["state_dict"]
        module.load_state_dict(state)
    except Exception as err:  # a file of other weights, or not a state dict: the user's to fix
        raise ConfigError(
            f"weights '{path}' do not fit the encoder ({type(err).__name__}: {str(err).splitlines()[0]}); give the "
            "state dict saved from this architecture (torch.save(model.state_dict(), path))"
        ) from None


def _from_store(run_id: str, data: Any, db: ResultStore | None) -> tuple[nn.Module, Any, bool]:
    if db is None:
        raise ConfigError(f"'{run_id}' is no file:callable spec or encoder name, and without a store no run id")
    rec = db.find(run_id)
    weights = None if rec is None else db.artifact(rec["run_id"], "encoder")
    if rec is None or weights is None or rec.get("kind") == "audit":
        raise ConfigError(
            f"'{run_id}' is no file:callable spec, no registered encoder and no stored run in '{db.path}'; give "
            "path/file.py:callable, package.module:callable, an encoder name with --weights, or a run id from "
            "`robinherit runs`"
        )
    cfg = build_config(rec["config"])
    module = frozen_encoder(cfg, weights)
    return module, (cfg if data is None else data), False


def _open(store: str | Path | ResultStore) -> ResultStore:
    return store if isinstance(store, ResultStore) else ResultStore(store, read_only=True)


def load_encoder(run_id: str, store: str | Path | ResultStore = "results/runs.db") -> nn.Module:
    """A stored run's pre-trained encoder, in eval mode, from the store's encoder artifact."""
    encoder, _, _ = _from_store(run_id, None, _open(store))
    return encoder.eval()


def load(run_id: str, store: str | Path | ResultStore = "results/runs.db") -> tuple[nn.Module, dict[str, nn.Module]]:
    """A stored run's pre-trained encoder and its heads (retrained exactly as the run trained them: every stage is
    a pure function of the seed), as modules in eval mode: ``encoder, heads = robinherit.load(run_id)``."""
    encoder, cfg, _ = _from_store(run_id, None, _open(store))
    source = build_source(cfg)
    heads = {f"{k.value}_head": fit_head(cfg, encoder, source, HeadKind(k)).eval() for k in cfg.downstream.heads}
    return encoder.eval(), heads


def audit_points(sweep: Sweep, db: ResultStore | None) -> tuple[nn.Module, bool, list[tuple[ExperimentConfig, str]]]:
    """An audit sweep's encoder (resolved once: every point audits the same weights), whether it takes the user's
    input convention, and each point's config and audit id, in the sweep's order. Each config is the one
    ``robinherit audit ENCODER --set PATH=VALUE ...`` builds for that point, so both find the same record."""
    target = sweep.spec.audit
    if target is None:
        raise ConfigError(f"sweep '{sweep.spec.name}' runs a base config; it has no `audit:` encoder to audit")
    folder = sweep.source.parent if sweep.source is not None else Path.cwd()
    encoder = target.encoder
    where, _, name = encoder.rpartition(":")
    if where.endswith(".py") and (folder / where).is_file():
        encoder = f"{folder / where}:{name}"
    weights = _near(target.weights, folder)
    module, base, wrap = resolve_encoder(encoder, sweep.base, weights, db)
    cfgs = replace(sweep, base=audit_config(base, {})).configs()
    sha = state_sha256(module)
    return module, wrap, [(cfg, audit_id(cfg, sha, None)) for cfg in cfgs]


def _near(path: Path | None, folder: Path) -> Path | None:
    """A relative path of a spec: next to the spec file where it is there, else as given (the working directory)."""
    if path is None or path.is_absolute() or not (folder / path).is_file():
        return path
    return folder / path
