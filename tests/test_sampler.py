"""The exact-k code sampler: its supports are uniform over k-subsets, its signs fair, its magnitudes uniform.

Every check runs on fixed seeds and allows 5 binomial standard deviations (or a chi-square p-value of 1e-6), so a
correct sampler passes with room to spare while the broken samplers at the end (drawing with replacement, biased
toward low coordinates, uniform marginals but clustered supports, uniform pairs but only seven triples) fail.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from scipy import stats

from robinherit.config import DataConfig
from robinherit.seeding import generator
from robinherit.world.sparse_coding import exact_supports, sample_codes

N = 20000  # rows per statistical check
SDS = 5.0  # allowed deviation, in standard deviations of the count under the correct distribution

Sampler = Callable[[int, int, int, torch.Generator], torch.Tensor]


def g(seed: int = 0) -> torch.Generator:
    return generator(seed, "test-sampler")


def support_matrix(idx: torch.Tensor, D: int) -> torch.Tensor:
    return torch.zeros(idx.shape[0], D).scatter_(1, idx, 1.0)


def check_exactly_k_distinct(idx: torch.Tensor, D: int, k: int) -> None:
    assert idx.shape[1] == k
    assert idx.min() >= 0 and idx.max() < D
    assert (support_matrix(idx, D).sum(dim=1) == k).all(), "a row repeats a coordinate"


def check_inclusion(idx: torch.Tensor, D: int, k: int) -> None:
    """Each coordinate is in a row's support with probability k/D: its count is Binomial(N, k/D)."""
    n, p = idx.shape[0], k / D
    counts = torch.bincount(idx.flatten(), minlength=D).double()
    sd = math.sqrt(n * p * (1 - p))
    worst = float((counts - n * p).abs().max())
    assert worst <= SDS * sd, f"inclusion counts off by {worst:.0f} (sd {sd:.1f})"  # k = D: sd 0, counts exact


def check_co_inclusion(idx: torch.Tensor, D: int, k: int) -> None:
    """Each pair of coordinates is in a support together with probability k(k-1) / (D(D-1)). Only where each
    pair expects a count of 50 or more, so that 5 normal sds bound the largest of the D(D-1)/2 counts."""
    n, q = idx.shape[0], k * (k - 1) / (D * (D - 1))
    s = support_matrix(idx, D).double()
    pairs = (s.T @ s)[torch.triu_indices(D, D, offset=1).unbind()]
    sd = math.sqrt(n * q * (1 - q))
    worst = float((pairs - n * q).abs().max())
    assert worst <= SDS * sd, f"pair counts off by {worst:.0f} (sd {sd:.1f})"


def check_subsets_uniform(idx: torch.Tensor, D: int, k: int) -> None:
    """Chi-square over all C(D, k) supports (small D only): every k-subset equally likely."""
    keys = (support_matrix(idx, D).long() << torch.arange(D)).sum(dim=1)
    _, counts = keys.unique(return_counts=True)
    cells = math.comb(D, k)
    if cells == 1:
        assert counts.numel() == 1, "k = D: every row's support must be all coordinates"
        return
    observed = torch.cat([counts, torch.zeros(cells - counts.numel(), dtype=counts.dtype)]).double()
    p = stats.chisquare(observed.numpy()).pvalue
    assert p > 1e-6, f"supports not uniform over the {cells} subsets: chi-square p = {p:.2g}"


def check_supports(sampler: Sampler, D: int, k: int, seed: int = 0) -> None:
    idx = sampler(N, D, k, g(seed))
    check_exactly_k_distinct(idx, D, k)
    check_inclusion(idx, D, k)
    if k >= 2 and N * k * (k - 1) / (D * (D - 1)) >= 50:
        check_co_inclusion(idx, D, k)
    if math.comb(D, k) <= 200:
        check_subsets_uniform(idx, D, k)


@pytest.mark.parametrize(
    ("D", "k"), [(16, 3), (40, 5), (7, 3), (6, 3), (5, 2), (16, 1), (16, 15), (8, 8), (512, 3), (64, 32)]
)
def test_exact_supports_are_uniform_k_subsets(D: int, k: int):
    check_supports(exact_supports, D, k)


def test_sample_codes_supports_are_uniform_k_subsets():
    """The same checks on the codes themselves (their non-zero pattern), sign and uniform values."""
    for values in ("sign", "uniform"):
        cfg = DataConfig(d=16, n_features=40, dictionary="overcomplete", k=5, values=values)
        z = sample_codes(cfg, N, g())
        idx = (z != 0).nonzero()[:, 1].reshape(N, cfg.k)
        check_exactly_k_distinct(idx, cfg.D, cfg.k)
        check_inclusion(idx, cfg.D, cfg.k)
        check_co_inclusion(idx, cfg.D, cfg.k)


