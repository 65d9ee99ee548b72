#!/usr/bin/env bash
# Where a CUDA GPU is at hand: the Fashion-MNIST study at full length with device=cuda, AutoAttack standard on the
# full 10,000-image test set, plus the CUDA tests and a 256-run synthetic sweep's wall time. CPU defaults are not
# touched: every setting here is a --set on the shipped configs. Results go to $OUT (default results/gpu).
# It runs for hours and writes about twenty files, so it is for a GPU machine one can hold that long; for a check of
# minutes, scripts/gpu_perf.sh is the one that fits. Where the
# machine has no package registry or no Fashion-MNIST, run `bash scripts/device_prep.sh --data` first and bring
# .device along (scripts/device_env.sh picks it up).
#   bash scripts/gpu_study.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/gpu}
mkdir -p "$OUT"
source scripts/device_env.sh
RH="$PY -m robinherit.cli"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"

# 1. the CUDA tests (CPU = CUDA to tolerance, stacked paths, both encoders on real data)
$PY -m pytest -q tests/test_cuda.py 2>&1 | tail -3 | tee "$OUT/test_cuda.txt"

# 2. the robust encoders at full length: CNN and two-layer, AT and clean arms, 3 seeds, AutoAttack standard
#    (APGD-CE, APGD-T, FAB-T, Square 5000) on all 10,000 test images, both heads
FULL=(--set device=cuda --set eval.n_test=null --set eval.autoattack=standard --set eval.eps_grid=[0,0.1])
for cfg in fashion_mnist fashion_mnist_two_layer; do
  for eps in 0.1 0; do
    /usr/bin/time -f "%e s wall" $RH run "$cfg" "${FULL[@]}" --set pretrain.eps=$eps --seeds 0-2 --json \
      --store "$OUT/fmnist_gpu.db" > "$OUT/${cfg}_eps${eps}.json" 2> "$OUT/${cfg}_eps${eps}.time"
  done
done

# 3. the study's sweeps on the GPU (head dial, class-split transfer, purity vs inheritance)
for spec in fashion_mnist_head_dial fashion_mnist_transfer fashion_mnist_purity; do
  /usr/bin/time -f "%e s wall" $RH sweep "$spec" --set device=cuda --store "$OUT/$spec.db" --quiet \
    2> "$OUT/$spec.time" || echo "$spec failed" >> "$OUT/failures.txt"
done

# 4. 256 synthetic runs (sweeps/supervised_256_seeds.yaml) as one sweep on the GPU, wall time
/usr/bin/time -f "%e s wall" $RH sweep supervised_256_seeds --set device=cuda --store "$OUT/synthetic256.db" \
  --batch 64 --quiet \
  2> "$OUT/synthetic256.time"
tail -n 1 "$OUT"/*.time
