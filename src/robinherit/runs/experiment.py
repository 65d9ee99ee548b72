"""One experiment, top to bottom, for every data source:
config -> source -> pre-train -> purification -> downstream heads -> evaluation -> record.

``run_experiment`` runs one config; ``pretrain_stack`` pre-trains the configs of one stack as one batched
computation (``robinherit.training.stacked``: the same results as one by one, much faster), after which each
finishes alone; ``rebuild_run`` rebuilds a stored run's downstream model. Which configs stack or share an encoder
is decided in ``robinherit.runs.schedule``, the one scheduler behind ``run``, sweeps and ``reproduce``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from robinherit.config import ExperimentConfig, HeadKind, Method, build_config
from robinherit.data.sources import DataSource, Split, build_source, build_sources
from robinherit.evaluation.robust import forward, robust_eval
from robinherit.models.encoder import encoder_builder
from robinherit.models.two_layer import LinearHead
from robinherit.runs.provenance import git_commit, versions
from robinherit.runs.relative_budget import resolved
from robinherit.seeding import generator
from robinherit.training import stacked as batched
from robinherit.training.heads import train_head
from robinherit.training.optim import PretrainLog
from robinherit.training.pretraining import PRETRAINERS

Progress = Callable[[str, int, int], None]  # (stage, done, total)
Result = tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]  # (record, artifacts)


def run_experiment(cfg: ExperimentConfig, progress: Progress | None = None) -> Result:
    """Run one seed of ``cfg``; returns the result record and artifacts (encoder weights) for the store. Budgets
    given as fractions of the world's scale are resolved first (``robinherit.runs.relative_budget``)."""
    cfg = resolved(cfg)
    return finish_experiment(cfg, *pretrain_alone(cfg, progress))


def pretrain_alone(
    cfg: ExperimentConfig, progress: Progress | None = None
) -> tuple[DataSource, nn.Module, PretrainLog, float]:
    """The stages of one run up to its frozen pre-trained encoder: its source, the encoder, the loss log and the
    seconds it took."""
    dev = torch.device(cfg.device)
    t0 = time.perf_counter()
    source = build_source(cfg)
    model = build_encoder(cfg, source).to(dev)
    stream = source.pretrain_stream(cfg, dev)
    on_step = (lambda i, n: progress("pretrain", i, n)) if progress else None
    log = pretrain(model, stream, cfg, source, on_step)
    model.freeze().eval()
    return source, model, log, time.perf_counter() - t0


def build_encoder(cfg: ExperimentConfig, source: DataSource) -> nn.Module:
    """The untrained encoder of ``cfg`` (``model.encoder``, a name of ``models.encoder.ENCODERS``) with a pre-training
    head of ``source.pretrain_outputs`` outputs."""
    build = encoder_builder(cfg.model.encoder)
    g = generator(cfg.seed, "init")
    return build(cfg.model, source.d, source.pretrain_outputs, source.image_shape, g, source.center)


def pretrain(model: nn.Module, stream: Any, cfg: ExperimentConfig, source: DataSource, on_step=None) -> PretrainLog:
    """Supervised pre-training on the source's own loss (multi-task BCE, or cross-entropy on classes), or
    contrastive pre-training; adversarial when ``pretrain.eps > 0``."""
    extra = {"loss_fn": source.pretrain_loss} if cfg.pretrain.method == Method.supervised else {}
    return PRETRAINERS[cfg.pretrain.method](model, stream, cfg, on_step=on_step, **extra)


def fit_head(
    cfg: ExperimentConfig,
    encoder: nn.Module,
    source: DataSource,
    kind: HeadKind,
    split: Split | None = None,
    stream: str | None = None,
) -> LinearHead:
    """A downstream head of ``kind`` on the frozen ``encoder``, trained on ``split`` (default: the source's
    downstream training split) with the config's downstream settings and the random stream ``head-<kind>``
    (or ``stream``) of the config's seed."""
    dev = torch.device(cfg.device)
    split = split or source.downstream_train(cfg)
    return train_head(
        encoder,
        encoder.feature_dim,
        split.n_classes,
        split.x.to(dev),
        split.y.to(dev),
        kind,
        cfg.downstream,
        norm=cfg.eval.norm,
        g=generator(cfg.seed, stream or f"head-{kind.value}", dev),
        clip=source.clip,
    )


