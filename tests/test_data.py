"""The sparse-coding world: supports, values, dictionaries, noise, tasks, seeds, online vs fixed sets."""

from __future__ import annotations

import math

import pytest
import torch

from robinherit.config import DataConfig
from robinherit.errors import DataError
from robinherit.seeding import generator
from robinherit.world.sparse_coding import BatchStream, make_dictionary, make_world, next_stacked, sample_codes


def g(seed: int = 0) -> torch.Generator:
    return generator(seed, "test")


@pytest.mark.parametrize("k", [1, 3, 5])
def test_exact_support_has_exactly_k_nonzeros(k: int):
    z = sample_codes(DataConfig(d=16, k=k), 2000, g())
    assert ((z != 0).sum(dim=1) == k).all()


def test_exact_support_covers_every_feature_evenly():
    z = sample_codes(DataConfig(d=16, k=3), 16000, g())
    rate = (z != 0).float().mean(dim=0)  # (D,), each 3/16 in expectation
    assert torch.allclose(rate, torch.full_like(rate, 3 / 16), atol=0.02)


def test_bernoulli_support_has_mean_k_over_n_features():
    cfg = DataConfig(d=32, k=3, sparsity="bernoulli")
    z = sample_codes(cfg, 20000, g())
    nnz = (z != 0).sum(dim=1).float()
    # n*D = 640k Bernoulli(3/32) draws: the mean rate has std ~4e-4
    assert abs(float((z != 0).float().mean()) - 3 / 32) < 3e-3
    assert nnz.var() > 1.0  # not exactly k: Binomial(32, 3/32) has variance ~2.7


def test_sign_values_are_plus_minus_one_with_both_signs():
    z = sample_codes(DataConfig(d=16, k=3), 2000, g())
    nz = z[z != 0]
    assert set(nz.unique().tolist()) == {-1.0, 1.0}
    assert abs(float((nz > 0).float().mean()) - 0.5) < 0.05


def test_uniform_values_lie_in_plus_minus_a_to_one():
    cfg = DataConfig(d=16, k=3, values="uniform", value_low=0.4)
    nz = sample_codes(cfg, 4000, g())
    nz = nz[nz != 0].abs()
    assert nz.min() >= 0.4 and nz.max() <= 1.0
    assert nz.min() < 0.42 and nz.max() > 0.98  # spread over the whole interval, not a constant


def test_orthogonal_dictionary_is_orthogonal():
    m = make_dictionary(DataConfig(d=24), g())
    assert m.shape == (24, 24)
    assert torch.allclose(m.T @ m, torch.eye(24), atol=1e-5)
    assert not torch.allclose(m.abs(), torch.eye(24))  # random, not the identity


def test_identity_dictionary():
    assert torch.equal(make_dictionary(DataConfig(d=8, dictionary="identity"), g()), torch.eye(8))


def test_overcomplete_dictionary_has_unit_incoherent_columns():
    m = make_dictionary(DataConfig(d=32, n_features=64, dictionary="overcomplete"), g())
    assert m.shape == (32, 64)
    assert torch.allclose(m.norm(dim=0), torch.ones(64), atol=1e-5)
    gram = (m.T @ m - torch.eye(64)).abs()
    assert gram.max() < 0.8  # no two columns (nearly) parallel
    assert gram.sum() / (64 * 63) < 0.25  # typical coherence ~ sqrt(2 / (pi d)) ~ 0.14


def test_coherence_mixes_a_shared_direction():
    plain = make_dictionary(DataConfig(d=32), g())
    mixed = make_dictionary(DataConfig(d=32, coherence=0.5), g())
    assert torch.allclose(mixed.norm(dim=0), torch.ones(32), atol=1e-5)
    off = ~torch.eye(32, dtype=torch.bool)
    assert (mixed.T @ mixed)[off].mean() > 0.3 > (plain.T @ plain)[off].abs().mean()


def test_noise_std_is_sigma_over_sqrt_d():
    cfg = DataConfig(d=32, k=3, noise=0.5)
    world = make_world(cfg, 0)
    x, z = world.sample(8000, g())
    resid = x - z @ world.M.T  # (n, d): the noise alone
    assert abs(float(resid.std()) - 0.5 / math.sqrt(32)) < 0.01 * 0.5 / math.sqrt(32) * 3
    assert abs(float(resid.mean())) < 1e-3


