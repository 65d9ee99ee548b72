"""S independent runs as one batched computation: supervised or contrastive (adversarial) pre-training of stacked
models.

At the default sizes one two-layer step is far too small to keep a CPU busy: time goes to Python and
autograd overhead. Stacking S models that share shapes (weights (S, m, d), inputs (S, n, d),
``robinherit.models.stacked``) turns S small matmuls into one batched matmul, with the overhead paid once per step
instead of S times.

Every model keeps its own run: its own named random streams (``seeding.generator(seed, name)``), so its
own init, data batches and attack random starts; Adam and SGD act elementwise, so one optimiser over the
stacked tensors is S independent optimisers. A model's result equals the one ``run_experiment`` gives for
its config (to float rounding: a batched matmul sums in another order). Adversarial training is
Madry et al. (2018) (``robinherit.training.step``), with PGD/FGM run per model on the stack
(``robinherit.attacks.gradient``) using closed-form input gradients (``robinherit.ops.stack_grads``). Contrastive
pre-training is SimCLR's InfoNCE, adversarial as in RoCL (Kim et al. 2020), with each model's own augmented views and
its own batch as negatives, its weight gradients in closed form too. Only pre-training is batched (it is the dominant
cost); purification, downstream heads and evaluation run per model, exactly as in ``run_experiment``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from robinherit.attacks.gradient import ATTACKS, budgets, random_start, training_attack
from robinherit.config import AdversarialView, AttackKind, EncoderKind, ExperimentConfig, Method, PretrainConfig
from robinherit.data.augment import make_views
from robinherit.models.encoder import STACKABLE
from robinherit.models.encoder import supports as declares
from robinherit.models.stacked import StackedTwoLayer
from robinherit.models.two_layer import TwoLayerNet, projector_weight
from robinherit.ops.closed_form import MIN_CLOSED_FORM_TEMPERATURE
from robinherit.ops.losses import LOSS_GRADS, multilabel_bce
from robinherit.ops.stack_grads import (
    contrastive_grads,
    per_example,
    stack_attack_loss,
    stack_loss_and_grads,
    stacked_view_loss,
)
from robinherit.seeding import generator
from robinherit.training.optim import PretrainLog, check_finite, make_optimizer
from robinherit.training.step import adversarial_step, run_adversarial_grads
from robinherit.world.sparse_coding import BatchStream, next_stacked

Progress = Callable[[str, int, int], None]  # (stage, done, total)

# Methods whose pre-training has a batched implementation; others run one model at a time.
BATCHED_METHODS = frozenset({Method.supervised, Method.contrastive})


def supports_config(cfg: ExperimentConfig) -> bool:
    """Whether ``cfg``'s pre-training has a stacked, closed-form path: the two-layer encoder, a method of
    ``BATCHED_METHODS``, a training attack of ``attacks.gradient.ATTACKS`` (each runs on a stack), and for
    contrastive pre-training a temperature of at least ``closed_form.MIN_CLOSED_FORM_TEMPERATURE`` (below it the
    shifted exponentials could underflow). Every other config trains on the autograd loop of
    ``robinherit.training.pretraining``."""
    pcfg = cfg.pretrain
    if pcfg.method not in BATCHED_METHODS or cfg.model.encoder != EncoderKind.two_layer:
        return False
    if pcfg.eps > 0 and pcfg.attack not in ATTACKS:
        return False
    return pcfg.method != Method.contrastive or pcfg.temperature >= MIN_CLOSED_FORM_TEMPERATURE


def batch_key(cfg: ExperimentConfig) -> str | None:
    """Configs with the same key can be pre-trained as one stack; None where there is no batched path.

    Everything that shapes pre-training must agree except the seed and the attack budget (kept per model);
    clean and adversarial runs go to different stacks, so clean ones do not pay for an attack.
    """
    if not supports_config(cfg):
        return None
    raw = cfg.resolved()
    pre = dict(raw["pretrain"], eps=None, adversarial=cfg.pretrain.eps > 0)
    return json.dumps([raw["data"], raw["model"], pre, raw["device"]], sort_keys=True)


# The largest stack of a method on the CPU, where larger stacks cost more per model: a contrastive step's (2n, 2n)
# similarity matrices, 1 MiB per model at batch 256, leave the caches as S grows. Measured on the 2-core machine,
# one thread, `python -m benchmarks.contrastive_step --steps 20 --repeats 3 --sizes 2,4,8,16,32`: CPU ms per model
# and step 27.8 (S = 1), 23.4, 23.5, 22.7 (S = 8), 25.4, 26.3 (S = 32).
CPU_MAX_STACK: dict[Method, int] = {Method.contrastive: 8}


def pretrain_stacked(
    net: StackedTwoLayer,
    streams: Sequence[BatchStream],
    cfgs: Sequence[ExperimentConfig],
    loss_fn: Callable[[Tensor, Tensor], Tensor] = multilabel_bce,
    on_step: Callable[[int, int], None] | None = None,
) -> list[PretrainLog]:
    """``pretraining.pretrain_supervised`` for a stack: model s sees streams[s] and is attacked at its eps."""
    pcfg = cfgs[0].pretrain  # shared by the stack except eps (see batch_key)
    eps = [c.pretrain.eps for c in cfgs]
    # PGD with closed-form gradients: attack and gradients as one pure function (step.adversarial_grads), compiled
    # with ROBINHERIT_COMPILE=1; eager, it is bit for bit the step below. Adam takes its one-kernel form (the same
    # update up to float rounding).
    fuse_step = pcfg.eps > 0 and pcfg.attack == AttackKind.pgd and loss_fn in LOSS_GRADS
    opt = make_optimizer(list(net.parameters()), pcfg, fused=True)
    gens = [generator(c.seed, "pretrain-attack", c.device) for c in cfgs]
    attack = training_attack(pcfg.attack, eps=eps, norm=pcfg.norm, steps=pcfg.attack_steps, generator=gens)
    logs = [PretrainLog() for _ in cfgs]
    fused = partial(
        _fused_step,
        net,
        eps=eps,
        budget=budgets(eps, pcfg.attack_steps, net.W),
        gens=gens,
        loss_fn=loss_fn,
        pcfg=pcfg,
        threshold=net.fixed_threshold(),
    )

    def train_loss(x: Tensor, y: Tensor) -> Tensor:  # (S,) each model's mean loss, its .grad set
        if loss_fn in LOSS_GRADS:
            return stack_loss_and_grads(net, x, y, loss_fn)  # closed form
        loss = per_example(loss_fn, net(x), y).mean(dim=1)
        loss.sum().backward()  # model s's parameters get exactly the gradient of its own mean loss
        return loss

    for step in range(pcfg.steps):
        x, y = next_stacked(streams)  # (S, n, d), (S, n, K)
        x = net.centred(x)  # no clip in training, so delta is the same
        opt.zero_grad(set_to_none=True)
        end = partial(_end_step, opt, step=step, cfgs=cfgs, logs=logs, on_step=on_step)
        if fuse_step:
            end(fused(x, y))
        else:  # clean, or FGM (PGD with a closed-form loss takes the fused step)
            adversarial_step(
                x,
                y,
                train_loss,
                end,
                attack=attack if pcfg.eps > 0 else None,
                attack_loss=partial(stack_attack_loss, net, loss_fn),
            )
    return logs


def _fused_step(
    net: StackedTwoLayer,
    x: Tensor,
    y: Tensor,
    *,
    eps: Sequence[float],
    budget: tuple[Tensor, Tensor],
    gens: Sequence[torch.Generator],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    pcfg: PretrainConfig,
    threshold: float | None,
) -> Tensor:
    """PGD from each model's random start and the training gradients at its points, as one pure function
    (``step.adversarial_grads``); sets the stack's ``.grad`` and returns the loss per model (S,). ``budget``: the
    models' (eps, step size) (``attacks.gradient.budgets``)."""
    eps_t, alpha = budget
    loss, grads = run_adversarial_grads(
        *(p.detach() for p in (net.W, net.b, net.V, net.c)),
        x,
        y,
        random_start(x, eps, pcfg.norm, gens),
        eps_t,
        alpha,
        loss_fn=loss_fn,
        cfg=net.cfg,
        learn_b=net.b.requires_grad,
        norm=pcfg.norm,
        steps=pcfg.attack_steps,
        threshold=threshold,
    )
    net.W.grad, net.V.grad, net.c.grad = grads[0], grads[2], grads[3]
    if grads[1] is not None:
        net.b.grad = grads[1]
    return loss