def evaluate_model(
    cfg: ExperimentConfig,
    model: nn.Module,
    split: Split,
    source: DataSource,
    tag: str,
    clean_logits: Tensor | None = None,
) -> dict[str, Any]:
    """Clean, robust (PGD, and AutoAttack where configured) and certified accuracy of ``model`` on ``split``."""
    dev = torch.device(cfg.device)
    return robust_eval(
        model,
        split.x.to(dev),
        split.y.to(dev),
        split.margin,
        cfg.eval,
        n_classes=split.n_classes,
        image_shape=source.image_shape,
        g=generator(cfg.seed, f"eval-{tag}", dev),
        seed=cfg.seed,
        tag=tag,
        clip=source.clip,
        clean_logits=clean_logits,
    )


def evaluate_heads(
    cfg: ExperimentConfig, encoder: nn.Module, heads: dict[HeadKind, nn.Module], split: Split, source: DataSource
) -> dict[str, dict[str, Any]]:
    """Every head's evaluation; linear heads on ``encoder`` share one clean forward pass of it over the test split
    (their attacks differ, so only the clean pass is shared)."""
    dev = torch.device(cfg.device)
    linear = [h for h in heads.values() if isinstance(h, LinearHead) and h.encoder is encoder]
    feats = forward(encoder.features, split.x.to(dev), cfg.eval.batch_size) if linear else None
    return {
        f"{k.value}_head": evaluate_model(
            cfg, h, split, source, k.value, clean_logits=forward(h.linear, feats, None) if h in linear else None
        )
        for k, h in heads.items()
    }


def finish_experiment(
    cfg: ExperimentConfig, source: DataSource, model: nn.Module, log: PretrainLog, pretrain_s: float
) -> Result:
    """The stages after pre-training (purification, heads, evaluation, record) for one frozen encoder; shared by
    ``run_experiment`` and the stacked path, which pre-trains many at once."""
    t_pre = time.perf_counter()
    purity = source.purity(cfg, model)
    train = source.downstream_train(cfg)
    heads = {kind: fit_head(cfg, model, source, kind, train) for kind in cfg.downstream.heads}
    t_down = time.perf_counter()

    pre_test, down_test = source.test_splits(cfg)
    pre_eval = evaluate_model(cfg, model, pre_test, source, "pretrain")
    head_evals = evaluate_heads(cfg, model, heads, down_test, source)
    t_eval = time.perf_counter()

    record = {
        "run_id": cfg.config_hash(),
        "seed": cfg.seed,
        "config": cfg.resolved(),
        "dataset": {**source.describe(), "n_downstream_train": int(train.x.shape[0])},
        "pretrain": {**pre_eval, "loss_curve": log.losses},
        **purity,
        "downstream": head_evals,
        "timing_s": {
            "pretrain": pretrain_s,
            "downstream": t_down - t_pre,
            "eval": t_eval - t_down,
            "total": pretrain_s + t_eval - t_pre,
        },
        "versions": versions(),
        "git_commit": git_commit(),
    }
    return record, {"encoder": encoder_artifact(model, source)}


def source_like(cfg: ExperimentConfig, known_cfg: ExperimentConfig, known: DataSource) -> DataSource:
    """``cfg``'s source, given the data set ``known`` (``known_cfg``'s) has read already."""
    return build_sources([cfg], known=[(known_cfg, known)])[0]


def encoder_artifact(model: nn.Module, source: DataSource) -> dict[str, np.ndarray]:
    """What the store keeps of a pre-trained encoder: the weights it exports (``export_weights``: the two-layer
    net's effective weights and threshold), the true dictionary (where there is one) and its input centre (where it
    has one); an encoder that exports nothing, its state dict."""
    export = getattr(model, "export_weights", None)
    if export is None:
        return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    out = {k: v.detach().cpu().numpy() for k, v in export().items()}
    if source.world is not None:
        out["M"] = source.world.M.numpy()
    if getattr(model, "center", None) is not None:
        out["center"] = model.center.detach().cpu().numpy()
    return out


