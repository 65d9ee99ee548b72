"""What two changes the library does not make would buy the stacked adversarial step: an in-process A/B.

    python -m benchmarks.step_variants                  # S = 32, the default config, 8 rounds of 30 steps
    python -m benchmarks.step_variants --rounds 12 --json

Each variant patches ``robinherit.ops.closed_form`` / ``robinherit.training.stacked`` for the length of a run and
restores them:

- ``bf16 products``: the first-layer products of the attack and of the training forward (12 of the step's 13)
  with bfloat16 operands, cast in and out around each ``bmm`` (``step_bounds``' "casts in and out" row). The
  step keeps float32, since bf16's 8-bit mantissa moves every product by about 3e-3 relative; the report gives
  how far the trained weights move.
- ``pointwise compiled``: the elementwise work of each PGD step (between its two products, and its ascent and
  projection) in two functions compiled by ``torch.compile``, the products left to eager ``bmm``. The library's
  ``ROBINHERIT_COMPILE=1`` compiles the whole step, products included, and its compiled products are slower than
  eager ones here (docs/performance.md). Written for the default model only: symmetric thresholded ReLU with
  one fixed threshold, one task, multilabel BCE, l2 PGD.

Rounds alternate the variants with the default, the order reversed every other round
(``benchmarks.timing.interleaved``); the report gives each variant's ms per step and the median and range of
its per-round speed-up over the default (above 1: faster).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
from collections.abc import Callable, Iterator
from unittest import mock

import torch

from benchmarks.timing import interleaved
from benchmarks.train_step import DEFAULT, run_batched
from robinherit.config import ExperimentConfig, Norm, with_updates
from robinherit.ops import closed_form as fused
from robinherit.runs.provenance import git_commit
from robinherit.training import stacked as batched


def _bf16_first_layer(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return torch.bmm(x.bfloat16(), weight.bfloat16().transpose(1, 2)).float()


def _bf16_back_through_first(g_u: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return torch.bmm(g_u.bfloat16(), weight.bfloat16()).float()


@contextlib.contextmanager
def bf16_products() -> Iterator[None]:
    """The stacked first-layer products with bfloat16 operands (the training step's dW product stays float32)."""
    with (
        mock.patch.multiple(fused, first_layer=_bf16_first_layer, back_through_first=_bf16_back_through_first),
        mock.patch.multiple(batched, first_layer=_bf16_first_layer),
    ):
        yield


def head_and_back(
    u: torch.Tensor, threshold: float, v: torch.Tensor, c: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss per example and its gradient at the pre-activations u, for the default model: one fused pass."""
    logits = (torch.nn.functional.softshrink(u, threshold) * v).sum(dim=-1, keepdim=True) + c
    value = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")[..., 0]
    return value, torch.where(u.abs() > threshold, (torch.sigmoid(logits) - targets) * v, 0.0)


def l2_ascent(
    x: torch.Tensor, delta: torch.Tensor, grad: torch.Tensor, alpha: torch.Tensor, radius: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batched.pgd_from``'s l2 step and projection (``batched.l2_step``), and the new point."""
    step = batched.l2_step(delta, grad, alpha, radius)
    return step, x + step


_COMPILED: dict[str, Callable] = {}


def _compiled(fn: Callable) -> Callable:
    """``fn`` under ``torch.compile``, made once per process (each shape then compiles on its first call)."""
    if fn.__name__ not in _COMPILED:
        _COMPILED[fn.__name__] = torch.compile(fn, dynamic=False)
    return _COMPILED[fn.__name__]


@contextlib.contextmanager
def pointwise_compiled() -> Iterator[None]:
    """Each PGD step's elementwise work in two compiled functions, the products eager."""
    fused_head, ascent = _compiled(head_and_back), _compiled(l2_ascent)

    def loss_and_grad(x, weight, threshold, head_weight, head_bias, activation, loss, targets, center=None):
        if not isinstance(threshold, float) or head_weight.shape[-2] != 1 or center is not None:
            raise ValueError("the 'pointwise compiled' variant is written for the default model only")
        value, g_u = fused_head(fused.first_layer(x, weight), threshold, head_weight, head_bias, targets)
        return value, fused.back_through_first(g_u, weight)

    def pgd_from(loss, x, delta, eps, alpha, norm, steps):
        if norm != Norm.l2:
            raise ValueError("the 'pointwise compiled' variant is written for l2 PGD only")
        points, values = torch.empty((steps + 1, *x.shape), dtype=x.dtype, device=x.device), []
        torch.add(x, delta, out=points[0])
        radius = eps * (1 - 1e-6)
        for t in range(steps):
            value, grad = loss.value_and_grad(points[t])
            values.append(value)
            delta, points[t + 1] = ascent(x, delta, grad, alpha, radius)
        values.append(loss(points[steps]))
        return batched.best_point(points, values)

    with mock.patch.multiple(batched, two_layer_loss_and_grad=loss_and_grad, pgd_from=pgd_from):
        yield


VARIANTS: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
    "default": contextlib.nullcontext,
    "bf16 products": bf16_products,
    "pointwise compiled": pointwise_compiled,
}


def trained_weights(cfg: ExperimentConfig, steps: int, size: int) -> torch.Tensor:
    """The stack's first-layer weights after ``steps`` steps of ``train_step.run_batched``'s run."""
    return run_batched(cfg, steps, size).weight().detach().clone()


def compare(names: list[str], size: int, steps: int, rounds: int, check_steps: int) -> dict:
    """Per-step times of each variant and the default in interleaved rounds, and how far each variant's trained
    weights land from the default's after ``check_steps`` steps (max |difference|, and relative in l2)."""
    cfg = with_updates(ExperimentConfig(), **DEFAULT)
    names = ["default", *[n for n in names if n != "default"]]

    def path(name: str) -> Callable[[int], None]:
        def go(k: int) -> None:
            with VARIANTS[name]():
                run_batched(cfg, k, size)

        return go

    times = interleaved({n: path(n) for n in names}, dict.fromkeys(names, steps), rounds, warmup=3)
    ms = {n: [1e3 * wall for wall, _ in times[n]] for n in names}
    base = ms["default"]
    reference = trained_weights(cfg, check_steps, size)
    # the default is trained a second time in the loop below: its row's difference is the run's own repeatability,
    # the floor that the variants' differences stand on (0 where the run is deterministic, as tests check)
    result: dict = {"S": size, "steps": steps, "rounds": rounds, "commit": git_commit(), "variants": {}}
    for name in names:
        with VARIANTS[name]():
            weights = trained_weights(cfg, check_steps, size)
        ratios = [b / t for b, t in zip(base, ms[name], strict=True)]
        result["variants"][name] = {
            "ms_per_step": ms[name],
            "best_ms_per_step": min(ms[name]),
            "speedup_median": statistics.median(ratios),
            "speedup_range": [min(ratios), max(ratios)],
            "weights_max_abs_difference": float((weights - reference).abs().max()),
            "weights_relative_difference": float((weights - reference).norm() / reference.norm()),
        }
    return result


def main(argv: list[str] | None = None) -> None:
    from robinherit.training.allocator import keep_freed_memory

    keep_freed_memory()  # timed as robinherit's own processes (CLI, workers) run the paths: allocator set
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32, help="stack size S")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run")
    parser.add_argument("--rounds", type=int, default=8, help="rounds, each running every variant once")
    parser.add_argument("--check-steps", type=int, default=200, help="steps of the weights comparison")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--json", action="store_true", help="print one JSON object, nothing else")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    result = compare(names, args.size, args.steps, args.rounds, args.check_steps)
    if args.json:
        print(json.dumps(result))
        return
    print(f"commit {result['commit']}, {torch.get_num_threads()} threads, S = {args.size}, {args.rounds} rounds")
    for name, r in result["variants"].items():
        lo, hi = r["speedup_range"]
        print(
            f"  {name:20} best {r['best_ms_per_step']:6.2f} ms/step  speed-up median {r['speedup_median']:.3f}"
            f" ({lo:.3f}-{hi:.3f})  weights after {args.check_steps} steps: max |diff| "
            f"{r['weights_max_abs_difference']:.2e}, relative {r['weights_relative_difference']:.2e}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
