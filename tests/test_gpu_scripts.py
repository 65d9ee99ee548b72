"""The prepared GPU scripts (``scripts/gpu_perf.sh``, the throughput check, and ``scripts/gpu_study.sh``) and their
helpers, checked without a GPU: time on a GPU machine is scarce, so a renamed flag, a wrong spec or a package the GPU
machine lacks must show up here, not there."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root holds benchmarks/

from benchmarks import gpu_report, train_step

from robinherit.cli import app

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
GPU_PERF = (SCRIPTS / "gpu_perf.sh").read_text()


def _joined(script: str) -> list[str]:
    """The script's lines with backslash continuations joined."""
    return script.replace("\\\n", " ").splitlines()


@pytest.mark.parametrize("name", ["gpu_perf.sh", "gpu_study.sh", "device_prep.sh", "device_env.sh"])
def test_script_is_valid_bash(name):
    done = subprocess.run(["bash", "-n", str(SCRIPTS / name)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_gpu_perf_benchmark_calls_parse_with_train_steps_command_line():
    calls = []
    for line in _joined(GPU_PERF):
        if "-m benchmarks.train_step " in line:
            words = shlex.split(line.split("-m benchmarks.train_step ", 1)[1])
            calls.append(words[: words.index(">")])
    parsed = [train_step.build_parser().parse_args(c) for c in calls]
    assert [p.device for p in parsed] == ["cpu", "cuda"]
    assert parsed[1].sizes == "1,32,128,512"  # the S = 32, 128 and 512, and 1 for the single-model path
    assert all(p.json and p.skip_large for p in parsed)


def test_gpu_perf_sweep_lists_256_runs_with_its_flags(tmp_path):
    spec, setting = re.search(r"robinherit\.cli sweep (\S+) --set (\S+)", GPU_PERF).groups()
    flags = shlex.split(re.search(r'"\$\{sweep\[@\]\}" (.*?) >', GPU_PERF).group(1))
    assert setting == "device=cuda"
    args = ["sweep", spec, "--set", setting, "--store", str(tmp_path / "s.db"), *flags, "--dry-run"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "256 runs, 0 stored" in result.output


def _gpu_row(path: str, size: int, sps: float, ratio: float) -> dict:
    return {"config": "default", "path": path, "S": size, "samples_per_s": sps, "ratio": ratio}


def test_gpu_report_divides_each_gpu_row_by_the_cpu_row_of_the_same_path_and_size():
    cpu = {"threads": 16, "rows": [_gpu_row("reference", 1, 100.0, 1.0), _gpu_row("batched", 32, 400.0, 4.0)]}
    gpu = {
        "device": "cuda (H)",
        "commit": "abc",
        "torch": "2.11",
        "rows": [
            _gpu_row("reference", 1, 50.0, 1.0),
            _gpu_row("batched", 32, 2000.0, 40.0),
            _gpu_row("batched", 128, 6000.0, 120.0),
        ],
    }
    rows = gpu_report.ratio_rows(cpu, gpu)
    assert [r["gpu_over_cpu"] for r in rows] == [0.5, 5.0, None]
    table = gpu_report.format_table(cpu, gpu).splitlines()
    assert "cuda (H)" in table[0] and "16 threads" in table[0]
    assert table[-1].split()[-2:] == ["-", "-"]  # S = 128 ran on the GPU only
    assert table[3].split()[-1] == "5.00"


def test_gpu_report_names_a_benchmark_run_that_wrote_nothing(tmp_path):
    good, empty, bad = tmp_path / "cpu.json", tmp_path / "gpu.json", tmp_path / "bad.json"
    good.write_text(json.dumps({"threads": 1, "rows": []}))
    empty.write_text("")
    bad.write_text("Traceback ...")
    with pytest.raises(SystemExit, match="missing or empty: its benchmark run failed"):
        gpu_report.main([str(good), str(empty)])
    with pytest.raises(SystemExit, match="not one JSON object"):
        gpu_report.main([str(good), str(bad)])


def _wheel(folder: Path, name: str, value: int) -> Path:
    """A minimal pure-Python wheel of one module ``name`` holding ``VALUE = value``."""
    info = f"{name}-0.1.dist-info"
    files = {
        f"{name}/__init__.py": f"VALUE = {value}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{info}/RECORD"])
    path = folder / f"{name}-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for arc, text in files.items():
            z.writestr(arc, text)
    return path


def test_device_env_installs_the_carried_wheels_and_data_without_a_network(tmp_path):
    wheels = tmp_path / ".device" / "whl"
    wheels.mkdir(parents=True)
    (tmp_path / ".device" / "data" / "fashion_mnist").mkdir(parents=True)
    _wheel(wheels, "rh_carried_probe", 7)
    (tmp_path / "src").symlink_to(ROOT / "src")
    probe = 'import os, rh_carried_probe; print("probe", rh_carried_probe.VALUE, os.environ["ROBINHERIT_DATA"])'
    script = f"source {SCRIPTS / 'device_env.sh'} && \"$PY\" -c '{probe}'"
    env = {**os.environ, "PY": sys.executable, "PIP_NO_INDEX": "1", "TMPDIR": str(tmp_path)}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    first, last = done.stdout.splitlines()[0], done.stdout.splitlines()[-1]
    assert first.startswith("python ") and "pydantic" in first  # the environment check ran, robinherit imported
    assert last == f"probe 7 {tmp_path / '.device' / 'data'}"


def test_device_prep_asks_for_the_install_it_takes_its_versions_from(tmp_path):
    env = {**os.environ, "PY": str(tmp_path / "no-venv" / "python")}
    done = subprocess.run(["bash", str(SCRIPTS / "device_prep.sh")], env=env, capture_output=True, text=True)
    assert done.returncode == 1 and "run 'make install' first" in done.stderr


def test_gpu_report_pairs_rows_of_the_same_config_only():
    # both configs have a reference at S = 1: each GPU row meets the CPU row of its own config
    large = {"config": "large", "path": "reference", "S": 1, "samples_per_s": 10.0, "ratio": 1.0}
    cpu = {"threads": 2, "rows": [_gpu_row("reference", 1, 100.0, 1.0), large]}
    gpu = {"device": "cuda", "commit": "abc", "torch": "2.11", "rows": [_gpu_row("reference", 1, 300.0, 1.0)]}
    assert [r["gpu_over_cpu"] for r in gpu_report.ratio_rows(cpu, gpu)] == [3.0]
    gpu["rows"].append({**large, "samples_per_s": 50.0})
    assert [r["gpu_over_cpu"] for r in gpu_report.ratio_rows(cpu, gpu)] == [3.0, 5.0]
    assert gpu_report.format_table(cpu, gpu).splitlines()[-1].split()[:2] == ["large", "reference"]
