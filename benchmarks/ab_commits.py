"""Two source trees' stacked adversarial training step, timed in alternating fresh processes: an A/B for a change.

    python -m benchmarks.ab_commits 2e08963                   # that commit against the working tree, S = 32
    python -m benchmarks.ab_commits 2e08963 dc03c23 --config large --size 1 --rounds 8
    python -m benchmarks.ab_commits HEAD . --json

Each side is a commit (exported with ``git archive`` into a temporary folder, so the working tree is untouched) or a
folder holding the package's ``src/`` and ``benchmarks/`` (``.``, the working tree, is the second side by default).
Every round runs each side once, in its own Python process with that side's code first on ``sys.path``; the order
is swapped every other round, so drift in the machine's speed falls on both sides alike. A process builds the stack
of ``benchmarks.train_step``'s config (S models, seeds 0..S-1), trains 3 untimed steps, then ``--steps`` timed ones
on fresh streams and models, and prints its milliseconds per step and a SHA-256 of the trained weights.

The report gives each side's milliseconds per step in every round, the median and range of the per-round ratios
(A's time over B's: above 1, B is faster) and whether the two sides trained the same bits. On a machine whose
speed swings by a third within minutes (docs/performance.md), one-process timings of single operations mislead;
this is the command behind a before / after claim about the step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs in the child process against its side's code. It uses only interfaces every commit of round 2 has.
CHILD = r"""
import hashlib, json, sys, time
import torch
from benchmarks.train_step import DEFAULT, LARGE
from robinherit.training.stacked import StackedTwoLayer, pretrain_stacked
from robinherit.config import ExperimentConfig, with_updates
from robinherit.world.sparse_coding import BatchStream, make_world
from robinherit.models.two_layer import build_model
from robinherit.seeding import generator
from robinherit.training.allocator import keep_freed_memory

keep_freed_memory()
config, size, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
small = {"data.d": 8, "model.width": 16, "pretrain.batch_size": 16, "pretrain.attack_steps": 2}
base = with_updates(ExperimentConfig(), **{"default": DEFAULT, "large": LARGE, "small": small}[config])


def train(n):
    cfgs = [with_updates(base, **{"pretrain.steps": n, "seed": s}) for s in range(size)]
    streams = [BatchStream(make_world(c.data, c.seed), c.pretrain.batch_size, c.seed) for c in cfgs]
    net = StackedTwoLayer([build_model(c.data.d, c.model, c.data.n_tasks, generator(c.seed, "init")) for c in cfgs])
    t0 = time.perf_counter()
    pretrain_stacked(net, streams, cfgs)
    return time.perf_counter() - t0, net


train(3)
seconds, net = train(steps)
digest = hashlib.sha256()
for p in net.parameters():
    digest.update(p.detach().contiguous().numpy().tobytes())
print(json.dumps({"ms_per_step": 1e3 * seconds / steps, "weights_sha256": digest.hexdigest()}))
"""


def export(rev: str, into: Path) -> Path:
    """The tree of commit ``rev`` of this repository, written under ``into`` (``git archive``)."""
    archive = into / "tree.tar"
    try:
        with archive.open("wb") as out:
            subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, stdout=out, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise SystemExit("ab_commits: git is not installed; pass folders instead of commits") from None
    except subprocess.CalledProcessError as err:
        raise SystemExit(f"ab_commits: git archive {rev} failed: {err.stderr.decode().strip()}") from None
    tree = into / "tree"
    with tarfile.open(archive) as tar:  # this repository's own archive; the "data" filter where Python has it
        if hasattr(tarfile, "data_filter"):
            tar.extractall(tree, filter="data")
        else:
            tar.extractall(tree)
    archive.unlink()
    return tree


def resolve(side: str, scratch: Path) -> Path:
    """A side's source tree: a folder with ``src/robinherit`` as it is, else a commit, exported."""
    folder = Path(side)
    if (folder / "src" / "robinherit").is_dir():
        return folder.resolve()
    return export(side, Path(tempfile.mkdtemp(dir=scratch)))


def run_side(tree: Path, config: str, size: int, steps: int) -> dict:
    """One timed process on ``tree``'s code: {"ms_per_step", "weights_sha256"}."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree / "src"), str(tree)])}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, config, str(size), str(steps)], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"ab_commits: the run on {tree} failed:\n{proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(a: str, b: str, config: str, size: int, steps: int, rounds: int) -> dict:
    """Alternating runs of sides ``a`` and ``b``; the report as a dict (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="robinherit-ab-") as scratch:
        trees = {"A": resolve(a, Path(scratch)), "B": resolve(b, Path(scratch))}
        times: dict[str, list[float]] = {"A": [], "B": []}
        digests: dict[str, set[str]] = {"A": set(), "B": set()}
        for r in range(rounds):
            for side in ("A", "B") if r % 2 == 0 else ("B", "A"):
                out = run_side(trees[side], config, size, steps)
                times[side].append(out["ms_per_step"])
                digests[side].add(out["weights_sha256"])
    ratios = [ta / tb for ta, tb in zip(times["A"], times["B"], strict=True)]
    return {
        "A": a,
        "B": b,
        "config": config,
        "S": size,
        "steps": steps,
        "ms_per_step": times,
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "ratios": ratios,
        "same_bits": len(digests["A"]) == 1 and digests["A"] == digests["B"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="side A: a commit of this repository, or a source folder")
    parser.add_argument("b", nargs="?", default=".", help="side B (default: the working tree)")
    parser.add_argument("--config", choices=("default", "large", "small"), default="default")
    parser.add_argument("--size", type=int, default=32, help="stack size S")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per process")
    parser.add_argument("--rounds", type=int, default=6, help="processes per side")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.steps < 1 or args.size < 1:
        parser.error("--rounds, --steps and --size must be at least 1")
    report = compare(args.a, args.b, args.config, args.size, args.steps, args.rounds)
    if args.json:
        print(json.dumps(report))
        return
    print(f"A = {args.a}, B = {args.b}: {args.config} config, S = {args.size}, {args.steps} steps per process")
    for r, (ta, tb) in enumerate(zip(report["ms_per_step"]["A"], report["ms_per_step"]["B"], strict=True)):
        print(f"round {r + 1}: A {ta:7.2f} ms/step   B {tb:7.2f} ms/step   A/B {ta / tb:.3f}")
    print(
        f"A/B median {report['ratio_median']:.3f} (range {report['ratio_min']:.3f}-{report['ratio_max']:.3f}); "
        f"same bits: {'yes' if report['same_bits'] else 'no'}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
