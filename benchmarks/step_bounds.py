"""What bounds the stacked adversarial step at S models: its products, its draws, and its cost per step apart from
the set-up of a run.

    python -m benchmarks.step_bounds                 # the default config at S = 32
    python -m benchmarks.step_bounds --size 8 --json
    python -m benchmarks.step_bounds --pointwise      # and the PGD step's elementwise work, eager and compiled

Three parts, each timed in this process:

- products: the step's one product shape through the first layer, ``bmm`` of (S, n, d) by (S, d, m), with the
  second operand a transposed view (as the step multiplies by W^T), contiguous, and written with ``out=``, and
  the same FLOPs as one flat (S n, d) x (d, m) product; GFLOP/s beside the machine's square-matmul peak
  (``train_step.matmul_peak``). Near the peak, a faster step has to save elsewhere.
  Two more rows put a number on mixed precision: the same ``bmm`` with bfloat16 operands (the products'
  own speed there, which needs the CPU's bf16 instructions to mean anything) and with the casts a float32 step
  would add around it (x and W to bfloat16, u back to float32). Each product's relative error against float64
  is printed beside it: bfloat16 operands carry 8 bits of mantissa, which is why the step keeps float32.
- draws: S (n, d) float32 buffers filled from S generators, one per model, as the stacked step draws its noise and
  random starts: torch's ``normal_`` and ``uniform_``, and numpy's SFC64 and PCG64 ``standard_normal(out=...)``.
- per step: ``train_step.run_batched`` at S and ``run_reference`` run for a short and a long length, each
  ``--repeats`` times; a fit through both lengths (``compile_cost.fit``) splits each run into its set-up (worlds,
  models, stacking) and its cost per step. ``benchmarks.train_step`` times whole runs of about a second, set-up
  included.
- pointwise (``--pointwise``): the elementwise work of one PGD step at S, between its two products (the
  activation, the K = 1 head, its gradient through the activation, the l2 ascent and projection, the new
  point), as the step runs it (``eager``) and as one function compiled by ``torch.compile`` (``compiled``; the
  compiling is untimed, and needs a C++ compiler). The bound on what fusing those passes can save.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from benchmarks.compile_cost import fit
from benchmarks.step_variants import head_and_back, l2_ascent
from benchmarks.timing import best_per_call
from benchmarks.train_step import DEFAULT, matmul_peak, run_batched, run_reference
from robinherit.attacks.gradient import l2_step
from robinherit.config import ExperimentConfig, with_updates
from robinherit.models.units import UNITS
from robinherit.ops.closed_form import back_through_head
from robinherit.ops.losses import LOSS_GRADS, multilabel_bce
from robinherit.runs.provenance import git_commit
from robinherit.training.allocator import keep_freed_memory


def product_operands(size: int, n: int, d: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed operands of ``product_paths``: inputs x (S, n, d) and first-layer weights w (S, m, d)."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(size, n, d, generator=g), torch.randn(size, m, d, generator=g)


def product_paths(size: int, n: int, d: int, m: int) -> dict[str, Callable[[], torch.Tensor]]:
    """The step's first-layer product at a stack of ``size``, in the layouts worth comparing, on fixed tensors
    (``product_operands``)."""
    x, w = product_operands(size, n, d, m)
    w_t, out = w.transpose(1, 2).contiguous(), torch.empty(size, n, m)
    flat = x.reshape(size * n, d)
    x_bf, w_bf = x.bfloat16(), w.bfloat16()
    return {
        "bmm, W^T a view": lambda: torch.bmm(x, w.transpose(1, 2)),
        "bmm, W^T contiguous": lambda: torch.bmm(x, w_t),
        "bmm, out=": lambda: torch.bmm(x, w_t, out=out),
        "one flat mm": lambda: flat @ w_t[0],
        "bmm in bfloat16": lambda: torch.bmm(x_bf, w_bf.transpose(1, 2)),
        "bmm in bfloat16, casts in and out": lambda: torch.bmm(x.bfloat16(), w.bfloat16().transpose(1, 2)).float(),
    }


def product_errors(paths: dict[str, Callable[[], torch.Tensor]], size: int, n: int, d: int, m: int) -> dict[str, float]:
    """Relative l2 error of each (S, n, m) product of ``product_paths`` against the same product in float64."""
    x, w = product_operands(size, n, d, m)
    exact = x.double() @ w.double().transpose(1, 2)
    out = {}
    for name, fn in paths.items():
        got = fn().double()
        if got.shape == exact.shape:  # the flat mm is the same FLOPs on other operands, not this product
            out[name] = float((got - exact).norm() / exact.norm())
    return out


def draw_paths(size: int, n: int, d: int) -> dict[str, Callable[[], torch.Tensor]]:
    """Fill ``size`` (n, d) float32 buffers, one generator per buffer, each way compared."""
    buf = torch.empty(size, n, d)
    as_numpy = buf.numpy()  # numpy writes into the same memory
    torch_gens = [torch.Generator().manual_seed(s) for s in range(size)]
    sfc = [np.random.Generator(np.random.SFC64(s)) for s in range(size)]
    pcg = [np.random.Generator(np.random.PCG64(s)) for s in range(size)]

    def torch_fill(method: str) -> Callable[[], torch.Tensor]:
        def go() -> torch.Tensor:
            for s, g in enumerate(torch_gens):
                getattr(buf[s], method)(generator=g)
            return buf

        return go

    def numpy_fill(gens: list[np.random.Generator]) -> Callable[[], torch.Tensor]:
        def go() -> torch.Tensor:
            for s, g in enumerate(gens):
                g.standard_normal(out=as_numpy[s], dtype=np.float32)
            return buf

        return go

    return {
        "torch normal_": torch_fill("normal_"),
        "torch uniform_": torch_fill("uniform_"),
        "numpy SFC64 standard_normal": numpy_fill(sfc),
        "numpy PCG64 standard_normal": numpy_fill(pcg),
    }


def pgd_pointwise(
    u: torch.Tensor,
    grad: torch.Tensor,
    x: torch.Tensor,
    delta: torch.Tensor,
    v: torch.Tensor,
    c: torch.Tensor,
    targets: torch.Tensor,
    alpha: torch.Tensor,
    radius: torch.Tensor,
    threshold: float,
) -> tuple[torch.Tensor, ...]:
    """One l2 PGD step's elementwise work on a stack of the default model (symmetric thresholded ReLU with one
    fixed threshold, K = 1, multilabel BCE), written plainly for ``torch.compile`` to fuse. From the
    pre-activations u (S, n, m) and the input gradient ``grad`` (S, n, d) (the products are not pointwise work,
    so both are given): the loss per example, the gradient at the pre-activations, the new offset and the new
    point. ``eager_pgd_pointwise`` is the same work through the step's own functions; ``benchmarks.step_variants``
    compiles the same two parts separately inside the whole step."""
    value, g_u = head_and_back(u, threshold, v, c, targets)
    return value, g_u, *l2_ascent(x, delta, grad, alpha, radius)


def eager_pgd_pointwise(
    u: torch.Tensor,
    grad: torch.Tensor,
    x: torch.Tensor,
    delta: torch.Tensor,
    v: torch.Tensor,
    c: torch.Tensor,
    targets: torch.Tensor,
    alpha: torch.Tensor,
    radius: torch.Tensor,
    threshold: float,
) -> tuple[torch.Tensor, ...]:
    """``pgd_pointwise`` through the functions ``fused.two_layer_loss_and_grad`` and ``attacks.gradient.pgd_from``
    call."""
    unit = UNITS["sym_relu"]
    h = unit.fast(u, threshold)
    logits = torch.baddbmm(c, h, v.transpose(1, 2))
    value, g_logits = LOSS_GRADS[multilabel_bce](logits, targets)
    g_u = unit.active(back_through_head(g_logits, v), u, h, threshold, overwrite=True)
    step = l2_step(delta, grad, alpha, radius)
    return value, g_u, step, torch.add(x, step)


def pointwise_paths(size: int, n: int, d: int, m: int, compiled: bool) -> dict[str, Callable[[], object]]:
    """``eager_pgd_pointwise`` and, with ``compiled``, ``pgd_pointwise`` under ``torch.compile`` (compiled here, by
    a first call), on fixed tensors of the step's shapes."""
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(size, n, m, generator=g), 0.1 * torch.randn(size, 1, m, generator=g)
    grad, x = torch.randn(size, n, d, generator=g), torch.randn(size, n, d, generator=g)
    delta = 0.01 * torch.randn(size, n, d, generator=g)
    targets = (torch.rand(size, n, 1, generator=g) > 0.5).float()
    c, alpha, radius = torch.zeros(size, 1, 1), torch.full((size, 1, 1), 0.125), torch.full((size, 1, 1), 0.25)
    args = (u, grad, x, delta, v, c, targets, alpha, radius, 0.3)
    # the eager path writes the head's outer product over a fresh buffer and the gradient into it, as the step does
    paths: dict[str, Callable[[], object]] = {"eager": lambda: eager_pgd_pointwise(*args)}
    if compiled:
        fused = torch.compile(pgd_pointwise, dynamic=False)
        fused(*args)
        paths["compiled"] = lambda: fused(*args)
    return paths