@pytest.mark.parametrize(("d", "k"), [(16, 3), (15, 15), (16, 1)])
def test_signs_are_fair_and_independent(d: int, k: int):
    z = sample_codes(DataConfig(d=d, k=k), N, g())
    signs = z[z != 0]
    assert set(signs.unique().tolist()) == {-1.0, 1.0}
    # overall: N k fair coins
    total = N * k
    assert abs(float((signs > 0).sum()) - total / 2) < SDS * math.sqrt(total / 4)
    # per coordinate: the sign does not depend on which coordinate carries it
    pos, nnz = (z > 0).sum(dim=0).double(), (z != 0).sum(dim=0).double()
    assert ((pos - nnz / 2).abs() < SDS * (nnz / 4).sqrt()).all()
    # within a row: k independent signs sum to variance k (perfectly tied signs would give k^2)
    if k > 1:
        row_var = float(z.sum(dim=1).var())
        # the sample variance of N values with variance k has sd ~ k sqrt(2 / N) (kurtosis of a sum of signs <= 3)
        assert abs(row_var - k) < SDS * k * math.sqrt(2 / N)


@pytest.mark.parametrize("low", [0.0, 0.4])
def test_magnitudes_are_uniform_between_value_low_and_one(low: float):
    cfg = DataConfig(d=16, k=3, values="uniform", value_low=low)
    z = sample_codes(cfg, N, g())
    mags = z[z != 0].abs().double()
    assert mags.numel() == N * cfg.k
    assert mags.min() >= low and mags.max() <= 1.0
    width, count = 1 - low, mags.numel()
    assert abs(float(mags.mean()) - (1 + low) / 2) < SDS * width / math.sqrt(12 * count)
    # the spread of a uniform, not a narrower (or wider) law with the same mean
    assert abs(float(mags.var()) - width**2 / 12) < 0.05 * width**2 / 12
    # and its shape: each quarter of [low, 1] holds a quarter of the magnitudes
    quarter = ((mags - low) / width * 4).floor().clamp(max=3).long()
    counts = torch.bincount(quarter, minlength=4).double()
    assert ((counts - count / 4).abs() < SDS * math.sqrt(count * 3 / 16)).all()
    # signs times magnitudes: symmetric about zero
    vals = z[z != 0].double()
    assert abs(float(vals.mean())) < SDS * math.sqrt(float((vals**2).mean()) / count)


def test_codes_are_a_pure_function_of_the_generator():
    cfg = DataConfig(d=16, n_features=40, dictionary="overcomplete", k=5, values="uniform")
    a, b = sample_codes(cfg, 500, g(3)), sample_codes(cfg, 500, g(3))
    assert torch.equal(a, b)
    assert not torch.equal(a, sample_codes(cfg, 500, g(4)))  # another seed, other codes
    gen = g(3)
    first, second = sample_codes(cfg, 500, gen), sample_codes(cfg, 500, gen)
    assert torch.equal(first, a) and not torch.equal(first, second)  # the generator moves on
    # supports differ between seeds too, not only the values
    assert not torch.equal(a != 0, sample_codes(cfg, 500, g(4)) != 0)


def test_k_equal_to_n_features_fills_every_coordinate():
    z = sample_codes(DataConfig(d=15, k=15), 1000, g())
    assert (z.abs() == 1).all()


# Broken samplers: each must fail check_supports, so the checks above could catch them in exact_supports.


def with_replacement(n: int, D: int, k: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, D, (n, k), generator=gen)


def low_biased(n: int, D: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """Step i draws from the first D - i coordinates and resolves a clash with the smallest free one: distinct,
    but the last coordinates are rarer than k/D."""
    out = torch.empty(n, k, dtype=torch.long)
    for r in range(n):
        chosen: list[int] = []
        for i in range(k):
            t = int(torch.randint(0, D - i, (1,), generator=gen))
            chosen.append(t if t not in chosen else min(set(range(D)) - set(chosen)))
        out[r] = torch.tensor(chosen)
    return out


def cyclic_run(n: int, D: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """k consecutive coordinates from a uniform start: every coordinate exactly k/D, but neighbours go together."""
    return (torch.randint(0, D, (n, 1), generator=gen) + torch.arange(k)) % D


FANO = torch.tensor([[0, 1, 2], [0, 3, 4], [0, 5, 6], [1, 3, 5], [1, 4, 6], [2, 3, 6], [2, 4, 5]])


def fano_lines(n: int, D: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """A uniform line of the Fano plane (D = 7, k = 3): every coordinate in 3/7 of the rows and every pair in 1/7,
    exactly as for uniform 3-subsets, yet only 7 of the 35 subsets ever occur."""
    assert (D, k) == (7, 3)
    return FANO[torch.randint(0, 7, (n,), generator=gen)]


@pytest.mark.parametrize(
    ("sampler", "D", "k", "failing"),
    [
        (with_replacement, 16, 3, "repeats"),
        (low_biased, 16, 3, "inclusion"),
        (cyclic_run, 16, 3, "pair"),
        (fano_lines, 7, 3, "chi-square"),
    ],
)
def test_broken_samplers_fail_the_checks(sampler: Sampler, D: int, k: int, failing: str):
    with pytest.raises(AssertionError, match=failing):
        check_supports(sampler, D, k)
