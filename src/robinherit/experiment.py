"""One experiment, top to bottom:
config -> data -> pre-train -> purification -> downstream heads -> evaluation -> record.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from robinherit import purification
from robinherit.config import ExperimentConfig, HeadKind
from robinherit.data import BatchStream, World, make_world
from robinherit.downstream import train_head
from robinherit.evaluation import evaluate
from robinherit.losses import class_margin, multilabel_margin
from robinherit.models import LinearHead, TwoLayerNet, build_model
from robinherit.pretraining import PRETRAINERS, PretrainLog
from robinherit.provenance import git_commit, versions
from robinherit.seeding import generator
from robinherit.store import ResultStore

Progress = Callable[[str, int, int], None]  # (stage, done, total)


def run_experiment(cfg: ExperimentConfig, progress: Progress | None = None) -> tuple[dict[str, Any], dict]:
    """Run one seed of ``cfg``; returns the result record and artifacts (encoder weights) for the store."""
    torch.manual_seed(cfg.seed)  # nothing should draw from the global stream; this pins it if something does
    dev = torch.device(cfg.device)
    t0 = time.perf_counter()

    # data: the world (dictionary, tasks) and the pre-training stream
    world = make_world(cfg.data, cfg.seed)
    stream = BatchStream(world, cfg.pretrain.batch_size, cfg.seed, cfg.data.n_train, device=dev)

    # pre-train
    model = build_model(cfg.data.d, cfg.model, n_out=cfg.data.n_tasks, g=generator(cfg.seed, "init")).to(dev)
    on_step = (lambda i, n: progress("pretrain", i, n)) if progress else None
    log = PRETRAINERS[cfg.pretrain.method](model, stream, cfg, on_step=on_step)
    model.freeze().eval()
    return finish_experiment(cfg, world, model, log, time.perf_counter() - t0)


def frozen_encoder(cfg: ExperimentConfig, weights: dict[str, Any] | None) -> TwoLayerNet:
    """The pre-trained encoder of ``cfg``'s run from its stored artifact {"W", "b"} (None: at initialisation),
    frozen, on ``cfg.device``. The stored W is the effective (row-normalised) weight; normalising it again is
    the identity."""
    enc = build_model(cfg.data.d, cfg.model, n_out=cfg.data.n_tasks, g=generator(cfg.seed, "init"))
    if weights is not None:
        with torch.no_grad():
            enc.W.copy_(torch.as_tensor(weights["W"]))
            enc.b.copy_(torch.as_tensor(weights["b"]))
    return enc.to(torch.device(cfg.device)).freeze().eval()


def fit_head(
    cfg: ExperimentConfig,
    encoder: TwoLayerNet,
    world: World,
    kind: HeadKind,
    x: Tensor,
    z: Tensor,
    stream: str | None = None,
) -> LinearHead:
    """A downstream head of ``kind`` on the frozen ``encoder``: trained on inputs ``x`` labelled by ``world``'s
    downstream task on their codes ``z``, with the config's downstream settings, budget norm and device, and
    the random stream ``head-<kind>`` (or ``stream``) of the config's seed."""
    dev = torch.device(cfg.device)
    return train_head(
        encoder,
        cfg.model.width,
        2,
        x.to(dev),
        world.downstream_labels(z).to(dev),
        kind,
        cfg.downstream,
        norm=cfg.eval.norm,
        g=generator(cfg.seed, stream or f"head-{kind.value}", dev),
    )