def frozen_encoder(
    cfg: ExperimentConfig, weights: dict[str, Any] | None, source: DataSource | None = None
) -> nn.Module:
    """The pre-trained encoder of ``cfg``'s run from its stored artifact (None: at initialisation), frozen, on
    ``cfg.device``: read back by the encoder's ``load_weights`` where it exports its own, else as a state dict."""
    source = source or build_source(cfg)
    enc = build_encoder(cfg, source)
    if weights is not None:
        load = getattr(enc, "load_weights", None)
        if load is not None:
            load(weights)
        else:
            with torch.no_grad():
                enc.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()})
    return enc.to(torch.device(cfg.device)).freeze().eval()


# --- re-evaluating a stored run ----------------------------------------------------------------------------


@dataclass
class StoredRun:
    """A stored run's downstream model and test set, rebuilt exactly as ``run_experiment`` made them."""

    cfg: ExperimentConfig
    model: LinearHead  # a head on the stored encoder
    x: Tensor  # (n_test, d)
    y: Tensor  # (n_test,) downstream class labels
    eval_generator: torch.Generator  # the stream the run's own evaluation of this head used
    clip: tuple[float, float] | None = None


def rebuild_run(record: dict[str, Any], encoder: dict[str, Any], head: str = "clean") -> StoredRun:
    """Encoder weights from the store (``ResultStore.artifact(run_id, "encoder")``) plus a retrained ``head``.

    Every stage is a pure function of the seed, so the data, the head and the test set are the ones of the
    original run (bit for bit on the same device and torch build), for any data source.
    """
    cfg = build_config(record["config"])
    kind = HeadKind(head)
    dev = torch.device(cfg.device)
    source = build_source(cfg)
    model = fit_head(cfg, frozen_encoder(cfg, encoder, source), source, kind)
    _, test = source.test_splits(cfg)
    return StoredRun(
        cfg, model, test.x.to(dev), test.y.to(dev), generator(cfg.seed, f"eval-{kind.value}", dev), source.clip
    )


# --- pre-training a stack --------------------------------------------------------------------------------------


def pretrain_stack(
    cfgs: Sequence[ExperimentConfig], progress: Progress | None = None
) -> tuple[list[DataSource], list[nn.Module], list[PretrainLog], float]:
    """Pre-train the configs of one stack (equal ``batched.batch_key``) as one batched computation: their sources,
    frozen models, loss logs and each run's share of the time."""
    keys = {batched.batch_key(c) for c in cfgs}
    if None in keys or len(keys) != 1:
        raise ValueError("pretrain_stack needs configs with one shared batch_key (see schedule.group_configs)")
    dev = torch.device(cfgs[0].device)
    t0 = time.perf_counter()
    sources = build_sources(list(cfgs))
    streams = [s.pretrain_stream(c, dev) for s, c in zip(sources, cfgs, strict=True)]
    models = [build_encoder(c, s) for c, s in zip(cfgs, sources, strict=True)]
    net = batched.StackedTwoLayer(models).to(dev)
    on_step = (lambda i, n: progress("pretrain", i, n)) if progress else None
    if cfgs[0].pretrain.method == Method.contrastive:
        logs = batched.pretrain_contrastive_stacked(net, streams, cfgs, on_step=on_step)
    else:
        logs = batched.pretrain_stacked(net, streams, cfgs, loss_fn=sources[0].pretrain_loss, on_step=on_step)
    models = [m.to(dev) for m in models]
    net.unstack(models)
    return sources, [m.freeze().eval() for m in models], logs, (time.perf_counter() - t0) / len(cfgs)


def iter_stack(cfgs: Sequence[ExperimentConfig], progress: Progress | None = None) -> Iterator[Result]:
    """(record, artifacts) per config of one stack, in order, each as soon as its post-pre-training stages finish:
    batched pre-training, the rest per model, as ``run_experiment``."""
    sources, models, logs, seconds = pretrain_stack(cfgs, progress)
    for cfg, source, model, log in zip(cfgs, sources, models, logs, strict=True):
        yield finish_experiment(cfg, source, model, log, seconds)