def _end_step(
    opt: torch.optim.Optimizer,
    loss: Tensor,
    step: int,
    cfgs: Sequence[ExperimentConfig],
    logs: Sequence[PretrainLog],
    on_step: Callable[[int, int], None] | None,
) -> None:
    """The end of every stacked step, supervised or contrastive: the finiteness check before the update, the
    update, the loss log and the progress callback."""
    check_finite(loss, step, [c.pretrain for c in cfgs])
    opt.step()
    PretrainLog.add_stack(logs, step, loss)
    if on_step is not None:
        on_step(step + 1, cfgs[0].pretrain.steps)


def pretrain_contrastive_stacked(
    net: StackedTwoLayer,
    streams: Sequence[Any],
    cfgs: Sequence[ExperimentConfig],
    on_step: Callable[[int, int], None] | None = None,
) -> list[PretrainLog]:
    """``pretraining.pretrain_contrastive`` for a stack: model s sees streams[s], its own augmented views (the
    seed's ``augment`` stream), its own projector (the ``projector`` stream) and, when adversarial, its own attack
    starts (``pretrain-attack``) and budget; its batch alone gives its negatives. The training step's gradients
    are in closed form (:func:`contrastive_grads`), the attack's too (``ops.stack_grads.stacked_view_loss``).
    The model's head is not trained; the projector is discarded afterwards, as in the single run.
    """
    if len({batch_key(c) for c in cfgs}) != 1 or batch_key(cfgs[0]) is None:
        raise ValueError("a contrastive stack needs configs with one shared batch_key (see robinherit.runs.schedule)")
    pcfg = cfgs[0].pretrain  # shared by the stack except eps (see batch_key)
    dev, dtype = net.W.device, net.W.dtype
    views = [make_views(pcfg, getattr(s, "world", None), c.seed, dev) for s, c in zip(streams, cfgs, strict=True)]
    projector = None
    if pcfg.projector_dim > 0:
        width = net.W.shape[1]
        weights = [projector_weight(pcfg.projector_dim, width, generator(c.seed, "projector")) for c in cfgs]
        projector = nn.Parameter(torch.stack(weights).to(device=dev, dtype=dtype))
    params = [net.W] + ([net.b] if net.b.requires_grad else []) + ([projector] if projector is not None else [])
    opt = make_optimizer(params, pcfg, fused=True)
    eps = [c.pretrain.eps for c in cfgs]
    gens = [generator(c.seed, "pretrain-attack", c.device) for c in cfgs]
    attack = training_attack(pcfg.attack, eps=eps, norm=pcfg.norm, steps=pcfg.attack_steps, generator=gens)
    t = pcfg.temperature
    logs = [PretrainLog() for _ in cfgs]

    def attack_against(x: Tensor, partner: Tensor) -> Tensor:
        with torch.no_grad():  # closed-form input gradients: no graph
            loss = stacked_view_loss(net, projector, partner, t)
            return attack(loss, x)

    for step in range(pcfg.steps):
        batches = [s.next() for s in streams]
        # each model draws its first view, then its second, from its own generator, as its single run does; the
        # views are made of the raw inputs and then centred, as the encoder centres them
        v1 = net.centred(torch.stack([view(b) for view, b in zip(views, batches, strict=True)]))  # (S, n, d)
        v2 = net.centred(torch.stack([view(b) for view, b in zip(views, batches, strict=True)]))
        if pcfg.eps > 0:  # RoCL: view 1 against the clean view 2 (and, with "both", view 2 against the clean view 1)
            a1 = attack_against(v1, v2)
            v2 = attack_against(v2, v1) if pcfg.adversarial_view == AdversarialView.both else v2
            v1 = a1
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            loss, (g_w, g_b, g_p) = contrastive_grads(
                net.W, net.b, projector, v1, v2, temperature=t, cfg=net.cfg, learn_b=net.b.requires_grad
            )
        net.W.grad = g_w
        if g_b is not None:
            net.b.grad = g_b
        if projector is not None:
            projector.grad = g_p
        _end_step(opt, loss, step, cfgs, logs, on_step)
    return logs


