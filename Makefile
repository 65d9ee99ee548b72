# The README's two commands: `make demo` (install, then reproduce --quick) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Fashion-MNIST's full set: Debian's dataset-fashion-mnist puts its four IDX files here, where the loader looks
# when data.root is not set.
FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: demo test install lint bench fashion-mnist

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch; a bare `torch` would pull a multi-GB CUDA build.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev,ray,art,realdata,export]"
	# AutoAttack (torchattacks) without its torchvision requirement, which would replace the CPU torch build.
	$(BIN)/python -m pip install -q --no-deps torchattacks==3.5.1
	touch $(STAMP)

# Optional data, so it never fails the target: installed as root where apt-get exists (retried after
# `apt-get update`, since a fresh machine's package lists may be stale or empty), else one line says how.
# Its own phony target, not part of $(STAMP): a stamp made on a machine without it must not stop a later try.
fashion-mnist:
	@if [ -f $(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "Installing Debian's dataset-fashion-mnist (Fashion-MNIST, about 30 MB)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
	  || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; } \
	  || echo "Fashion-MNIST: apt-get install dataset-fashion-mnist failed; set data.root or ROBINHERIT_DATA instead"; \
	else \
	  echo "Fashion-MNIST (optional): sudo apt-get install dataset-fashion-mnist, or set data.root or ROBINHERIT_DATA"; \
	fi

install: $(STAMP) fashion-mnist

demo: $(STAMP) fashion-mnist
	$(BIN)/robinherit reproduce --quick --out results/reproduce

# The real Fashion-MNIST test runs where the package could be installed and is skipped elsewhere.
test: $(STAMP) fashion-mnist
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
