"""Losses: hand-computed values, per-example shapes, the margins' sign convention, and InfoNCE under descent."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from robinherit.ops.losses import class_margin, cross_entropy, info_nce, multilabel_bce, multilabel_margin


def t64(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


# ---- hand-computed values ----


def test_multilabel_bce_by_hand():
    logits = t64([[0.0, 0.0], [2.0, -1.0], [3.0, -4.0]])
    targets = t64([[1, 0], [1, 1], [0, 1]])
    # -log sigmoid(l) = softplus(-l) for target 1, -log(1 - sigmoid(l)) = softplus(l) for target 0; mean over tasks
    expected = t64([math.log(2), (softplus(-2.0) + softplus(1.0)) / 2, (softplus(3.0) + softplus(4.0)) / 2])
    torch.testing.assert_close(multilabel_bce(logits, targets), expected)


def test_multilabel_margin_by_hand():
    logits = t64([[2.0, -1.0], [-3.0, 0.5], [2.0, 1.0], [0.0, 4.0]])
    targets = t64([[1, 0], [0, 1], [1, 0], [1, 1]])
    # signed margins (2t - 1) * logit per task, then the smallest: [2, 1], [3, 0.5], [2, -1], [0, 4]
    torch.testing.assert_close(multilabel_margin(logits, targets), t64([1.0, 0.5, -1.0, 0.0]))


def test_cross_entropy_by_hand():
    logits = t64([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    labels = torch.tensor([0, 2, 0])
    lse = math.log(math.e + math.e**2 + math.e**3)
    torch.testing.assert_close(cross_entropy(logits, labels), t64([math.log(3), lse - 3, lse - 1]))


def test_class_margin_by_hand():
    logits = t64([[1.0, 3.0, 2.0], [1.0, 3.0, 2.0], [5.0, 5.0, 0.0], [-1.0, -2.0, -7.0]])
    labels = torch.tensor([1, 0, 0, 0])
    # true logit minus the largest *other* logit: 3 - 2, 1 - 3, a tie 5 - 5, -1 - (-2)
    torch.testing.assert_close(class_margin(logits, labels), t64([1.0, -2.0, 0.0, 1.0]))


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_info_nce_by_hand(temperature):
    """Two orthogonal examples: each anchor has its positive (cosine 1) and three negatives (cosine 0 each)
    when the views agree, or a positive at cosine -1 when they are opposite."""
    a = t64([[1.0, 0.0], [0.0, 1.0]])
    agree = math.log(math.exp(1 / temperature) + 2) - 1 / temperature
    opposite = math.log(math.exp(-1 / temperature) + 2) + 1 / temperature
    torch.testing.assert_close(info_nce(a, a, temperature), t64([agree, agree]))
    torch.testing.assert_close(info_nce(3 * a, 0.5 * a, temperature), t64([agree, agree]))  # cosine: scale-free
    torch.testing.assert_close(info_nce(a, -a, temperature), t64([opposite, opposite]))


def test_info_nce_of_a_single_pair_is_zero():
    """With one example there are no negatives: -log(e^s / e^s) = 0, whatever the pair."""
    a, b = t64([[1.0, 2.0, -1.0]]), t64([[-3.0, 0.5, 0.0]])
    torch.testing.assert_close(info_nce(a, b, 0.2), t64([0.0]))


# ---- shapes and per-example independence ----


def _inputs(n: int, g: torch.Generator):
    logits_k = torch.randn(n, 3, generator=g)
    targets = torch.randint(0, 2, (n, 3), generator=g).float()
    logits_c = torch.randn(n, 4, generator=g)
    labels = torch.randint(0, 4, (n,), generator=g)
    return logits_k, targets, logits_c, labels


@pytest.mark.parametrize("n", [1, 5])
def test_every_loss_is_per_example(n):
    g = torch.Generator().manual_seed(0)
    logits_k, targets, logits_c, labels = _inputs(n, g)
    a, b = torch.randn(n, 6, generator=g), torch.randn(n, 6, generator=g)
    for out in (
        multilabel_bce(logits_k, targets),
        multilabel_margin(logits_k, targets),
        cross_entropy(logits_c, labels),
        class_margin(logits_c, labels),
        info_nce(a, b, 0.2),
    ):
        assert out.shape == (n,)
        assert torch.isfinite(out).all()


def test_supervised_losses_of_one_example_ignore_the_others():
    """Attacks maximise each example's loss on its own: row i's value depends on row i only."""
    g = torch.Generator().manual_seed(1)
    logits_k, targets, logits_c, labels = _inputs(6, g)
    moved_k, moved_c = logits_k.clone(), logits_c.clone()
    moved_k[1:] += 10 * torch.randn(5, 3, generator=g)
    moved_c[1:] += 10 * torch.randn(5, 4, generator=g)
    for fn, (lo, y), (lo_moved, _) in (
        (multilabel_bce, (logits_k, targets), (moved_k, targets)),
        (multilabel_margin, (logits_k, targets), (moved_k, targets)),
        (cross_entropy, (logits_c, labels), (moved_c, labels)),
        (class_margin, (logits_c, labels), (moved_c, labels)),
    ):
        before, after = fn(lo, y), fn(lo_moved, y)
        assert torch.equal(before[0], after[0]), fn.__name__
        assert not torch.equal(before[1:], after[1:]), fn.__name__


# ---- the margins' sign convention ----


def test_multilabel_margin_is_positive_iff_every_task_is_right():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(500, 3, generator=g)
    targets = torch.randint(0, 2, (500, 3), generator=g).float()
    all_right = ((logits > 0).float() == targets).all(dim=1)
    margin = multilabel_margin(logits, targets)
    assert torch.equal(margin > 0, all_right)
    assert 0.05 < float(all_right.float().mean()) < 0.95  # both cases occur


def test_class_margin_is_positive_iff_the_argmax_is_the_label():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(500, 4, generator=g)
    labels = torch.randint(0, 4, (500,), generator=g)
    right = logits.argmax(dim=1) == labels
    margin = class_margin(logits, labels)
    assert torch.equal(margin > 0, right)
    assert 0.1 < float(right.float().mean()) < 0.9
    # with two classes it is the signed logit difference
    two = logits[:, :2]
    y2 = labels % 2
    diff = two[:, 1] - two[:, 0]
    torch.testing.assert_close(class_margin(two, y2), torch.where(y2 == 1, diff, -diff))


def test_losses_fall_as_margins_grow():
    """The training losses and the margins point the same way: a larger correct logit is a lower loss."""
    scale = torch.linspace(-3, 3, 13, dtype=torch.float64)[:, None]
    targets = t64([[1.0, 0.0]]).expand(13, 2)
    logits_k = scale * t64([[1.0, -1.0]])  # both tasks right for scale > 0
    assert (multilabel_bce(logits_k, targets).diff() < 0).all()
    assert (multilabel_margin(logits_k, targets).diff() > 0).all()
    labels = torch.zeros(13, dtype=torch.long)
    logits_c = scale * t64([[1.0, 0.0, -1.0]])
    assert (cross_entropy(logits_c, labels).diff() < 0).all()
    assert (class_margin(logits_c, labels).diff() > 0).all()


# ---- InfoNCE as an objective ----


def test_info_nce_decreases_under_gradient_steps_on_embeddings():
    g = torch.Generator().manual_seed(4)
    a = torch.randn(8, 4, generator=g).requires_grad_(True)
    b = torch.randn(8, 4, generator=g).requires_grad_(True)
    opt = torch.optim.SGD([a, b], lr=0.3)
    losses = []
    for _ in range(25):
        loss = info_nce(a, b, 0.5).mean()
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(later < earlier for earlier, later in itertools.pairwise(losses))
    assert losses[-1] < 0.8 * losses[0]


def test_info_nce_prefers_aligned_pairs():
    """Each example's positive is its own other view: aligned pairs score lower than shuffled ones."""
    g = torch.Generator().manual_seed(5)
    a = torch.randn(16, 8, generator=g)
    b = a + 0.1 * torch.randn(16, 8, generator=g)
    shuffled = b.roll(1, dims=0)
    assert (info_nce(a, b, 0.2) < info_nce(a, shuffled, 0.2)).all()
    assert float(info_nce(a, b, 0.2).mean()) < math.log(2 * 16 - 1) < float(info_nce(a, shuffled, 0.2).mean())