def test_zero_noise_gives_x_equal_dictionary_times_z():
    world = make_world(DataConfig(d=16, noise=0.0), 0)
    x, z = world.sample(100, g())
    assert torch.allclose(x, z @ world.M.T)


def test_world_is_a_pure_function_of_the_seed():
    cfg = DataConfig(d=16, k=3, n_tasks=2)
    a, b, c = make_world(cfg, 5), make_world(cfg, 5), make_world(cfg, 6)
    assert torch.equal(a.M, b.M) and torch.equal(a.pretrain_tasks, b.pretrain_tasks)
    assert torch.equal(a.downstream_task, b.downstream_task)
    assert not torch.equal(a.M, c.M)
    assert torch.equal(a.sample(10, g(1))[0], b.sample(10, g(1))[0])
    assert not torch.equal(a.sample(10, g(1))[0], a.sample(10, g(2))[0])


def test_batch_stream_is_a_pure_function_of_the_seed():
    world = make_world(DataConfig(d=16), 0)
    s1, s2, s3 = (BatchStream(world, 8, seed) for seed in (0, 0, 1))
    for _ in range(3):
        b1, b2, b3 = s1.next(), s2.next(), s3.next()
        assert torch.equal(b1.x, b2.x) and torch.equal(b1.y, b2.y)
        assert not torch.equal(b1.x, b3.x)


def test_online_stream_draws_fresh_samples_and_fixed_set_repeats():
    world = make_world(DataConfig(d=16), 0)
    online = BatchStream(world, 32, 0)
    rows = torch.cat([online.next().x for _ in range(10)])
    assert rows.unique(dim=0).shape[0] == 320  # every example new
    fixed = BatchStream(world, 32, 0, n_train=20)
    rows = torch.cat([fixed.next().x for _ in range(10)])
    assert rows.unique(dim=0).shape[0] == 20  # minibatches of the same 20 examples
    again = torch.cat([BatchStream(world, 32, 0, n_train=20).next().x for _ in range(1)])
    assert torch.equal(again, rows[:32])


def test_labels_follow_the_tasks_without_ties():
    cfg = DataConfig(d=16, k=3, n_tasks=3)
    world = make_world(cfg, 0)
    _, z = world.sample(500, g())
    scores = z @ world.pretrain_tasks.T  # (n, K)
    assert (scores != 0).all()  # odd k with +-1 values: no ties
    assert torch.equal(world.pretrain_labels(z), (scores > 0).float())
    assert torch.equal(world.downstream_labels(z), (z @ world.downstream_task > 0).long())
    assert world.pretrain_labels(z).shape == (500, 3)
    assert set(world.pretrain_tasks.unique().tolist()) == {-1.0, 1.0}
    assert 0.3 < float(world.downstream_labels(z).float().mean()) < 0.7  # balanced classes


def test_downstream_task_differs_from_every_pretraining_task():
    for seed in range(20):
        world = make_world(DataConfig(d=2, k=1, n_tasks=1), seed)  # 2 sign vectors up to sign: forced apart
        t, theta = world.pretrain_tasks[0], world.downstream_task
        assert not torch.equal(t, theta) and not torch.equal(t, -theta)


def test_impossible_distinct_downstream_task_is_an_error_not_a_hang():
    with pytest.raises(DataError, match="n_features"):
        make_world(DataConfig(d=1, k=1), 0)  # +-1 in one dimension: every task is +-the pre-training one


def _codes_written_out(cfg: DataConfig, n: int, g: torch.Generator) -> torch.Tensor:
    """The sparse codes drawn in the documented order and written out row by row. Exact: 62 random bits per row and
    step (all rows' step 0, then step 1, ...), Floyd's algorithm on each row, then k signs and k magnitudes per row.
    Bernoulli: D uniform keys, D signs and D magnitudes per row, support * signs * magnitudes."""
    if cfg.sparsity == "exact":
        bits = torch.randint(0, 2**62, (cfg.k, n), generator=g)
        signs = torch.randint(0, 2, (n, cfg.k), generator=g).float() * 2 - 1
        mags = torch.ones(n, cfg.k)
        if cfg.values == "uniform":
            mags = cfg.value_low + (1 - cfg.value_low) * torch.rand(n, cfg.k, generator=g)
        z = torch.zeros(n, cfg.D)
        for r in range(n):
            chosen: list[int] = []
            for i, j in enumerate(range(cfg.D - cfg.k, cfg.D)):
                t = int(bits[i, r]) % (j + 1)
                chosen.append(j if t in chosen else t)
            for i, c in enumerate(chosen):
                z[r, c] = signs[r, i] * mags[r, i]
        return z
    support = (torch.rand(n, cfg.D, generator=g) < cfg.k / cfg.D).float()
    signs = torch.randint(0, 2, (n, cfg.D), generator=g).float() * 2 - 1
    mags = torch.ones(n, cfg.D)
    if cfg.values == "uniform":
        mags = cfg.value_low + (1 - cfg.value_low) * torch.rand(n, cfg.D, generator=g)
    return support * signs * mags


