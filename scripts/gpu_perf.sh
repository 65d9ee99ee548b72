#!/usr/bin/env bash
# Throughput on a CUDA GPU against the same machine's CPUs, in one short run (meant to fit in ten minutes; the sweep
# is cut at $SWEEP_TIMEOUT; not yet timed on a GPU):
#   1. tests/test_cuda.py (CPU = CUDA to tolerance, the stacked paths, both encoders on real data);
#   2. benchmarks.train_step on the CPU (S = 1, 8, 32) and on the GPU (S = 1, 32, 128, 512), default config,
#      with the GPU / CPU ratio of every path both ran (benchmarks.gpu_report);
#   3. a sweep of 256 synthetic runs (sweeps/supervised_256_seeds.yaml: configs/supervised.yaml, seeds 0-255,
#      clean heads only, 500 test examples: the GPU's stacked pre-training is what is timed) on the GPU, its wall
#      time, stopped after $SWEEP_TIMEOUT seconds (default 300) with the runs it stored by then counted.
# A step that fails is written down and the next one runs. Results go to $OUT (default results/gpu_perf), six files.
# On a machine without a package registry, first run `bash scripts/device_prep.sh` where pip works and copy .device
# into this checkout there:
#   bash scripts/gpu_perf.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/gpu_perf}
SWEEP_TIMEOUT=${SWEEP_TIMEOUT:-300}
mkdir -p "$OUT"
source scripts/device_env.sh > "$OUT/machine.txt" 2>&1 || { cat "$OUT/machine.txt"; exit 1; }
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  echo "commit $(git rev-parse HEAD 2>/dev/null || cat .device/commit.txt 2>/dev/null || echo unknown), $(nproc) CPUs"
} >> "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

# 1. the CUDA tests
$PY -m pytest -q tests/test_cuda.py > "$OUT/test_cuda.txt" 2>&1
echo "tests/test_cuda.py exit $?" >> "$OUT/test_cuda.txt"
tail -4 "$OUT/test_cuda.txt"

# 2. the benchmark, CPU then GPU, in this one run on the machine
$PY -m benchmarks.train_step --json --skip-large --sizes 1,8,32 > "$OUT/bench_cpu.json" || echo "CPU benchmark failed"
$PY -m benchmarks.train_step --json --skip-large --device cuda --sizes 1,32,128,512 > "$OUT/bench_cuda.json" \
  || echo "GPU benchmark failed"
$PY -m benchmarks.gpu_report "$OUT/bench_cpu.json" "$OUT/bench_cuda.json" | tee "$OUT/bench_ratio.txt"

# 3. 256 synthetic runs as one sweep on the GPU: the shipped spec with device=cuda, into a store outside $OUT
store=$(mktemp -d "${TMPDIR:-/tmp}/gpu_perf.XXXXXX")/synthetic256.db
sweep=($PY -m robinherit.cli sweep supervised_256_seeds --set device=cuda --store "$store")
start=$(date +%s.%N)
timeout "$SWEEP_TIMEOUT" "${sweep[@]}" --batch 64 --workers 2 --quiet > "$OUT/sweep.txt" 2>&1
code=$?
end=$(date +%s.%N)
{
  echo "sweep exit $code$([ "$code" = 124 ] && echo " (stopped at ${SWEEP_TIMEOUT} s)")"
  echo "wall $(python3 -c "print(f'{$end - $start:.1f}')") s"
  "${sweep[@]}" --dry-run 2>&1 | tail -1
} | tee -a "$OUT/sweep.txt"
