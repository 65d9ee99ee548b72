"""Helpers shared by everything that writes or reads result records (a leaf module: it imports nothing of
robinherit, so any stage can use it)."""

from __future__ import annotations


def eps_key(eps: float) -> str:
    """The key of a budget in result records: 0.25 -> "0.25", 1.0 -> "1"."""
    return f"{float(eps):g}"
