"""Shared fixtures: tiny configs that run in a second or two on a 2-core CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from robinherit.config import ExperimentConfig, build_config

# Test tensors are tiny, so intra-op threads only add overhead; on a busy machine their spin-waits made the
# core tests take ~8x the CPU time (measured: 201 s vs 24 s user) and over 15 minutes of wall time.
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _dictionary_cache(tmp_path_factory):
    """Learned dictionaries go to a folder of this test session, never to the user's cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("ROBINHERIT_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


# d=32 keeps ||theta|| = sqrt(32) > 4, so a linear classifier's margin on half the samples (1/sqrt(32) ~ 0.18)
# is below eps = 0.25: the regime where only purified, thresholded nodes can be robust.
TINY: dict[str, Any] = {
    "data": {"d": 32, "k": 3, "noise": 0.05},
    "model": {"width": 64, "threshold": 0.3},
    "pretrain": {"eps": 0.25, "steps": 300, "batch_size": 128, "attack_steps": 3},
    "downstream": {"heads": ["clean"], "steps": 150, "n_train": 500},
    "eval": {"eps_grid": [0, 0.25], "steps": 10, "restarts": 1, "n_test": 300},
    "seed": 0,
}

# Smaller still: for tests of plumbing (CLI, store) where the numbers do not matter.
# The small contrastive world of tests/test_contrastive.py and tests/test_contrastive_stacked.py (noise views,
# RoCL attack at 0.25, a clean head); each file sets its own run lengths on top with deep_merge.
CONTRASTIVE: dict[str, Any] = {
    "data": {"d": 16, "k": 3},
    "model": {"width": 32},
    "pretrain": {"method": "contrastive", "batch_size": 64, "eps": 0.25, "augmentation": "noise", "aug_strength": 0.05},
    "downstream": {"heads": ["clean"]},
    "eval": {"eps_grid": [0, 0.25], "restarts": 1},
}


MICRO: dict[str, Any] = {
    "data": {"d": 8, "k": 1},
    "model": {"width": 8},
    "pretrain": {"eps": 0.25, "steps": 5, "batch_size": 16, "attack_steps": 2},
    "downstream": {"heads": ["clean", "adversarial"], "steps": 3, "n_train": 32, "attack_steps": 2},
    "eval": {"eps_grid": [0, 0.25], "steps": 2, "restarts": 1, "n_test": 32},
    "seed": 0,
}


@pytest.fixture
def tiny_cfg() -> ExperimentConfig:
    return build_config(TINY)


@pytest.fixture
def micro_cfg() -> ExperimentConfig:
    return build_config(MICRO)


@pytest.fixture
def micro_yaml(tmp_path: Path) -> Path:
    """A YAML file holding the MICRO config, for CLI tests."""
    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump(MICRO))
    return path


@pytest.fixture
def small_mount(tmp_path: Path):
    """A 1 MiB tmpfs of this test's own, where the test may mount one (root on Linux); skipped elsewhere."""
    import subprocess

    point = tmp_path / "mnt"
    point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(point)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root on Linux): the read-only and full-disk cases are untested")
    yield point
    subprocess.run(["umount", "-l", str(point)], capture_output=True)
