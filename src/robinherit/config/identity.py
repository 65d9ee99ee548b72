"""A run's identity: what its numbers depend on, and the id (a hash of it) the results store keys the run by.

Every config field declares, beside its type and default (:func:`field`), whether it is part of the identity:

- ``"always"``: every value is part of it;
- ``"never"``: no value is (where files live, which plugins were imported);
- a rule ``inert(cfg) -> bool``: part of it except where the rule says the setting cannot act on the run (a
  supervised run's InfoNCE temperature), so such a setting never splits one run into two;
- :class:`InertAt` ``(value)``: part of it except at ``value``, the behaviour of every run stored before the field
  existed, so adding a field leaves their ids as they were;
- :class:`HashedAs` ``(key, convert)``: part of it as ``convert(value)`` under ``key`` (the device's type).

This module reads those declarations from any pydantic model; it does not know the config's models.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.fields import FieldInfo

from robinherit.paths import drop_path
from robinherit.registry import FINGERPRINTS

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
NUMERICS_BY_KIND = {"synthetic": NUMERICS_VERSION, "real": 2, "real_contrastive": 3, "real_conv": 4}
# 4 (real_conv): the conv encoder keeps its maps channels-last (another summation order of the same
# convolutions), so a conv run's numbers moved by float rounding; other kinds compute what they did.


@dataclass(frozen=True)
class InertAt:
    """Part of the identity except at ``value`` (what runs did before the field existed)."""

    value: Any


@dataclass(frozen=True)
class HashedAs:
    """Part of the identity as ``convert(value)`` under ``key`` instead of the field's own name."""

    key: str
    convert: Callable[[Any], Any]


Declaration = Literal["always", "never"] | Callable[[Any], bool] | InertAt | HashedAs


@dataclass(frozen=True)
class _Declared:
    """A field's identity declaration, kept in its ``json_schema_extra``; the JSON schema shows it in words."""

    identity: Declaration

    def __call__(self, schema: dict[str, Any]) -> None:
        decl = self.identity
        if isinstance(decl, InertAt):
            schema["identity"] = f"inert at {getattr(decl.value, 'value', decl.value)!r}"
        elif isinstance(decl, HashedAs):
            schema["identity"] = f"as {decl.key}"
        else:
            schema["identity"] = decl if isinstance(decl, str) else f"inert where {decl.__name__}"


def field(default: Any = ..., *, identity: Declaration, **kwargs: Any) -> Any:
    """``pydantic.Field`` with the field's identity declaration (see the module docstring) stored beside it."""
    declaration(identity, "a new field")  # a malformed declaration fails where it is written
    return Field(default, json_schema_extra=_Declared(identity), **kwargs)


def declaration(decl_or_field: Any, where: str) -> Declaration:
    """The identity declaration of a field (a ``FieldInfo``) or a declaration itself, checked."""
    decl = decl_or_field
    if isinstance(decl_or_field, FieldInfo):
        extra = decl_or_field.json_schema_extra
        decl = extra.identity if isinstance(extra, _Declared) else None
    if decl in ("always", "never") or isinstance(decl, InertAt | HashedAs):
        return decl
    if callable(decl) and not isinstance(decl, str | type):
        return decl
    raise TypeError(
        f"config field {where} declares no identity: give it field(..., identity='always' | 'never' | "
        "a rule cfg -> inert | InertAt(value) | HashedAs(key, convert)), so a run's id knows whether it counts"
    )


def _inert(decl: Declaration, cfg: BaseModel, value: Any) -> bool:
    if decl == "always" or isinstance(decl, HashedAs):
        return False
    if decl == "never":
        return True
    if isinstance(decl, InertAt):
        return value == decl.value
    return bool(decl(cfg))


def declared_fields(cfg: BaseModel, model: BaseModel | None = None, prefix: str = "") -> Iterator[tuple]:
    """``(dotted path, declaration, inert for cfg)`` of every field under ``model`` (default: ``cfg``); the fields
    of an inert section are not visited (the whole section is left out)."""
    model = cfg if model is None else model
    for name, info in type(model).model_fields.items():
        path = prefix + name
        decl = declaration(info, f"'{path}' of {type(model).__name__}")
        value = getattr(model, name)
        inert = _inert(decl, cfg, value)
        yield path, decl, inert
        if isinstance(value, BaseModel) and not inert:
            yield from declared_fields(cfg, value, path + ".")


def inert_paths(cfg: Any) -> list[str]:
    """Dotted paths of settings that cannot change ``cfg``'s run: they are left out of its id, so e.g. a supervised
    run's InfoNCE temperature or a clean run's attack steps never split one run into two."""
    return sorted(path for path, _, inert in declared_fields(cfg) if inert)


def numerics_kind(cfg: Any) -> str:
    """Which entry of ``NUMERICS_BY_KIND`` versions ``cfg``'s numbers."""
    if not cfg.is_real:
        return "synthetic"
    if getattr(cfg.model.encoder, "value", cfg.model.encoder) == "conv":
        return "real_conv"
    return "real_contrastive" if cfg.pretrain.method == "contrastive" else "real"


def torch_device_type(device: str) -> str:
    """ "cuda:1" -> "cuda": the index does not change the numbers, the type does."""
    return device.split(":", 1)[0]


def run_identity(cfg: Any) -> dict[str, Any]:
    """What a run's numbers depend on: ``cfg.resolved()`` less its inert settings, with the fields hashed under
    another key renamed, plus the numerics version of its kind (``NUMERICS_BY_KIND``)."""
    out = cfg.resolved()
    for path, decl, inert in declared_fields(cfg):
        if inert:
            drop_path(out, path)
        elif isinstance(decl, HashedAs):
            *parents, last = path.split(".")
            section = out
            for p in parents:
                section = section[p]
            section[decl.key] = decl.convert(section.pop(last))
    out["numerics"] = NUMERICS_BY_KIND[numerics_kind(cfg)]
    if cfg.is_real and cfg.data.source in FINGERPRINTS:
        # what the files hold, not where they are: other files under the same data.root are another run
        out["data_files"] = FINGERPRINTS[cfg.data.source](cfg.data.root)
    return out


def digest(identity: dict[str, Any]) -> str:
    """16 hex digits of the SHA-256 of ``identity`` as canonical JSON."""
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def config_hash(cfg: Any) -> str:
    """Identity of a run: :func:`digest` of :func:`run_identity` (seed included)."""
    return digest(run_identity(cfg))


def pretrain_hash(cfg: Any) -> str:
    """Identity of a run's pre-trained encoder: :func:`run_identity` less the downstream and evaluation settings,
    which only act after pre-training. Runs with equal ``pretrain_hash`` train the same encoder, so a batch of them
    (a sweep over the head's training or the evaluation) pre-trains it once."""
    out = run_identity(cfg)
    out.pop("downstream")
    out.pop("eval")
    return digest(out)