@pytest.mark.parametrize("sparsity", ["exact", "bernoulli"])
@pytest.mark.parametrize("values", ["sign", "uniform"])
def test_codes_are_the_documented_stream(sparsity, values):
    """The vectorised sampler gives the written-out codes from the same generator and leaves it in the same state:
    the stream a run's data comes from is the one documented in ``sample_codes``."""
    cfg = DataConfig(d=16, n_features=40, dictionary="overcomplete", k=5, sparsity=sparsity, values=values)
    g_fast, g_ref = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for _ in range(5):
        torch.testing.assert_close(sample_codes(cfg, 300, g_fast), _codes_written_out(cfg, 300, g_ref), rtol=0, atol=0)
    assert torch.equal(torch.rand(4, generator=g_fast), torch.rand(4, generator=g_ref))


def _stack_of_streams(cfg: DataConfig, seeds, batch: int = 64) -> list[BatchStream]:
    return [BatchStream(make_world(cfg, s), batch, s) for s in seeds]


@pytest.mark.parametrize("sparsity", ["exact", "bernoulli"])
@pytest.mark.parametrize("values", ["sign", "uniform"])
def test_stacked_draws_are_each_streams_own(sparsity, values):
    """A stack of online streams draws as one (``next_stacked``) the batches each stream would draw alone: codes and
    labels to the bit, inputs to float rounding (z M^T is one batched matmul), and every generator left where its
    own draws leave it (the next steps agree too)."""
    cfg = DataConfig(d=16, n_features=40, dictionary="overcomplete", k=5, sparsity=sparsity, values=values)
    stacked, alone = _stack_of_streams(cfg, range(5)), _stack_of_streams(cfg, range(5))
    for _ in range(3):
        x, y = next_stacked(stacked)
        ref = [s.next() for s in alone]
        assert x.shape == (5, 64, 16) and y.shape == (5, 64, 1)
        torch.testing.assert_close(x, torch.stack([b.x for b in ref]), rtol=1e-6, atol=1e-6)
        assert torch.equal(y, torch.stack([b.y for b in ref]))
        assert not torch.equal(x[0], x[1])  # each model its own data
    for a, b in zip(stacked, alone, strict=True):
        assert torch.equal(torch.rand(3, generator=a.g), torch.rand(3, generator=b.g))


def test_stacked_draws_repair_collisions_in_small_dictionaries():
    """k close to D makes Floyd's repair step fire on most rows: the stacked repair must match the per-stream one."""
    cfg = DataConfig(d=6, k=5)
    stacked, alone = _stack_of_streams(cfg, range(4), 200), _stack_of_streams(cfg, range(4), 200)
    x, y = next_stacked(stacked)
    ref = [s.next() for s in alone]
    torch.testing.assert_close(x, torch.stack([b.x for b in ref]), rtol=1e-6, atol=1e-6)
    assert torch.equal(y, torch.stack([b.y for b in ref]))


def test_stacked_draws_fall_back_stream_by_stream_for_fixed_sets_and_mixed_configs():
    world = make_world(DataConfig(d=16), 0)
    fixed = [BatchStream(world, 8, s, n_train=20) for s in range(3)]
    again = [BatchStream(world, 8, s, n_train=20) for s in range(3)]
    mixed = [BatchStream(make_world(DataConfig(d=16, k=c), 0), 8, 0) for c in (1, 3)]
    mixed_again = [BatchStream(make_world(DataConfig(d=16, k=c), 0), 8, 0) for c in (1, 3)]
    for streams, ref_streams in ((fixed, again), (mixed, mixed_again)):
        x, y = next_stacked(streams)
        ref = [s.next() for s in ref_streams]
        assert torch.equal(x, torch.stack([b.x for b in ref])) and torch.equal(y, torch.stack([b.y for b in ref]))
