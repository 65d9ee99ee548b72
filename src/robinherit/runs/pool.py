"""The local process pool every parallel job on this machine uses (sweeps, and reproduce's derived results), and
the worker entry that runs a unit of a sweep's work.

Workers are spawned, single-threaded, and leave when the driver dies; inside :func:`shared_pools` a pool of each
size is kept for the next use, so work that comes in stages starts its workers once.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any

import numpy as np

from robinherit.config import build_config

Result = tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]  # (record, artifacts), as run_experiment
GroupResult = list[tuple[Result | None, str | None]]  # per config: (result, error message)


def execute(cfg_jsons: list[dict[str, Any]]) -> GroupResult:
    """Run a group of configs in a worker (local process or Ray task), single-threaded so backends agree bit for
    bit, with ``schedule.run_many``: shape-sharing configs pre-trained as one stack, every failure reported
    with its own error (nothing swallowed)."""
    import torch

    from robinherit.runs.schedule import run_many

    torch.set_num_threads(1)
    cfgs = [build_config(c) for c in cfg_jsons]
    out: GroupResult = [(None, "not run")] * len(cfgs)

    def on_result(i: int, res: Result | None, err: BaseException | None) -> None:
        out[i] = (res, None if err is None else error_text(err))

    run_many(cfgs, on_result, max_stack=len(cfgs))
    return out


def _exit_when_orphaned(parent_pid: int) -> None:
    # A pool worker blocks on its task queue forever if the driver is killed with SIGKILL: leave instead.
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            os._exit(0)


def _init_local_worker(parent_pid: int) -> None:
    import torch

    torch.set_num_threads(1)
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True).start()


def error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _new_pool(n: int) -> ProcessPoolExecutor:
    # Spawned, not forked: forking a process that holds torch's thread pools can deadlock.
    return ProcessPoolExecutor(
        max_workers=n, mp_context=mp.get_context("spawn"), initializer=_init_local_worker, initargs=(os.getpid(),)
    )


_shared: dict[int, ProcessPoolExecutor] | None = None  # pools by size, while a shared_pools() block is open


@contextmanager
def shared_pools() -> Iterator[None]:
    """Inside this block :func:`local_pool` hands out one pool per size and keeps it for the next use, so work that
    comes in stages (a reproduce's pre-training runs, then its derived results) starts its workers once: each new
    pool costs about 2 s on the 2-core machine (spawning the processes, importing torch, shutting them down). A pool
    that a dead worker broke is replaced at its next use. Every pool shuts down when the block ends; nested blocks
    share the outer one's pools."""
    global _shared
    if _shared is not None:
        yield
        return
    _shared = {}
    try:
        yield
    finally:
        pools, _shared = _shared, None
        for ex in pools.values():
            ex.shutdown(wait=True, cancel_futures=True)


def _usable(ex: ProcessPoolExecutor) -> bool:
    """Whether a kept pool still takes work (a pool whose worker died refuses every submit)."""
    try:
        ex.submit(int).result()
    except BrokenProcessPool:
        return False
    return True


@contextmanager
def local_pool(n: int) -> Iterator[ProcessPoolExecutor]:
    """The process pool every local parallel job uses (sweeps, and reproduce's derived results): ``n`` spawned,
    single-threaded workers that leave when the driver dies. A new pool, shut down when the block ends, or inside
    :func:`shared_pools` the kept pool of ``n`` workers."""
    if _shared is None:
        with _new_pool(n) as ex:
            yield ex
        return
    ex = _shared.get(n)
    if ex is None or not _usable(ex):
        if ex is not None:
            ex.shutdown(wait=False, cancel_futures=True)
        ex = _shared[n] = _new_pool(n)
    yield ex
