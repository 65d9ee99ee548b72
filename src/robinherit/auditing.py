"""The inheritance audit of any encoder: the field's heads on its frozen features, their robustness, and the units
they read, stored and reported like a run.

    import robinherit
    rec = robinherit.audit(my_encoder, data="fashion_mnist", classifier=my_classifier, eval__n_test=500)
    rec.downstream.clean_head.robust_acc[0.1], rec.units.class_selectivity_mean, rec.encoder.sha256

``encoder`` is an ``nn.Module`` whose ``forward`` maps a batch of inputs to features (n, m) (or whose ``features``
does); inputs follow one convention: images (n, c, h, w) in [0, 1] for image data sets, flat (n, d) otherwise.
The data, downstream and evaluation settings come from a run's config (a shipped config's name such as
``fashion_mnist``, a YAML file, or a stored run's), so ``eval__n_test=200`` or ``--set eval.n_test=200`` work as
for a run. The heads are the field's: SLF (a clean linear head; its norm bound, ``downstream.weight_decay``, is
the dial) and ALF (a linear head trained with PGD on the frozen encoder), as RobustSSL-Bench defines them.

The encoder is left as it was: eval mode and gradients off while it is audited, then its modes and gradient flags
restored; its state dict is not touched (a batch-norm encoder's running statistics included). The audit's id hashes
the weights (sha256 of the state dict) and the resolved settings, so a repeat is answered from the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robinherit.config import ExperimentConfig
from robinherit.data.sources import DataSource, build_source
from robinherit.errors import ConfigError
from robinherit.evaluation.units import unit_measures
from robinherit.runs.audit_target import (
    AUDIT_VERSION,
    audit_config,
    audit_id,
    audit_points,
    load,
    load_encoder,
    resolve_encoder,
    state_sha256,
)
from robinherit.runs.experiment import evaluate_heads, evaluate_model, fit_head
from robinherit.runs.provenance import git_commit, versions
from robinherit.runs.spec import Sweep
from robinherit.runs.store import ResultStore
from robinherit.runs.sweep import SweepReport


class AuditedEncoder(nn.Module):
    """A user's module as the pipeline's encoder: flat inputs (n, d) in, features (n, m) out. Image inputs are
    reshaped to (n, c, h, w) before the module sees them. Declares no capability, so every stage takes its generic
    autograd path."""

    capabilities = frozenset()

    def __init__(
        self, module: nn.Module, image_shape: tuple[int, int, int] | None, feature_dim: int, forward: bool = False
    ):
        super().__init__()
        self.module = module
        self.image_shape = image_shape
        self.feature_dim = feature_dim
        self.read_forward = forward  # a classifier: its logits, never a ``features`` it may also have
        self.head = nn.Identity()  # no pre-training head: only features are audited

    def features(self, x: Tensor) -> Tensor:
        xin = x if self.image_shape is None else x.reshape(x.shape[0], *self.image_shape)
        read = None if self.read_forward else getattr(self.module, "features", None)
        return read(xin) if callable(read) else self.module(xin)

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)

    def freeze(self) -> AuditedEncoder:
        return self.requires_grad_(False)

    def first_layer(self) -> None:
        return None


@contextmanager
def left_as_it_was(*modules: nn.Module | None) -> Iterator[None]:
    """Eval mode and gradients off inside the block; every submodule's mode and every parameter's gradient flag
    restored after it, whatever happens inside."""
    present = [m for m in modules if m is not None]
    modes = [[(sub, sub.training) for sub in m.modules()] for m in present]
    flags = [[(p, p.requires_grad) for p in m.parameters()] for m in present]
    try:
        for m in present:
            m.eval().requires_grad_(False)
        yield
    finally:
        for pairs in modes:
            for sub, training in pairs:
                sub.train(training)
        for pairs in flags:
            for p, flag in pairs:
                p.requires_grad_(flag)


def feature_dim_of(encoder: nn.Module, source: DataSource, x: Tensor) -> int:
    """The width of ``encoder``'s features on the inputs ``x`` (a few, flat), checked to be (n, m): one paragraph
    when not."""
    with torch.no_grad():
        try:
            f = AuditedEncoder(encoder, source.image_shape, 0).features(x)
        except Exception as err:  # a user's module: any failure here means it does not fit the data
            raise ConfigError(
                f"the encoder does not take this data's inputs ({type(err).__name__}: {err}); it gets "
                f"{_convention(source)} and must return features (n, m)"
            ) from None
    if not isinstance(f, Tensor) or f.dim() != 2 or f.shape[0] != x.shape[0]:
        shape = tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
        raise ConfigError(
            f"the encoder returned {shape} for {x.shape[0]} input(s); an audited encoder returns features (n, m): "
            "flatten or pool its output (e.g. end forward with .flatten(1)) or give a module whose features(x) does"
        )
    return int(f.shape[1])


def _convention(source: DataSource) -> str:
    if source.image_shape is None:
        return f"flat inputs (n, {source.d})"
    c, h, w = source.image_shape
    return f"images (n, {c}, {h}, {w}) in [0, 1]"


def run_audit(
    encoder: nn.Module, cfg: ExperimentConfig, *, classifier: nn.Module | None = None, wrap: bool = True
) -> dict[str, Any]:
    """The audit's record (see the module docstring); ``wrap``: the encoder is a user's module (inputs as the
    convention says), not one of the toolkit's encoders (flat inputs, ``features``)."""
    t0 = time.perf_counter()
    source = build_source(cfg)
    train = source.downstream_train(cfg)
    pre_test, test = source.test_splits(cfg)
    dev = torch.device(cfg.device)
    sha = state_sha256(encoder)
    cls_sha = None if classifier is None else state_sha256(classifier)
    before = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    with left_as_it_was(encoder, classifier):
        enc = encoder.to(dev)
        if wrap:
            enc = AuditedEncoder(encoder, source.image_shape, feature_dim_of(encoder, source, test.x[:2].to(dev)))
        heads = {kind: fit_head(cfg, enc, source, kind, train) for kind in cfg.downstream.heads}
        t_heads = time.perf_counter()
        evals = evaluate_heads(cfg, enc, heads, test, source)
        record: dict[str, Any] = {"downstream": evals}
        if classifier is not None:
            model = AuditedEncoder(classifier, source.image_shape, 0, forward=True) if wrap else classifier
            record["pretrain"] = evaluate_model(cfg, model, pre_test, source, "pretrain")
        units = _units(cfg, enc, test, source.clip)
    _check_untouched(encoder, before)
    t_end = time.perf_counter()
    return {
        "run_id": audit_id(cfg, sha, cls_sha),
        "kind": "audit",
        "seed": cfg.seed,
        "config": cfg.resolved(),
        "encoder": {
            "sha256": sha,
            "class": f"{type(encoder).__module__}.{type(encoder).__qualname__}",
            "feature_dim": int(getattr(enc, "feature_dim", 0)),
            "parameters": sum(p.numel() for p in encoder.parameters()),
            "classifier_sha256": cls_sha,
        },
        "dataset": {**source.describe(), "n_downstream_train": int(train.x.shape[0])},
        **record,
        "units": units,
        "timing_s": {"downstream": t_heads - t0, "eval": t_end - t_heads, "total": t_end - t0},
        "versions": versions(),
        "git_commit": git_commit(),
    }