def _ms(seconds: dict[str, float]) -> dict[str, float]:
    return {name: 1e3 * s for name, s in seconds.items()}


def setup_and_step(run: Callable[[int], None], lengths: tuple[int, int], repeats: int) -> tuple[float, float]:
    """(set-up ms, ms per step) of ``run``: the fastest of ``repeats`` timings at each length, fitted through both."""
    run(2)  # imports, the allocator
    seconds = []
    for n in lengths:
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run(n)
            runs.append(time.perf_counter() - t0)
        seconds.append(min(runs))
    fixed, per_step = fit(list(lengths), seconds)
    return 1e3 * fixed, 1e3 * per_step


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32, help="stack size S")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per part; the best is kept")
    parser.add_argument("--calls", type=int, default=100, help="calls per round of a product or a draw")
    parser.add_argument("--lengths", default="1,31", help="the two run lengths (steps) of the per-step fit")
    parser.add_argument(
        "--pointwise", action="store_true", help="time one PGD step's elementwise work, eager and torch.compile'd"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object, nothing else")
    args = parser.parse_args(argv)
    lengths = tuple(sorted({int(s) for s in args.lengths.split(",")}))
    if len(lengths) != 2:
        raise SystemExit("--lengths needs two different run lengths, e.g. 1,31")
    cfg = with_updates(ExperimentConfig(), **DEFAULT)
    n, d, m, size = cfg.pretrain.batch_size, cfg.data.d, cfg.model.width, args.size

    keep_freed_memory()  # as the compute paths set it: freed buffers are reused, not faulted in again
    peak, _ = matmul_peak()
    products = product_paths(size, n, d, m)
    product_ms = _ms(best_per_call(products, args.repeats, args.calls, warmup=5))
    errors = product_errors(products, size, n, d, m)
    gflops = {name: 2 * size * n * d * m / ms / 1e6 for name, ms in product_ms.items()}
    draw_ms = _ms(best_per_call(draw_paths(size, n, d), args.repeats, args.calls, warmup=5))
    pointwise_ms = (
        _ms(best_per_call(pointwise_paths(size, n, d, m, compiled=True), args.repeats, args.calls, warmup=5))
        if args.pointwise
        else {}
    )
    stack_setup, stack_step = setup_and_step(lambda k: run_batched(cfg, k, size), lengths, args.repeats)
    ref_setup, ref_step = setup_and_step(lambda k: run_reference(cfg, k), lengths, args.repeats)
    result = {
        "S": size,
        "matmul_peak_gflops": peak,
        "product_ms": product_ms,
        "product_gflops": gflops,
        "product_relative_error": errors,
        "draw_ms": draw_ms,
        "pointwise_ms": pointwise_ms,
        "stack_setup_ms": stack_setup,
        "stack_ms_per_step": stack_step,
        "reference_setup_ms": ref_setup,
        "reference_ms_per_step": ref_step,
        # samples per second of the stack over the reference's, per step, set-up left out
        "ratio_per_step": size * ref_step / stack_step,
        "commit": git_commit(),
        "threads": torch.get_num_threads(),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"commit {result['commit']}, {result['threads']} threads, S = {size}, n = {n}, d = {d}, m = {m}")
    print(f"measured fp32 matmul peak: {peak:.1f} GFLOP/s")
    for name, ms in product_ms.items():
        error = f"  relative error {errors[name]:.1e}" if name in errors else ""
        print(f"  {name:30} {ms:7.3f} ms  {gflops[name]:6.1f} GFLOP/s{error}")
    print(f"draws of S ({n}, {d}) float32 buffers, one generator each:")
    for name, ms in draw_ms.items():
        print(f"  {name:30} {ms:7.3f} ms")
    if pointwise_ms:
        print(f"one PGD step's elementwise work at S = {size}:")
        for name, ms in pointwise_ms.items():
            print(f"  {name:30} {ms:7.3f} ms")
    print(f"stack of {size}: {stack_step:.2f} ms per step, {stack_setup:.1f} ms set-up per run")
    print(f"reference: {ref_step:.2f} ms per step, {ref_setup:.1f} ms set-up per run")
    print(f"per step, set-up left out: the stack is {result['ratio_per_step']:.2f}x the reference")


if __name__ == "__main__":
    main(sys.argv[1:])
