"""The prepared GPU scripts (``scripts/gpu_perf.sh``, the throughput check, ``scripts/gpu_realdata.sh``, real data
with the flagship config and a ResNet-18, and ``scripts/gpu_study.sh``) and their
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

from benchmarks import gpu_realdata_report, gpu_report, train_step

from robinherit.cli import app
from robinherit.config import AutoAttackSet, load_config, parse_overrides
from robinherit.data.datasets import LoadSpec, load_dataset
from robinherit.paths import flatten
from robinherit.runs.audit_target import audit_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
GPU_PERF = (SCRIPTS / "gpu_perf.sh").read_text()
GPU_REALDATA = (SCRIPTS / "gpu_realdata.sh").read_text()


def _joined(script: str) -> list[str]:
    """The script's lines with backslash continuations joined."""
    return script.replace("\\\n", " ").splitlines()


@pytest.mark.parametrize("name", ["gpu_perf.sh", "gpu_realdata.sh", "gpu_study.sh", "device_prep.sh", "device_env.sh"])
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


def _calls(script: str, command: str) -> list[tuple[str, list[str]]]:
    """(line, words after `"${RH[@]}" COMMAND`) for each call of a robinherit command, shell variables as text."""
    marker = f'"${{RH[@]}}" {command} '
    return [(line, shlex.split(line.split(marker, 1)[1])) for line in _joined(script) if marker in line]


def _parsed(command: str, words: list[str], tmp_path: Path) -> dict:
    """The command's options as the CLI parses them (an unknown flag fails here), the script's folders in tmp_path."""
    from typer.main import get_command

    words = [w.replace("$cifar", str(tmp_path / "cifar")).replace("$work", str(tmp_path)) for w in words]
    return get_command(app).commands[command].make_context(command, words).params


def _defaults(script: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"^(\w+)=\$\{\1:-(\d+)\}", script, re.M)}


def test_gpu_realdata_runs_are_the_flagship_and_a_short_resnet18_on_the_gpu(tmp_path):
    (_, flagship_words), (_, resnet_words) = _calls(GPU_REALDATA, "run")
    configs = []
    for words in (flagship_words, resnet_words):
        params = _parsed("run", words, tmp_path)
        assert params["json_out"] and params["seeds"] == "0"
        configs.append(load_config(params["config"], params["set_"]))
    flagship, resnet = configs
    shipped = load_config("fashion_mnist")
    assert flagship.device == "cuda" and flagship.eval.n_test is None  # all 10,000 test images
    assert flagship.eval.autoattack == AutoAttackSet.standard
    for section in ("pretrain", "downstream", "model", "data"):  # the flagship as shipped apart from the three above
        assert getattr(flagship, section) == getattr(shipped, section)
    assert (resnet.device, resnet.model.encoder, resnet.data.source) == ("cuda", "resnet18", "cifar10")
    assert resnet.data.root == str(tmp_path / "cifar") and resnet.pretrain.steps == 50
    per_file = _defaults(GPU_REALDATA)["CIFAR_PER_BATCH"]  # the random files hold 5 x this to train on, this to test
    assert resnet.downstream.n_train <= 5 * per_file and resnet.eval.n_test == 200 <= per_file


def test_gpu_realdata_audits_the_stored_resnet18_run_on_the_gpu(tmp_path):
    (_, run_words), *_ = [c for c in _calls(GPU_REALDATA, "run") if "cifar10_resnet18" in c[0]]
    [(_, audit_words)] = _calls(GPU_REALDATA, "audit")
    run, audit = _parsed("run", run_words, tmp_path), _parsed("audit", audit_words, tmp_path)
    assert audit["encoder"] == "$run_id" and audit["json_out"]
    assert audit["store"] == run["store"]  # the audit reads the run from the store the run wrote
    cfg = audit_config(load_config(run["config"], run["set_"]), flatten(parse_overrides(audit["set_"])))
    assert cfg.device == "cuda"


def test_gpu_realdata_cuts_every_step_and_fits_nine_minutes():
    limits = {k: v for k, v in _defaults(GPU_REALDATA).items() if k.endswith("_TIMEOUT")}
    assert limits["FLAGSHIP_TIMEOUT"] == 360
    steps = [line.strip() for line in _joined(GPU_REALDATA) if line.strip().startswith("step ")]
    assert len(steps) == len(_calls(GPU_REALDATA, "run")) + len(_calls(GPU_REALDATA, "audit")) == 3
    assert all('"${RH[@]}"' in s and shlex.split(s)[2].strip("$") in limits for s in steps)
    # each step may run 5 s past its limit before the kill; 20 s are left for the setup and the summary
    assert sum(limits.values()) + 5 * len(steps) + 20 <= 9 * 60


def test_gpu_realdata_random_cifar_files_load_with_the_cifar10_loader(tmp_path):
    snippet = re.search(r"<< 'EOF'.*?\n(.*?\n)EOF\n", GPU_REALDATA, re.S).group(1)
    done = subprocess.run([sys.executable, "-", str(tmp_path), "3"], input=snippet, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    ds = load_dataset("cifar10", LoadSpec(root=tmp_path))
    assert ds.x_train.shape == (15, 3072) and ds.x_test.shape == (3, 3072) and ds.image_shape == (3, 32, 32)
    assert float(ds.x_train.min()) >= 0 and float(ds.x_train.max()) <= 1 and float(ds.x_train.std()) > 0.2
    assert set(ds.y_train.tolist()) | set(ds.y_test.tolist()) <= set(range(10))


def _row(clean: float, robust: float) -> dict:
    return {"clean_acc": clean, "robust_acc": {"0": clean, "0.1": robust}, "attacks": ["pgd-20x1"]}


def test_gpu_realdata_report_gives_every_time_and_accuracy_and_names_a_stopped_step(tmp_path):
    (tmp_path / "steps.txt").write_text(
        "flagship exit 0, 200.6 s wall\nresnet exit 124 (stopped at 75 s), 75.1 s wall\n"
        "audit not run: the ResNet-18 run wrote no record\n"
    )
    (tmp_path / "flagship.time").write_text("200.58 s wall, 3000000 KB peak memory\n")
    record = {
        "run_id": "abc",
        "config": {"device": "cuda"},
        "dataset": {"name": "fashion_mnist", "n_test": 10000, "n_downstream_train": 5000},
        "timing_s": {"pretrain": 10.1, "downstream": 5.3, "eval": 180.3, "total": 195.7},
        "pretrain": _row(0.8, 0.61),
        "downstream": {"clean_head": _row(0.75, 0.55), "adversarial_head": _row(0.74, 0.6)},
    }
    (tmp_path / "flagship.json").write_text(json.dumps(record) + "\n")
    (tmp_path / "resnet.json").write_text("")
    (tmp_path / "resnet.err").write_text("Terminated\n")
    text = gpu_realdata_report.summary(tmp_path)
    flagship, resnet, audit, skipped = text.split("\n\n")[1:]
    assert "flagship exit 0, 200.6 s wall" in flagship and "200.58 s wall, 3000000 KB peak" in flagship
    assert "pretrain 10.1 s, downstream 5.3 s, eval 180.3 s, total 195.7 s" in flagship
    rows = {line.split()[0]: line.split()[-2:] for line in flagship.splitlines()[-4:-1]}
    assert rows == {"pre-trained": ["0.8000", "0.6100"], "SLF": ["0.7500", "0.5500"], "ALF": ["0.7400", "0.6000"]}
    assert "stopped at 75 s" in resnet and "no record (last error line: Terminated)" in resnet
    assert "not run" in audit and skipped == "audit not run: the ResNet-18 run wrote no record"