def _units(cfg: ExperimentConfig, enc: nn.Module, test: Any, clip: tuple[float, float] | None) -> dict[str, float]:
    """The unit measures on the features the heads read, at the grid's first non-zero budget."""
    budgets = [e for e in cfg.eval.eps_grid if e > 0]
    if not budgets or test.y.dim() != 1:
        return {}
    dev = torch.device(cfg.device)
    return unit_measures(
        enc.features,
        test.x.to(dev),
        test.y.to(dev),
        eps=budgets[0],
        norm=cfg.eval.norm,
        seed=cfg.seed,
        clip=clip,
    )


def _check_untouched(encoder: nn.Module, before: dict[str, Tensor]) -> None:
    after = encoder.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(v, after[k].detach().cpu().to(v.device))]
    if changed:  # a bug of the toolkit, not of the user's input
        raise RuntimeError(f"the audit changed the encoder's state ({', '.join(changed[:5])}); nothing was stored")


def audit(
    encoder: nn.Module | str,
    data: str | Path | Mapping[str, Any] | ExperimentConfig | None = None,
    *,
    classifier: nn.Module | None = None,
    weights: str | Path | None = None,
    store: str | Path | ResultStore | None = "results/runs.db",
    force: bool = False,
    updates: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> Any:
    """Audit ``encoder`` (a module, or a spec: ``path/file.py:callable``, ``package.module:callable``, a registered
    encoder name with ``weights``, or a stored run id) on ``data`` (a config name or file, a dict, a config; a stored
    run's own by default). Overrides are config paths, as ``robinherit.run`` takes them. Returns the record, from
    the store where it is there (``force`` audits again)."""
    from robinherit.api import Record

    db = store if isinstance(store, ResultStore) or store is None else ResultStore(store)
    module, base, wrap = resolve_encoder(encoder, data, weights, db)
    paths = {**dict(updates or {}), **{k.replace("__", "."): v for k, v in overrides.items()}}
    cfg = audit_config(base, paths)
    cls_sha = None if classifier is None else state_sha256(classifier)
    run_id = audit_id(cfg, state_sha256(module), cls_sha)
    if db is not None and not force and (hit := db.get(run_id)) is not None:
        return Record(hit, store=db)
    rec = run_audit(module, cfg, classifier=classifier, wrap=wrap)
    if db is not None:
        db.put(rec)
    return Record(rec, store=db)


def audit_sweep(
    sweep: Sweep,
    store: ResultStore,
    *,
    force: bool = False,
    on_progress: Callable[[SweepReport], None] | None = None,
    resolved: tuple[nn.Module, bool, list[tuple[ExperimentConfig, str]]] | None = None,
) -> SweepReport:
    """Every audit of an audit sweep (a spec with ``audit:`` instead of ``base:``) that ``store`` lacks, one after
    another in this process: no pool, since every point audits the one module resolved here and an audit's heads
    and attacks are small next to a pre-training. Each record is stored as soon as it is made, under the id of the
    equivalent ``robinherit audit`` call, so a repeat or an interrupted sweep is answered from the store. An audit
    that fails is reported and the others go on; a bad setting (ConfigError) stops the sweep. ``resolved``: what
    ``audit_points`` gave for this sweep, where the caller has it (the encoder is then not loaded again)."""
    module, wrap, points = resolved if resolved is not None else audit_points(sweep, store)
    stored = set() if force else store.run_ids()
    report = SweepReport(total=len(points), skipped=sum(run_id in stored for _, run_id in points))
    if on_progress:
        on_progress(report)
    for cfg, run_id in points:
        if run_id in stored:
            continue
        try:
            rec = run_audit(module, cfg, wrap=wrap)
        except ConfigError:
            raise
        except Exception as err:  # one point's failure (say, a diverging head) must not lose the others
            report.failed.append((run_id, f"{type(err).__name__}: {err}"))
        else:
            store.put(rec)
            report.ran += 1
        if on_progress:
            on_progress(report)
    return report


__all__ = [
    "AUDIT_VERSION",
    "AuditedEncoder",
    "audit",
    "audit_config",
    "audit_id",
    "audit_sweep",
    "left_as_it_was",
    "load",
    "load_encoder",
    "resolve_encoder",
    "run_audit",
    "state_sha256",
]
