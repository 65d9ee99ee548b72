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
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any

import numpy as np

from robinherit.config import build_config
from robinherit.errors import ConfigError

Result = tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]  # (record, artifacts), as run_experiment
GroupResult = list[tuple[Result | None, str | None]]  # per config: (result, error message)


def execute(cfg_jsons: list[dict[str, Any]], plugins: Sequence[str] = ()) -> GroupResult:
    """Run a group of configs in a worker (local process or Ray task), single-threaded so backends agree bit for
    bit, with ``schedule.run_many``: shape-sharing configs pre-trained as one stack, every failure reported
    with its own error (nothing swallowed). ``plugins`` (the driver's) and the ones each config names are imported
    before the configs are read (``build_config``)."""
    import torch

    from robinherit.runs.schedule import run_many

    _own_process(plugins)
    torch.set_num_threads(1)
    try:
        cfgs = [build_config(c) for c in cfg_jsons]
    except ConfigError as err:
        raise ConfigError(
            f"{err} (in a worker process: an entry registered only in the process that started the sweep is not "
            "here; register it in a plugin named by the config's 'plugins', see robinherit.plugins)"
        ) from None
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


def _own_process(plugins: Sequence[str]) -> None:
    """What a worker process, robinherit's own, takes before it reads a config: the allocator setting of the compute
    paths, the installed plugins and ``plugins`` (each once per process). A plugin that failed in the pool's
    initializer fails here, as the error of every run the worker is given, rather than breaking the pool."""
    from robinherit.plugins import load_entry_points, load_plugins
    from robinherit.training.allocator import keep_freed_memory

    keep_freed_memory()
    if _init_error is not None:
        raise _init_error
    load_entry_points()
    load_plugins(plugins)


_init_error: ConfigError | None = None  # a local worker's: its parent's plugins did not import here


def _init_local_worker(parent_pid: int, plugins: Sequence[str] = ()) -> None:
    global _init_error
    import torch

    torch.set_num_threads(1)
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True).start()
    try:
        _own_process(plugins)
    except ConfigError as err:
        _init_error = err


def error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _new_pool(n: int) -> ProcessPoolExecutor:
    # Spawned, not forked: forking a process that holds torch's thread pools can deadlock. The workers start with
    # the plugins this process has loaded, so entries registered by them are names there too.
    from robinherit.plugins import loaded_plugins

    return ProcessPoolExecutor(
        max_workers=n,
        mp_context=mp.get_context("spawn"),
        initializer=_init_local_worker,
        initargs=(os.getpid(), loaded_plugins()),
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
