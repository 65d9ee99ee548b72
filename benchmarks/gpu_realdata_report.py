"""The summary of ``scripts/gpu_realdata.sh``: for each step (the flagship Fashion-MNIST run, the ResNet-18 run on
random CIFAR-10-format images, the audit of that run), its exit status and wall time, the peak memory /usr/bin/time
saw, the stage times of its record (``timing_s``) and every accuracy in it: the pre-trained model's, SLF's (the
clean head) and ALF's (the adversarial head), clean and at each budget, and an audit's unit measures. A step that
wrote no record says so, with the last line of its error output.

    python -m benchmarks.gpu_realdata_report results/gpu_realdata > results/gpu_realdata/summary.txt
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

STEPS = {
    "flagship": "Fashion-MNIST flagship (configs/fashion_mnist.yaml, seed 0), AutoAttack standard, all test images",
    "resnet": "ResNet-18 (configs/cifar10_resnet18.yaml) on random CIFAR-10-format images, 50 pre-training steps",
    "audit": "audit of that ResNet-18 run",
}
MODELS = [
    ("pre-trained model", "pretrain"),
    ("SLF (clean head)", "clean_head"),
    ("ALF (adversarial head)", "adversarial_head"),
]


def step_lines(out: Path) -> dict[str, str]:
    """Each step's line of steps.txt ("NAME exit CODE..., S s wall"), by name; lines of no step are kept by text."""
    path = out / "steps.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return {line.split(" ", 1)[0] if " exit " in line else line: line for line in lines if line.strip()}


def read_record(path: Path) -> dict | None:
    """The first line of ``path`` as a JSON record, None where the step wrote none (it failed or was stopped)."""
    if not path.exists():
        return None
    first = path.read_text().strip().splitlines()[:1]
    try:
        rec = json.loads(first[0]) if first else None
    except json.JSONDecodeError:
        return None
    return rec if isinstance(rec, dict) else None


def _last_line(path: Path) -> str:
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []
    return lines[-1].strip() if lines else ""


def _budgets(rows: list[dict]) -> list[str]:
    keys = {k for r in rows for k in r.get("robust_acc", {}) if float(k) > 0}
    return sorted(keys, key=float)


def accuracy_table(rec: dict) -> list[str]:
    """One row per model the record evaluated: clean accuracy and robust accuracy at every non-zero budget."""
    rows = {"pretrain": rec.get("pretrain"), **rec.get("downstream", {})}
    found = [(label, rows[key]) for label, key in MODELS if "clean_acc" in (rows.get(key) or {})]
    if not found:
        return ["  no accuracies in the record"]
    budgets = _budgets([row for _, row in found])
    heads = [f"robust@{b}" for b in budgets]
    lines = [f"  {'model':24} {'clean':>7}" + "".join(f" {h:>{len(h)}}" for h in heads)]
    for label, row in found:
        robust = row.get("robust_acc", {})
        cells = "".join(f" {robust.get(b, float('nan')):{len(h)}.4f}" for b, h in zip(budgets, heads, strict=True))
        lines.append(f"  {label:24} {row['clean_acc']:7.4f}{cells}")
    attacks = sorted({a for _, row in found for a in row.get("attacks", [])})
    if attacks:
        lines.append(f"  attacks: {', '.join(attacks)}")
    return lines


def record_lines(rec: dict) -> list[str]:
    """A record's run id, data, stage times, accuracies and (an audit's) unit measures."""
    data = rec.get("dataset", {})
    timing = rec.get("timing_s", {})
    lines = [
        f"  run {rec.get('run_id', '?')}, device {rec.get('config', {}).get('device', '?')}, {data.get('name', '?')}: "
        f"{data.get('n_test', '?')} test images, {data.get('n_downstream_train', '?')} head training images",
        "  stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in timing.items()),
        *accuracy_table(rec),
    ]
    if rec.get("units"):
        lines.append("  units: " + ", ".join(f"{k} {v:.4f}" for k, v in rec["units"].items()))
    return lines


def summary(out: Path) -> str:
    steps = step_lines(out)
    machine = out / "machine.txt"
    lines = ["machine:", *("  " + ln for ln in (machine.read_text().splitlines() if machine.exists() else ["?"]))]
    for name, title in STEPS.items():
        lines += ["", f"{name}: {title}", f"  {steps.pop(name, 'not run')}"]
        if clock := _last_line(out / f"{name}.time"):
            lines.append(f"  /usr/bin/time: {clock}")
        rec = read_record(out / f"{name}.json")
        if rec is None:
            error = _last_line(out / f"{name}.err")
            lines.append(f"  no record{f' (last error line: {error})' if error else ''}")
        else:
            lines += record_lines(rec)
    if steps:  # lines of the script beside the steps: a setup that failed, a step it skipped
        lines += ["", *steps.values()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m benchmarks.gpu_realdata_report RESULTS_FOLDER")
    print(summary(Path(args[0])))


if __name__ == "__main__":
    main()
