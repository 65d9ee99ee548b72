#!/usr/bin/env bash
# Real data on a CUDA GPU, in one short run (meant to fit in nine minutes; every step is cut by `timeout`, so a slow
# one cannot eat the others' time; not yet run on a GPU):
#   1. the flagship config (configs/fashion_mnist.yaml, seed 0) with device=cuda and AutoAttack standard on all
#      10,000 test images, cut at $FLAGSHIP_TIMEOUT seconds (default 360): its stage times and the robust accuracy
#      of the pre-trained model, SLF and ALF;
#   2. ResNet-18 (configs/cifar10_resnet18.yaml) on random images in CIFAR-10's file format, which times the
#      pipeline, not what it learns: 50 PGD-10 pre-training steps, heads on 2,000 images, 200 test images, with
#      device=cuda, cut at $RESNET_TIMEOUT seconds (default 75); then the audit of that stored run on the GPU, cut
#      at $AUDIT_TIMEOUT seconds (default 70);
#   3. $OUT/summary.txt: every step's exit status and wall time, and the records' stage times and accuracies
#      (benchmarks.gpu_realdata_report).
# A step that fails is written down and the next one runs. Results go to $OUT (default results/gpu_realdata); the
# stores, with their weights, stay in a temporary folder. Without a package registry or Fashion-MNIST on the
# machine, first run `bash scripts/device_prep.sh --data` where pip works and copy .device into this checkout there:
#   bash scripts/gpu_realdata.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/gpu_realdata}
FLAGSHIP_TIMEOUT=${FLAGSHIP_TIMEOUT:-360}
RESNET_TIMEOUT=${RESNET_TIMEOUT:-75}
AUDIT_TIMEOUT=${AUDIT_TIMEOUT:-70}
CIFAR_PER_BATCH=${CIFAR_PER_BATCH:-1000} # images per file: 5,000 to train on, 1,000 to test
mkdir -p "$OUT"
rm -f "$OUT/steps.txt" "$OUT"/{flagship,resnet,audit}.{json,time,err}
source scripts/device_env.sh > "$OUT/machine.txt" 2>&1 || { cat "$OUT/machine.txt"; exit 1; }
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  echo "commit $(git rev-parse HEAD 2>/dev/null || cat .device/commit.txt 2>/dev/null || echo unknown), $(nproc) CPUs"
} >> "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu_realdata.XXXXXX")
RH=("$PY" -m robinherit.cli)

# step NAME LIMIT COMMAND...: stdout to $OUT/NAME.json, stderr to $OUT/NAME.err, /usr/bin/time's wall time and peak
# memory to $OUT/NAME.time; killed 5 s after LIMIT if it ignores the stop; exit status and wall time to steps.txt
step() {
  local name=$1 limit=$2 start=$EPOCHREALTIME code
  shift 2
  local clock=()
  if [ -x /usr/bin/time ]; then clock=(/usr/bin/time -f "%e s wall, %M KB peak memory" -o "$OUT/$name.time"); fi
  ${clock[@]+"${clock[@]}"} timeout -k 5 "$limit" "$@" > "$OUT/$name.json" 2> "$OUT/$name.err"
  code=$?
  echo "$name exit $code$( ((code == 124 || code == 137)) && echo " (stopped at $limit s)"), $(
    awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s wall" | tee -a "$OUT/steps.txt"
}

# 1. the flagship config on the GPU, AutoAttack standard on the whole test set
step flagship "$FLAGSHIP_TIMEOUT" "${RH[@]}" run fashion_mnist --seeds 0 --set device=cuda --set eval.n_test=null \
  --set eval.autoattack=standard --json --store "$work/flagship.db"

# 2. ResNet-18 on random CIFAR-10-format batches: plain dicts of a uint8 array and a list of labels, what the
#    loader's restricted unpickler admits
cifar="$work/cifar"
"$PY" - "$cifar" "$CIFAR_PER_BATCH" << 'EOF' || echo "cifar files exit $?" | tee -a "$OUT/steps.txt"
import pickle
import sys
from pathlib import Path

import numpy as np

folder, n = Path(sys.argv[1]) / "cifar-10-batches-py", int(sys.argv[2])
folder.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
    batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, n).tolist()}
    with (folder / name).open("wb") as fh:
        pickle.dump(batch, fh)
EOF
step resnet "$RESNET_TIMEOUT" "${RH[@]}" run configs/cifar10_resnet18.yaml --seeds 0 --set data.root="$cifar" \
  --set device=cuda --set pretrain.steps=50 --set downstream.n_train=2000 --set downstream.epochs=2 \
  --set eval.n_test=200 --json --store "$work/resnet.db"
run_id=$("$PY" -c 'import json, sys; print(json.loads(open(sys.argv[1]).readline())["run_id"])' "$OUT/resnet.json" \
  2> /dev/null)
if [ -n "$run_id" ]; then
  step audit "$AUDIT_TIMEOUT" "${RH[@]}" audit "$run_id" --store "$work/resnet.db" --set device=cuda --json
else
  echo "audit not run: the ResNet-18 run wrote no record" | tee -a "$OUT/steps.txt"
fi

# 3. every time and number in one file
"$PY" -m benchmarks.gpu_realdata_report "$OUT" | tee "$OUT/summary.txt"
rm -rf "$work"
