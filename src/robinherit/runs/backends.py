"""Where a sweep's work units run: a registry of backends (:data:`BACKENDS`). ``local`` is the process pool of
``robinherit.runs.pool`` on this machine; ``ray`` runs the same worker entry as Ray tasks on a running cluster
(``ray start --head``; ``address="auto"``). Workers only compute; the driver alone writes the store.
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from enum import Enum
from typing import Any

from robinherit.config import ExperimentConfig
from robinherit.errors import RobinheritError
from robinherit.runs.pool import GroupResult, Result, error_text, execute, local_pool
from robinherit.runs.schedule import BATCH, work_units


class SweepError(RobinheritError):
    """A sweep that cannot start or read its store (the message says why and what to do)."""


class Backend(str, Enum):
    local = "local"
    ray = "ray"


OnResult = Callable[[ExperimentConfig, Result | None, str | None], None]  # (cfg, result, error message)


def _deliver(group: list[ExperimentConfig], results: GroupResult | None, err: str | None, on_result: OnResult) -> None:
    for i, cfg in enumerate(group):
        res, e = results[i] if results is not None else (None, err)
        on_result(cfg, res, e)


def run_local(
    cfgs: Iterator[ExperimentConfig],
    on_result: OnResult,
    *,
    workers: int | None = None,
    address: str | None = None,
    batch: int = BATCH,
    execute_fn: Callable[[list[dict[str, Any]]], GroupResult] | None = None,
) -> None:
    """Process pool on this machine. Spawned (not forked) workers: forking a process that holds torch's thread
    pools can deadlock. At most ``workers`` runs are in flight, so each is checked against the store just
    before it starts (another sweep on the same store may have finished it meanwhile)."""
    if address is not None:
        raise SweepError("--address is for the ray backend; the local backend runs on this machine")
    n = workers or os.cpu_count() or 1
    units = work_units(cfgs, batch)
    while True:
        suspects, unstarted = _pool_until_broken(units, n, on_result, fn=execute_fn or execute)
        # A worker died (killed by the OS, say for memory): every group in flight failed with it. Each of their
        # runs goes again alone, one at a time in its own process, so only the run that kills its worker is
        # reported as killed and the others are computed and stored.
        for cfg in suspects:
            _pool_until_broken(iter([[cfg]]), 1, on_result, alone=True, fn=execute_fn or execute)
        if not suspects and not unstarted:
            return
        # A group the broken pool refused never started: it opens the next pool, in its place in the order.
        units = itertools.chain(unstarted, units)


KILLED = (
    "the worker process running it died (killed by the operating system, e.g. out of memory, or by a signal); "
    "the other runs went on. Lower its sizes (batch, width, n_test) or give the machine more memory, then rerun. "
    "If every run died at once, the workers may have failed to start: a Python script that starts sweeps or "
    "reproduce from its top level must guard that code with `if __name__ == '__main__':` (spawned workers "
    "import the script again)"
)


def _pool_until_broken(
    units: Iterator[list[ExperimentConfig]],
    n: int,
    on_result: OnResult,
    alone: bool = False,
    fn: Callable[[list[dict[str, Any]]], GroupResult] = execute,
) -> tuple[list[ExperimentConfig], list[list[ExperimentConfig]]]:
    """Run ``units`` on a pool of ``n`` spawned workers until they are done or a worker dies. Returns the configs of
    the groups in flight when it died (to run again alone) and the groups the broken pool refused before any
    worker started them (to run in a new pool); both empty if all went well."""
    suspects: list[ExperimentConfig] = []
    unstarted: list[list[ExperimentConfig]] = []
    with local_pool(n) as ex:
        running: dict[Future, list[ExperimentConfig]] = {}

        def fill() -> None:
            while len(running) < n and not suspects and not unstarted:
                group = next(units, None)
                if group is None:
                    return
                try:
                    running[ex.submit(fn, [c.model_dump(mode="json") for c in group])] = group
                except BrokenProcessPool:
                    # A worker died after `wait` returned and before this submit: the pool refuses new work.
                    # The futures in flight fail with BrokenProcessPool too and are collected below.
                    unstarted.append(group)

        fill()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                group = running.pop(fut)
                err = fut.exception()
                if isinstance(err, BrokenProcessPool):
                    if alone:
                        _deliver(group, None, KILLED, on_result)
                    else:
                        suspects.extend(group)
                    continue
                _deliver(group, None if err else fut.result(), error_text(err) if err else None, on_result)
            fill()
    return suspects, unstarted


RAY_CONNECT_TIMEOUT_S = 5.0


def _check_reachable(address: str | None, timeout: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """A ``host:port`` address that does not answer a TCP connection within ``timeout`` is an error now: Ray itself
    retries such an address for minutes. ``auto``, ``ray://`` addresses and None are left to Ray, which fails fast
    on them."""
    if address is None or address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return
    except (OSError, ValueError) as err:
        raise SweepError(
            f"cannot reach a Ray cluster at --address {address} (no answer within {timeout:g} s: {err}); start one "
            "with `ray start --head`, check the host and port, or leave --address out to start a local Ray instance"
        ) from None


@contextmanager
def _ray_session(address: str | None, workers: int | None) -> Iterator[Any]:
    """The ``ray`` module, connected to the cluster at ``address`` (``auto``: the one ``ray start --head`` started;
    None: a local instance for this process); a connection made here is closed at the end."""
    try:
        import ray
    except ImportError:
        raise SweepError(
            "the ray backend needs Ray, which is not installed; pip install 'robinherit[ray]' (or 'ray>=2.9'), "
            "or use --backend local"
        ) from None
    if ray.is_initialized():
        yield ray
        return
    _check_reachable(address)
    try:
        if address is None:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except ConnectionError as err:
        raise SweepError(
            f"cannot reach a Ray cluster at --address {address} ({err}); start one with `ray start --head` "
            "or leave --address out to start a local Ray instance"
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


def run_ray(
    cfgs: Iterator[ExperimentConfig],
    on_result: OnResult,
    *,
    workers: int | None = None,
    address: str | None = None,
    batch: int = BATCH,
) -> None:
    """Ray tasks (one CPU each) on the cluster at ``address`` (``auto``: the one ``ray start --head`` started;
    None: a local instance for this process). Tasks return (record, artifacts); the driver stores them."""
    with _ray_session(address, workers) as ray:
        from robinherit.plugins import loaded_plugins

        remote = ray.remote(num_cpus=1, max_retries=0)(execute)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        # Twice the CPUs in flight keeps the cluster busy while results travel back to the driver.
        limit = workers or 2 * cpus
        running: dict[Any, list[ExperimentConfig]] = {}
        units = work_units(cfgs, batch)

        def fill() -> None:
            while len(running) < limit:
                group = next(units, None)
                if group is None:
                    return
                running[remote.remote([c.model_dump(mode="json") for c in group], loaded_plugins())] = group

        fill()
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                group = running.pop(ref)
                try:
                    result, err = ray.get(ref), None
                except Exception as exc:  # RayTaskError wraps the worker's exception
                    result, err = None, error_text(getattr(exc, "cause", None) or exc)
                _deliver(group, result, err, on_result)
            fill()


# backend -> runner(cfgs, on_result, *, workers, address, batch)
BACKENDS: dict[Backend, Callable[..., None]] = {Backend.local: run_local, Backend.ray: run_ray}
