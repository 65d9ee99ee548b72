"""The training loops' shared step (robinherit.training.step) and their optimiser, log and finiteness check
(robinherit.training.optim), for one model and for a stack."""

from __future__ import annotations

import pytest
import torch

from robinherit.config import DownstreamConfig, LrSchedule, Optimizer, PretrainConfig
from robinherit.errors import NonFiniteLossError
from robinherit.training.optim import PretrainLog, check_finite, make_optimizer, make_schedule, make_stepper
from robinherit.training.step import adversarial_step


def test_a_clean_step_trains_on_the_batch_itself():
    x, y = torch.randn(4, 3), torch.randn(4)
    seen = []
    out = adversarial_step(x, y, lambda xa, t: seen.append((xa, t)) or xa.sum(), lambda loss: 2 * loss)
    assert seen[0][0] is x and seen[0][1] is y and out == 2 * x.sum()


def test_an_adversarial_step_trains_on_the_attack_of_the_loss_at_its_targets():
    x, y = torch.randn(4, 3), torch.randn(4)
    calls = []

    def attack_loss(t):
        calls.append(("loss", t))
        return lambda xa: (xa * t[:, None]).sum(dim=1)

    def attack(loss_fn, xa):
        calls.append(("attack", loss_fn(xa)))
        return xa + 1

    out = adversarial_step(x, y, lambda xa, t: xa, lambda v: v, attack=attack, attack_loss=attack_loss)
    assert torch.equal(out, x + 1)  # the update got the training loss at the attacked points
    assert [c[0] for c in calls] == ["loss", "attack"] and calls[0][1] is y  # the loss is built at this step
    with pytest.raises(ValueError, match="attack_loss"):
        adversarial_step(x, y, lambda xa, t: xa, lambda v: v, attack=attack)


def _params() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.zeros(2))]


@pytest.mark.parametrize("optimizer", list(Optimizer))
def test_one_factory_builds_pretraining_and_head_optimisers_alike(optimizer):
    head = DownstreamConfig(optimizer=optimizer, lr=0.03, weight_decay=0.01)
    pre = PretrainConfig(optimizer=optimizer, lr=0.03, weight_decay=0.01)
    a, b = make_optimizer(_params(), head), make_optimizer(_params(), pre)
    assert type(a) is type(b) is (torch.optim.Adam if optimizer == Optimizer.adam else torch.optim.SGD)
    assert a.defaults == b.defaults and a.defaults["lr"] == 0.03 and a.defaults["weight_decay"] == 0.01
    if optimizer == Optimizer.sgd:
        assert a.defaults["momentum"] == 0.9


def test_the_schedule_is_a_heads_cosine_decay_and_none_for_pretraining():
    opt = make_optimizer(_params(), DownstreamConfig(lr_schedule=LrSchedule.cosine, lr=0.1))
    sched = make_schedule(opt, DownstreamConfig(lr_schedule=LrSchedule.cosine), 10)
    assert isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR) and sched.T_max == 10
    assert make_schedule(opt, DownstreamConfig(), 10) is None
    assert make_schedule(opt, PretrainConfig(), 10) is None


@pytest.mark.parametrize("optimizer", list(Optimizer))
def test_the_stepper_is_the_optimiser_and_cosine_schedule_written_out(optimizer):
    cfg = DownstreamConfig(lr_schedule=LrSchedule.cosine, optimizer=optimizer, lr=0.1, weight_decay=0.01)
    w, ref = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    step = make_stepper([w], cfg, 4)
    if optimizer == Optimizer.sgd:
        opt: torch.optim.Optimizer = torch.optim.SGD([ref], lr=0.1, momentum=0.9, weight_decay=0.01)
    else:
        opt = torch.optim.Adam([ref], lr=0.1, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)
    for _ in range(4):
        step((w**2).sum())
        opt.zero_grad()
        (ref**2).sum().backward()
        opt.step()
        sched.step()
        assert torch.equal(w, ref)
    assert not torch.equal(w, torch.ones(2))


def test_a_stacks_log_is_each_models_own_log():
    losses = torch.rand(120, 3, generator=torch.Generator().manual_seed(0))
    stacked = [PretrainLog(log_every=10) for _ in range(3)]
    alone = [PretrainLog(log_every=10) for _ in range(3)]
    for step, loss in enumerate(losses):
        PretrainLog.add_stack(stacked, step, loss)
        for s, log in enumerate(alone):
            log.add(step, float(loss[s].double()))
    assert [log.losses for log in stacked] == [log.losses for log in alone]
    assert len(stacked[0].losses) == 12


def test_a_stacks_finite_check_names_the_first_model_that_is_not():
    cfgs = [PretrainConfig(lr=0.1), PretrainConfig(lr=0.2), PretrainConfig(lr=0.3)]
    check_finite(torch.tensor([1.0, 2.0, 3.0]), 0, cfgs)
    with pytest.raises(NonFiniteLossError, match=r"lr=0\.2"):
        check_finite(torch.tensor([1.0, float("nan"), float("inf")]), 5, cfgs)
    with pytest.raises(NonFiniteLossError, match="at step 5"):
        check_finite(torch.tensor(float("inf")), 5, cfgs[0])
