"""Provenance: every record says with what it was computed, including the thread count its bits depend on."""

from __future__ import annotations

import torch

from robinherit.runs.provenance import versions


def test_versions_follow_the_thread_count_of_the_moment() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = versions()
        torch.set_num_threads(2)
        two = versions()
    finally:
        torch.set_num_threads(before)
    assert one["torch_threads"] == "1" and two["torch_threads"] == "2"
    assert {k: v for k, v in one.items() if k != "torch_threads"} == {
        k: v for k, v in two.items() if k != "torch_threads"
    }
    assert one["torch"] == torch.__version__
