"""The one grouper: shared encoders, stacks and work units agree with each other (no run lost, none run twice)."""

from __future__ import annotations

from robinherit.config import load_config, with_updates
from robinherit.runs.schedule import by_encoder, group_configs, shared_encoders, work_units
from robinherit.training.stacked import batch_key


def _mixed():
    base = load_config(None, ["data.d=8", "model.width=8"])
    heads = [with_updates(base, **{"downstream.weight_decay": wd, "seed": s}) for wd in (0, 0.1) for s in range(3)]
    wider = [with_updates(base, **{"model.width": 16, "seed": s}) for s in range(2)]
    cold = [with_updates(base, **{"pretrain.method": "contrastive", "pretrain.temperature": 0.01, "seed": 0})]
    return heads + wider + cold


def test_shared_encoders_pick_the_first_run_of_each_encoder():
    cfgs = _mixed()
    shared = shared_encoders(cfgs)
    assert sorted(i for idx in shared.values() for i in idx) == list(range(len(cfgs)))  # every run, once
    for rep, idx in shared.items():
        assert rep == idx[0] and len({cfgs[i].pretrain_hash() for i in idx}) == 1
    assert len(shared) == len({c.pretrain_hash() for c in cfgs}) == 6  # 3 seeds, 2 wider, 1 cold
    grouped = [cfgs[i].config_hash() for idx in shared.values() for i in idx]
    assert [c.config_hash() for c in by_encoder(cfgs)] == grouped


def test_stacks_of_the_representatives_share_a_batch_key_and_work_units_keep_encoders_whole():
    cfgs = _mixed()
    reps = [cfgs[r] for r in shared_encoders(cfgs)]
    stacks = group_configs(reps)
    assert sorted(i for s in stacks for i in s) == list(range(len(reps)))
    for s in stacks:
        keys = {batch_key(reps[i]) for i in s}
        assert len(keys) == 1 and (None not in keys or len(s) == 1)  # a run without a batched path stands alone
    units = list(work_units(by_encoder(cfgs), size=2))
    assert sum(len(u) for u in units) == len(cfgs)
    for enc in {c.pretrain_hash() for c in cfgs}:
        assert sum(any(c.pretrain_hash() == enc for c in u) for u in units) == 1  # one unit pre-trains it
