"""Library calls leave the caller's process as they found it: ``robinherit.run`` from a notebook draws nothing from
torch's global random stream and makes no allocator setting (only robinherit's own processes do: the CLI, pool
workers)."""

from __future__ import annotations

import torch
from typer.testing import CliRunner

import robinherit
from robinherit.cli import app
from robinherit.training import allocator


def test_run_leaves_the_global_random_stream_and_the_allocator_alone(monkeypatch, micro_cfg):
    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1))
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    recs = robinherit.run(micro_cfg, store=None)
    contrastive = robinherit.run(micro_cfg, store=None, pretrain__method="contrastive", pretrain__projector_dim=4)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert calls == []
    # the run is a function of its seed alone: another global state gives the same numbers
    torch.manual_seed(99)
    again = robinherit.run(micro_cfg, store=None)
    assert again[0]["pretrain"] == recs[0]["pretrain"] and len(contrastive) == 1


def test_the_cli_is_a_process_of_robinherit_and_sets_the_allocator(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1))
    assert CliRunner().invoke(app, ["config"]).exit_code == 0
    assert calls == [1]
