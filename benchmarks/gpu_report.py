"""The GPU against the CPU of the same machine, from two ``benchmarks.train_step --json`` results: every path the
GPU run timed, its samples/s, its ratio to the GPU's own reference, and its ratio to the CPU's samples/s on the same
config, path and stack size where the CPU run timed that too. ``scripts/gpu_perf.sh`` prints this after both runs.

    python -m benchmarks.gpu_report bench_cpu.json bench_cuda.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def ratio_rows(cpu: dict, gpu: dict) -> list[dict]:
    """One row per GPU row: config, path, S, GPU samples/s, ratio to the GPU reference, CPU samples/s and GPU / CPU
    (None where the CPU run has no such config, path and S: the default and large configs share path names)."""
    on_cpu = {(r["config"], r["path"], r["S"]): r["samples_per_s"] for r in cpu["rows"]}
    rows = []
    for r in gpu["rows"]:
        c = on_cpu.get((r["config"], r["path"], r["S"]))
        rows.append(
            {
                "config": r["config"],
                "path": r["path"],
                "S": r["S"],
                "gpu_samples_per_s": r["samples_per_s"],
                "gpu_ratio": r["ratio"],
                "cpu_samples_per_s": c,
                "gpu_over_cpu": None if c is None else r["samples_per_s"] / c,
            }
        )
    return rows


def format_table(cpu: dict, gpu: dict) -> str:
    lines = [
        f"GPU {gpu['device']}, CPU {cpu['threads']} threads, commit {gpu['commit']}, torch {gpu['torch']}",
        f"{'config':8} {'path':14} {'S':>4} {'GPU samples/s':>14} {'x GPU ref':>9} "
        f"{'CPU samples/s':>14} {'GPU/CPU':>8}",
    ]
    for r in ratio_rows(cpu, gpu):
        cs = "-" if r["cpu_samples_per_s"] is None else f"{r['cpu_samples_per_s']:.0f}"
        ratio = "-" if r["gpu_over_cpu"] is None else f"{r['gpu_over_cpu']:.2f}"
        lines.append(
            f"{r['config']:8} {r['path']:14} {r['S']:>4} {r['gpu_samples_per_s']:>14.0f} {r['gpu_ratio']:>9.2f} "
            f"{cs:>14} {ratio:>8}"
        )
    return "\n".join(lines)


def _load(path: str) -> dict:
    text = Path(path).read_text() if Path(path).exists() else ""
    if not text.strip():
        raise SystemExit(f"{path} is missing or empty: its benchmark run failed (see the run's output above)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise SystemExit(
            f"{path} is not one JSON object ({err}): was it written by benchmarks.train_step --json?"
        ) from None


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit("usage: python -m benchmarks.gpu_report CPU.json GPU.json")
    print(format_table(_load(args[0]), _load(args[1])))


if __name__ == "__main__":
    main()