def finish_experiment(
    cfg: ExperimentConfig, world: World, model: TwoLayerNet, log: PretrainLog, pretrain_s: float
) -> tuple[dict[str, Any], dict]:
    """The stages after pre-training (purification, heads, evaluation, record) for one frozen encoder.

    Shared by ``run_experiment`` and the batched path (robinherit.batched), which pre-trains many at once.
    """
    dev = torch.device(cfg.device)
    t_pre = time.perf_counter()

    # purification, on fresh probe inputs
    x_probe, _ = world.sample(2048, generator(cfg.seed, "probe"))
    with torch.no_grad():
        feats = model.features(x_probe.to(dev))
    purity = purification.measure(model.weight(), world.M, feats, s=cfg.data.k)

    # downstream heads on a new task, encoder frozen
    x_tr, z_tr = world.sample(cfg.downstream.n_train, generator(cfg.seed, "downstream-train"))
    heads = {kind: fit_head(cfg, model, world, kind, x_tr, z_tr) for kind in cfg.downstream.heads}
    t_down = time.perf_counter()

    # evaluation: the pre-training task and every head, on fresh test data
    ecfg = cfg.eval
    x_te, z_te = world.sample(ecfg.n_test, generator(cfg.seed, "test"))
    x_te = x_te.to(dev)
    common = dict(eps_grid=ecfg.eps_grid, norm=ecfg.norm, steps=ecfg.steps, restarts=ecfg.restarts)
    pre_eval = evaluate(
        model,
        x_te,
        world.pretrain_labels(z_te).to(dev),
        multilabel_margin,
        g=generator(cfg.seed, "eval-pretrain", dev),
        **common,
    )
    y_te = world.downstream_labels(z_te).to(dev)
    head_evals = {
        f"{kind.value}_head": evaluate(
            head, x_te, y_te, class_margin, g=generator(cfg.seed, f"eval-{kind.value}", dev), **common
        ).to_dict()
        for kind, head in heads.items()
    }
    t_eval = time.perf_counter()

    record = {
        "run_id": cfg.config_hash(),
        "seed": cfg.seed,
        "config": cfg.resolved(),
        "pretrain": {**pre_eval.to_dict(), "loss_curve": log.losses},
        "purification": {**purity.summary(), "per_node_top1": [round(float(v), 5) for v in purity.top1_share]},
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
    artifacts = {
        "encoder": {
            "W": model.weight().detach().cpu().numpy(),
            "b": model.threshold().detach().cpu().numpy(),
            "M": world.M.numpy(),
        }
    }
    return record, artifacts


def run_or_load(
    cfg: Any,
    store: ResultStore | None,
    *,
    force: bool = False,
    progress: Progress | None = None,
    runner: Callable[..., tuple[dict[str, Any], dict]] | None = None,
) -> tuple[dict[str, Any], bool]:
    """The stored record of ``cfg`` if there is one (and not ``force``), else run and store it.

    ``runner(cfg, progress)`` makes the record (default: ``run_experiment``; real data passes its own); ``cfg``
    needs a ``config_hash()``. Returns ``(record, from_store)``.
    """
    if store is not None and not force:
        cached = store.get(cfg.config_hash())
        if cached is not None:
            return cached, True
    record, artifacts = (runner or run_experiment)(cfg, progress)
    if store is not None:
        store.put(record, artifacts)
    return record, False


def run_many_or_load(
    cfgs: list[ExperimentConfig],
    store: ResultStore | None,
    *,
    force: bool = False,
    progress: Progress | None = None,
    on_record: Callable[[dict[str, Any], bool], None] | None = None,
) -> list[dict[str, Any]]:
    """Records of many configs, in order: stored ones are loaded, the rest run and stored one by one.

    Each finished run is stored at once, so an interrupted call loses at most the run in flight.
    ``on_record(record, from_store)`` is called as each one becomes available.
    """
    # Configs that share shapes are pre-trained as one stack (robinherit.batched: same results as one by one,
    # much faster); configs without a batched path run the plain way. on_record still sees input order.
    from robinherit import batched
    from robinherit.errors import NonFiniteLossError

    out: list[dict[str, Any] | None] = [None] * len(cfgs)
    from_store = [False] * len(cfgs)
    ids = [cfg.config_hash() for cfg in cfgs]
    first: dict[str, int] = {}  # run_id -> index of its first occurrence; repeats are copies of it
    emitted = 0

    def finish(i: int, rec: dict[str, Any], cached: bool) -> None:
        nonlocal emitted
        for j in [i] + [j for j, rid in enumerate(ids) if j != i and first[rid] == i]:
            out[j], from_store[j] = rec, cached or (j != i and store is not None)
        while emitted < len(cfgs) and out[emitted] is not None:
            if on_record is not None:
                on_record(out[emitted], from_store[emitted])
            emitted += 1

    todo = []
    for i, rid in enumerate(ids):
        first.setdefault(rid, i)
    for i, rid in enumerate(ids):
        if first[rid] != i:
            continue
        stored = None if store is None or force else store.get(rid)
        if stored is not None:
            finish(i, stored, True)
        else:
            todo.append(i)
    for group in batched.group_configs([cfgs[i] for i in todo]):
        idx = [todo[j] for j in group]
        stack = [cfgs[i] for i in idx]
        done = 0
        if batched.batch_key(stack[0]) is not None:  # a stack of one too: the closed-form step is faster
            try:
                for rec, artifacts in batched.iter_experiments(stack, progress):
                    if store is not None:
                        store.put(rec, artifacts)
                    finish(idx[done], rec, False)
                    done += 1
            except NonFiniteLossError:
                pass  # rerun one by one: the runs before the failing one are stored and its error raised as usual
        for i in idx[done:]:
            rec, artifacts = run_experiment(cfgs[i], progress)
            if store is not None:
                store.put(rec, artifacts)
            finish(i, rec, False)
    return out  # type: ignore[return-value]
