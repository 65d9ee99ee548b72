#!/usr/bin/env bash
# Throughput on a CUDA GPU against the same machine's CPUs, in one short run (about 8 minutes):
#   1. tests/test_cuda.py (CPU = CUDA to tolerance, the stacked paths, both encoders on real data);
#   2. benchmarks.train_step on the CPU (S = 1, 8, 32) and on the GPU (S = 1, 32, 128, 512), default config,
#      with the GPU / CPU ratio of every path both ran;
#   3. a sweep of 256 synthetic runs (sweeps/supervised_256_seeds.yaml: configs/supervised.yaml, seeds 0-255,
#      clean heads only, 500 test examples: the GPU's stacked pre-training is what is timed) on the GPU, its wall time.
# Results go to $OUT (default results/gpu_perf); docs/performance.md says where they were written up.
#   bash scripts/gpu_perf.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/gpu_perf}
mkdir -p "$OUT"
PY=${PY:-.venv/bin/python}
export PYTHONPATH="src:.${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
git rev-parse HEAD > "$OUT/commit.txt" 2>/dev/null || true

# 1. the CUDA tests
$PY -m pytest -q tests/test_cuda.py 2>&1 | tail -3 | tee "$OUT/test_cuda.txt"

# 2. the benchmark, CPU then GPU, in this one session of the machine
$PY -m benchmarks.train_step --json --skip-large --sizes 1,8,32 > "$OUT/bench_cpu.json"
$PY -m benchmarks.train_step --json --skip-large --device cuda --sizes 1,32,128,512 > "$OUT/bench_cuda.json"
$PY - "$OUT" <<'PYEOF' | tee "$OUT/bench_ratio.txt"
import json, sys
out = sys.argv[1]
cpu, gpu = (json.load(open(f"{out}/bench_{d}.json")) for d in ("cpu", "cuda"))
key = lambda r: (r["path"], r["S"])
on_cpu = {key(r): r["samples_per_s"] for r in cpu["rows"]}
print(f"GPU {gpu['device']}, CPU {cpu['threads']} threads, commit {gpu['commit']}")
print(f"{'path':14} {'S':>4} {'GPU samples/s':>14} {'x GPU ref':>9} {'CPU samples/s':>14} {'GPU/CPU':>8}")
for r in gpu["rows"]:
    c = on_cpu.get(key(r))
    ratio = f"{r['samples_per_s'] / c:8.2f}" if c else "       -"
    cs = f"{c:14.0f}" if c else "             -"
    print(f"{r['path']:14} {r['S']:>4} {r['samples_per_s']:>14.0f} {r['ratio']:>9.2f} {cs} {ratio}")
PYEOF

# 3. 256 synthetic runs as one sweep on the GPU: the shipped spec with device=cuda
start=$(date +%s.%N)
$PY -m robinherit.cli sweep supervised_256_seeds --set device=cuda --store "$OUT/synthetic256.db" --batch 64 \
  --workers 2 --quiet
end=$(date +%s.%N)
echo "256 synthetic runs on the GPU: $(echo "$end - $start" | bc) s wall" | tee "$OUT/sweep.txt"
