"""What the benchmarks share: timing paths against each other in interleaved rounds, and the device sync that
timing on a GPU needs. (The commit a result was measured at is ``robinherit.runs.provenance.git_commit``.)"""

from __future__ import annotations

import functools
import mmap
import resource
import time
from collections.abc import Callable

import torch


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued kernels (CUDA runs them asynchronously; a timer must not stop before they end)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    paths: dict[str, Callable[[int], object]],
    steps: dict[str, int],
    repeats: int,
    device: torch.device | str = "cpu",
    warmup: int = 2,
    faults: dict[str, list[float]] | None = None,
) -> dict[str, list[tuple[float, float]]]:
    """(wall, CPU) seconds per step of each path in each of ``repeats`` rounds. Every path first runs ``warmup``
    untimed steps (lazy imports, the allocator, compiling where asked for); a round then times ``steps[name]`` steps
    of every path in turn, the order reversed every other round, so that drift in the machine's speed and other
    load fall on all paths alike and neither of a pair always runs first. CPU time (this process, all its threads)
    sits beside wall time: on a shared machine other processes stretch the wall clock but not the work done.
    ``faults``, where given, receives each round's minor page faults per step of every path (memory the
    allocator took fresh from the kernel rather than reused), or None per round where the kernel does not count
    them (``page_faults_counted``)."""
    counted = faults is not None and page_faults_counted()
    if warmup:
        for run in paths.values():
            run(warmup)
        sync(device)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    names = list(paths)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            n = steps[name]
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            w0, c0 = time.perf_counter(), time.process_time()
            paths[name](n)
            sync(device)
            times[name].append(((time.perf_counter() - w0) / n, (time.process_time() - c0) / n))
            if faults is not None:
                moved = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
                faults.setdefault(name, []).append(moved / n if counted else None)
    return times


@functools.cache
def page_faults_counted(pages: int = 64) -> bool:
    """Whether this kernel counts a process's minor page faults: some sandboxes report zero for every process. Maps
    ``pages`` fresh anonymous pages, touches each once and asks whether the count rose by at least half of them."""
    size = pages * mmap.PAGESIZE
    with mmap.mmap(-1, size) as region:
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for offset in range(0, size, mmap.PAGESIZE):
            region[offset] = 1
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0 >= pages // 2


def best(rounds: list[tuple[float, float]]) -> tuple[float, float]:
    """The fastest round's wall and CPU seconds per step (other load only ever slows a run down)."""
    return min(w for w, _ in rounds), min(c for _, c in rounds)


def steps_for(run: Callable[[int], object], target_s: float, device: torch.device | str = "cpu", cap: int = 500) -> int:
    """Steps of ``run`` that take about ``target_s`` (at least 3, at most ``cap``), from 4 timed steps after 2
    untimed ones."""
    run(2)
    sync(device)
    t0 = time.perf_counter()
    run(4)
    sync(device)
    per_step = (time.perf_counter() - t0) / 4
    return int(min(cap, max(3, target_s / max(per_step, 1e-6))))
