# Sourced by the GPU scripts: the Python to run and the packages carried in .device/ (scripts/device_prep.sh).
# PY: $PY where set, else this checkout's .venv, else the machine's python3 (the GPU machine's holds PyTorch).
# Wheels in .device/whl go into a temporary folder ahead of the machine's own packages on PYTHONPATH, unpacked
# without a network (--no-index) and without resolving (the set was pinned where it was downloaded); Fashion-MNIST's
# files in .device/data become $ROBINHERIT_DATA. src/ and the checkout's root come first, as in the tests.
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
site=""
if compgen -G ".device/whl/*.whl" > /dev/null; then
  site=$(mktemp -d "${TMPDIR:-/tmp}/robinherit-site.XXXXXX")
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .device/whl/*.whl
fi
if [ -d .device/data ]; then export ROBINHERIT_DATA="$PWD/.device/data"; fi
export PYTHONPATH="src:.${site:+:$site}${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch, pydantic, typer, robinherit; print(f'python {__import__(\"sys\").version.split()[0]}, torch {torch.__version__}, pydantic {pydantic.VERSION}, CUDA {torch.cuda.is_available()}')"
