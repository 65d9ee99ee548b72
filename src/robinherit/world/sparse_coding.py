"""The sparse-coding world (after Allen-Zhu & Li 2020, "Feature purification"; Wen & Li 2021).

x = M z + xi with a dictionary M in R^{d x D}, a sparse latent code z in R^D and small Gaussian noise
xi ~ N(0, sigma^2/d I). Tasks are linear-threshold functions of z: y = 1[<w*, z> > 0] for dense sign
vectors w*. Everything is a pure function of the seed (see ``robinherit.seeding``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from robinherit.config import DataConfig, Dictionary, Sparsity, Values
from robinherit.errors import DataError
from robinherit.seeding import generator


def _orthogonal(d: int, g: torch.Generator) -> Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    # Sign fix makes Q Haar-distributed instead of biased by the QR convention.
    return (q * torch.sign(torch.diagonal(r))).float()


def _overcomplete(d: int, n: int, g: torch.Generator) -> Tensor:
    cols = torch.randn(d, n, generator=g)
    return cols / cols.norm(dim=0, keepdim=True)


DICTIONARIES: dict[Dictionary, Callable[[int, int, torch.Generator], Tensor]] = {
    Dictionary.orthogonal: lambda d, n, g: _orthogonal(d, g),
    Dictionary.identity: lambda d, n, g: torch.eye(d),
    Dictionary.overcomplete: _overcomplete,
}


def make_dictionary(cfg: DataConfig, g: torch.Generator) -> Tensor:
    """(d, D) dictionary with unit-norm columns; ``coherence`` mixes a shared direction into each column."""
    m = DICTIONARIES[cfg.dictionary](cfg.d, cfg.D, g)
    if cfg.coherence > 0:
        u = torch.randn(cfg.d, 1, generator=g)
        u = u / u.norm()
        m = math.sqrt(1 - cfg.coherence) * m + math.sqrt(cfg.coherence) * u
        m = m / m.norm(dim=0, keepdim=True)
    return m


# Draws of 62 random bits: reduced modulo m <= D they are uniform on {0..m-1} up to a bias below m / 2^62, far
# finer than torch.randint's own (it reduces 32 bits for ranges under 2^32), and one call serves all k steps.
_BITS = 2**62


def exact_supports(n: int, D: int, k: int, g: torch.Generator) -> Tensor:
    """(n, k) int64: each row k distinct coordinates of {0..D-1}, the set uniform over all k-subsets.

    Robert Floyd's sampling without replacement, run for all rows at once: for j = D-k, ..., D-1 draw t uniform on
    {0..j}; keep t unless the row already holds it, else keep j (which it cannot hold yet). By induction the row's
    set after step j is uniform over the subsets of {0..j} of its size. It costs k draws per row, not D, and
    k(k-1)/2 comparisons. The order within a row is not uniform (a j lands late), which no caller sees: each
    chosen coordinate gets its own independent sign and magnitude.
    """
    # Step i's draws for all rows sit in row i of a (k, n) tensor, so every step works on contiguous memory.
    idx = torch.randint(0, _BITS, (k, n), generator=g) % torch.arange(D - k + 1, D + 1).unsqueeze(1)  # t on {0..j}
    for i in range(1, k):
        taken = (idx[:i] == idx[i]).any(dim=0)  # the row already holds step i's draw
        idx[i].masked_fill_(taken, D - k + i)
    return idx.T


def sample_codes(cfg: DataConfig, n: int, g: torch.Generator) -> Tensor:
    """(n, D) sparse codes.

    Exact sparsity draws, in order: the k-subset of each row (:func:`exact_supports`, k draws of random bits per
    row), k random signs per row, and with uniform values k magnitudes per row, written into zeros. That is O(n k)
    random numbers, where numerics version 2 drew D uniform keys, D signs and D magnitudes per row and kept k of
    each (the same distribution, a different stream). Bernoulli sparsity draws D Bernoulli(k/D) entries, D signs
    and with uniform values D magnitudes per row.
    """
    if cfg.sparsity == Sparsity.exact:
        idx = exact_supports(n, cfg.D, cfg.k, g)
        vals = torch.randint(0, 2, (n, cfg.k), generator=g, dtype=torch.float32) * 2 - 1
        if cfg.values != Values.sign:
            vals = vals * (cfg.value_low + (1 - cfg.value_low) * torch.rand(n, cfg.k, generator=g))
        return torch.zeros(n, cfg.D).scatter_(1, idx, vals)
    support = (torch.rand(n, cfg.D, generator=g) < cfg.k / cfg.D).float()
    signs = torch.randint(0, 2, (n, cfg.D), generator=g).float() * 2 - 1
    if cfg.values == Values.sign:
        return support * signs
    return support * signs * (cfg.value_low + (1 - cfg.value_low) * torch.rand(n, cfg.D, generator=g))


def sign_vectors(count: int, dim: int, g: torch.Generator) -> Tensor:
    return torch.randint(0, 2, (count, dim), generator=g).float() * 2 - 1


@dataclass(frozen=True)
class World:
    """Dictionary and tasks of one seed. ``sample`` draws fresh (x, z) from a caller's generator."""

    cfg: DataConfig
    M: Tensor  # (d, D)
    pretrain_tasks: Tensor  # (K, D), entries +-1
    downstream_task: Tensor  # (D,), entries +-1

    def sample(self, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        z = sample_codes(self.cfg, n, g)  # (n, D)
        x = self.encode(z, g)
        return x, z

    def encode(self, z: Tensor, g: torch.Generator) -> Tensor:
        noise = torch.randn(z.shape[0], self.cfg.d, generator=g) * (self.cfg.noise / math.sqrt(self.cfg.d))
        return z @ self.M.T + noise  # (n, d)

    def pretrain_labels(self, z: Tensor) -> Tensor:
        """(n, K) labels in {0, 1}; a tie <w*, z> = 0 counts as positive."""
        return (z @ self.pretrain_tasks.T >= 0).float()

    def downstream_labels(self, z: Tensor) -> Tensor:
        """(n,) class indices in {0, 1}."""
        return (z @ self.downstream_task >= 0).long()


def make_world(cfg: DataConfig, seed: int) -> World:
    g = generator(seed, "world")
    m = make_dictionary(cfg, g)
    tasks = sign_vectors(cfg.n_tasks + 1, cfg.D, g)
    # The downstream task is a fresh vector, different from every pre-training task (and its negation).
    # There are 2^(D-1) sign vectors up to sign; when the pre-training tasks use them all, no draw can succeed.
    if cfg.D <= 62 and cfg.n_tasks >= 2 ** (cfg.D - 1):
        raise DataError(
            f"data.n_features={cfg.D} allows only {2 ** (cfg.D - 1)} distinct +-1 tasks up to sign, too few for "
            f"{cfg.n_tasks} pre-training task(s) and a different downstream task; raise data.n_features (or data.d)"
        )
    while any(torch.equal(tasks[-1], t) or torch.equal(tasks[-1], -t) for t in tasks[:-1]):
        tasks[-1] = sign_vectors(1, cfg.D, g)[0]
    return World(cfg=cfg, M=m, pretrain_tasks=tasks[:-1], downstream_task=tasks[-1])


class Batch(NamedTuple):
    x: Tensor  # (n, d) inputs
    y: Tensor  # pre-training targets: (n, K) in {0, 1} here; (n,) class indices on real data
    z: Tensor | None = None  # (n, D) latent codes, where the data has them


class BatchStream:
    """Pre-training batches: fresh samples of a world every step (online), or minibatches drawn with replacement
    from a fixed training set (a world's, with ``n_train``, or any arrays, :meth:`from_arrays`). One stream for
    every data source: the draws come from the seed's ``pretrain-batches`` generator either way."""

    def __init__(
        self, world: World, batch_size: int, seed: int, n_train: int | None = None, device: str | torch.device = "cpu"
    ):
        self.world: World | None = world
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.g = generator(seed, "pretrain-batches")
        self.fixed: tuple[Tensor, Tensor, Tensor | None] | None = None
        if n_train is not None:
            x, z = world.sample(n_train, generator(seed, "pretrain-trainset"))
            self.fixed = (x, world.pretrain_labels(z), z)

    @classmethod
    def from_arrays(
        cls, x: Tensor, y: Tensor, batch_size: int, seed: int, device: str | torch.device = "cpu"
    ) -> BatchStream:
        """Minibatches of a fixed training set (x (n, d), targets y) with no world behind it (real data)."""
        stream = cls.__new__(cls)
        stream.world, stream.device, stream.batch_size = None, torch.device(device), batch_size
        stream.g = generator(seed, "pretrain-batches")
        stream.fixed = (x, y, None)
        return stream

    def next(self) -> Batch:
        dev = self.device
        if self.fixed is None:
            assert self.world is not None  # an online stream always has its world
            x, z = self.world.sample(self.batch_size, self.g)
            return Batch(x.to(dev), self.world.pretrain_labels(z).to(dev), z.to(dev))
        x, y, z = self.fixed
        idx = torch.randint(0, x.shape[0], (self.batch_size,), generator=self.g)
        return Batch(x[idx].to(dev), y[idx].to(dev), None if z is None else z[idx].to(dev))


def _sample_stack(worlds: Sequence[World], n: int, gens: Sequence[torch.Generator]) -> tuple[Tensor, Tensor]:
    """``World.sample`` for S worlds of one config at once, to the same draws: (x (S, n, d), z (S, n, D)).

    Each generator makes exactly the draws, in the order, of its own ``sample`` (:func:`sample_codes`, then the
    noise of ``World.encode``); the arithmetic on them (the support's reduction and repair, the scatter, z M^T,
    the noise's scale) runs once on the stack. Exact arithmetic gives the same bits either way; z M^T is a batched
    matmul over the stack, which sums in the same order as each world's own product on the CPU kernels tried
    here (tests/test_data.py holds it to float rounding, the codes and labels to the bit)."""
    cfg = worlds[0].cfg
    S, D, k, d = len(gens), cfg.D, cfg.k, cfg.d
    exact, uniform = cfg.sparsity == Sparsity.exact, cfg.values != Values.sign
    # Each generator fills its slice of one (S, ...) buffer: a draw into a contiguous slice gives the bits of the
    # same draw into a fresh tensor (torch.rand(shape, generator=g) is empty(shape).uniform_(generator=g)), and it
    # spares stacking S tensors afterwards (a copy of each buffer, 2 MiB of noise at S = 32).
    first = torch.empty((S, k, n), dtype=torch.int64) if exact else torch.empty((S, n, D))
    signs = torch.empty((S, n, k if exact else D))
    mags = torch.empty((S, n, k if exact else D)) if uniform else None
    noise = torch.empty((S, n, d))
    for s, g in enumerate(gens):  # sample_codes' draws, then encode's noise, per generator in its own order
        if exact:
            first[s].random_(0, _BITS, generator=g)
        else:
            first[s].uniform_(generator=g)
        signs[s].random_(0, 2, generator=g)
        if mags is not None:
            mags[s].uniform_(generator=g)
        noise[s].normal_(generator=g)
    if exact:
        idx = first % torch.arange(D - k + 1, D + 1).unsqueeze(1)  # (S, k, n): exact_supports on the stack
        for i in range(1, k):
            idx[:, i].masked_fill_((idx[:, :i] == idx[:, i : i + 1]).any(dim=1), D - k + i)
        vals = signs.mul_(2).sub_(1)
        if mags is not None:
            vals = vals * (cfg.value_low + (1 - cfg.value_low) * mags)
        z = torch.zeros(S, n, D).scatter_(2, idx.transpose(1, 2), vals)
    else:
        z = (first < cfg.k / cfg.D).float() * signs.mul_(2).sub_(1)
        if mags is not None:
            z = z * (cfg.value_low + (1 - cfg.value_low) * mags)
    M = torch.stack([w.M for w in worlds])  # (S, d, D)
    # in place, the same bits as z M^T + noise * scale (IEEE addition commutes)
    return torch.bmm(z, M.transpose(1, 2)).add_(noise.mul_(cfg.noise / math.sqrt(cfg.d))), z


def next_stacked(streams: Sequence[BatchStream]) -> tuple[Tensor, Tensor]:
    """The next batch of every stream, stacked: (x (S, n, d), y (S, n, ...)) on the streams' device, the batches
    ``[s.next() for s in streams]`` would give. Online streams of worlds that share a config draw as one stack
    (:func:`_sample_stack`), which at S = 32 spares about 600 small operations per step; any other mix is drawn
    stream by stream, and so is any object that only offers ``next()`` (a wrapper, a test's poisoned stream): its
    own ``next`` is what it promises, not the draws of a plain stream."""
    s0 = streams[0]
    online = all(
        type(s) is BatchStream
        and s.fixed is None
        and s.world is not None
        and s.world.cfg == s0.world.cfg  # type: ignore[union-attr]
        and s.batch_size == s0.batch_size
        and s.device == s0.device
        for s in streams
    )
    if not online or len(streams) < 2:
        batches = [s.next() for s in streams]
        return torch.stack([b.x for b in batches]), torch.stack([b.y for b in batches])
    worlds = [s.world for s in streams]
    x, z = _sample_stack(worlds, s0.batch_size, [s.g for s in streams])  # type: ignore[arg-type]
    tasks = torch.stack([w.pretrain_tasks for w in worlds])  # type: ignore[union-attr]
    y = (torch.bmm(z, tasks.transpose(1, 2)) >= 0).float()  # World.pretrain_labels: exact (small integers)
    return x.to(s0.device), y.to(s0.device)
