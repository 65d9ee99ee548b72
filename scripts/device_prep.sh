#!/usr/bin/env bash
# Before a GPU run on a machine that cannot reach a package registry: gather here, where pip can download, what
# robinherit needs there beyond the machine's own image (PyTorch, numpy, scipy, scikit-learn, matplotlib, PyYAML
# and pytest are in it), as wheels for its Python, into .device/ (which .gitignore keeps out of commits).
# scripts/device_env.sh, which the GPU scripts source, installs them there into a temporary folder.
#   bash scripts/device_prep.sh            # wheels only (scripts/gpu_perf.sh)
#   bash scripts/device_prep.sh --data     # and Fashion-MNIST's four files (scripts/gpu_study.sh)
# Then copy .device into the checkout on the GPU machine and run bash scripts/gpu_perf.sh there.
# The versions are this checkout's .venv's (`make install`), so the GPU machine runs the versions tested here; the
# platform and Python default to x86-64 and CPython 3.12 and can be set with DEVICE_PY and DEVICE_PLATFORMS.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEVICE_PY=${DEVICE_PY:-3.12}
DEVICE_PLATFORMS=${DEVICE_PLATFORMS:-manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64}
# robinherit's own requirements the image lacks (pydantic and what it needs) or may hold in older versions (the CLI's
# typer, rich), and torchattacks for the AutoAttack tests (installed without its torchvision requirement, as here)
PACKAGES=(pydantic pydantic_core annotated_types typing_inspection typing_extensions typer annotated_doc rich
  shellingham torchattacks)
WHEELS=.device/whl

if [ ! -x "$PY" ]; then
  echo "no $PY: run 'make install' first (the wheels take this environment's versions)" >&2
  exit 1
fi
rm -rf "$WHEELS" && mkdir -p "$WHEELS"
pins=()
for name in "${PACKAGES[@]}"; do
  version=$("$PY" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
  if [ -z "$version" ]; then
    echo "$name is not installed in $PY's environment: run 'make install' (torchattacks: see the README)" >&2
    exit 1
  fi
  pins+=("$name==$version")
done
platforms=()
for p in $DEVICE_PLATFORMS; do platforms+=(--platform "$p"); done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$DEVICE_PY" --implementation cp \
  "${platforms[@]}" -d "$WHEELS" "${pins[@]}"

if [ "${1:-}" = "--data" ]; then
  src=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
  mkdir -p .device/data/fashion_mnist
  cp "$src"/*-ubyte.gz .device/data/fashion_mnist/
fi
# the working tree travels to the GPU machine without .git: the commit it was prepared at goes along
echo "$(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')" \
  > .device/commit.txt
du -sh .device | sed 's/\t/ in /'
ls "$WHEELS"