def supports(model: nn.Module, cfg: ExperimentConfig) -> bool:
    """Whether the stacked path (``pretrain_stacked``, ``pretrain_contrastive_stacked``) can train ``model`` under
    ``cfg``: an encoder that declares the ``stackable`` capability (``models.encoder``: the two-layer net), and a
    config of :func:`supports_config`."""
    return declares(model, STACKABLE) and supports_config(cfg)


def pretrain_one(
    model: TwoLayerNet,
    stream: BatchStream,
    cfg: ExperimentConfig,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = multilabel_bce,
    on_step: Callable[[int, int], None] | None = None,
) -> PretrainLog:
    """One model through the stacked path (a stack of one): what ``pretraining.pretrain_supervised`` runs for the
    two-layer network. The stack's fused steps cost fewer passes than the generic autograd loop."""
    net = StackedTwoLayer([model]).to(model.W.device)
    (log,) = pretrain_stacked(net, [stream], [cfg], loss_fn, on_step)
    net.unstack([model])
    return log


def pretrain_contrastive_one(
    model: TwoLayerNet, stream: Any, cfg: ExperimentConfig, on_step: Callable[[int, int], None] | None = None
) -> PretrainLog:
    """One model's contrastive pre-training as a stack of one: what ``pretraining.pretrain_contrastive`` runs for the
    two-layer network (closed-form attack and training step)."""
    net = StackedTwoLayer([model]).to(model.W.device)
    (log,) = pretrain_contrastive_stacked(net, [stream], [cfg], on_step)
    net.unstack([model])
    return log


__all__ = [
    "BATCHED_METHODS",
    "CPU_MAX_STACK",
    "StackedTwoLayer",
    "batch_key",
    "pretrain_contrastive_one",
    "pretrain_contrastive_stacked",
    "pretrain_one",
    "pretrain_stacked",
    "supports",
    "supports_config",
]
