"""Named random streams derived from one seed, so every stage is a pure function of ``cfg.seed``.

Each consumer (dictionary, tasks, init, batches, attacks, ...) gets its own ``torch.Generator``; adding a
consumer does not shift the numbers another one sees.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(seed: int, name: str, device: str | torch.device = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, name))
    return g
