# `make test` is the README's test command (and what .ci/run runs) on a fresh Debian machine:
# Debian's chromium + chromium-driver for the browser test and redis-server for the fleet test,
# a venv, the package with its test extras, the lint and type gate, then every test.
VENV ?= .venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# mypy reads the repository's folders under their installed names (tunefit.estimator, ...)
# through links in this ignored folder.
MYPY_TREE := build/mypy

.PHONY: test test-deps venv lint serve bench

test-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v redis-server >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    chromium chromium-driver redis-server; }

venv:
	python3 -m venv $(VENV) && $(VENV)/bin/pip install -e '.[profiler,fleet,test]'

lint: venv
	$(VENV)/bin/ruff check .
	mkdir -p $(MYPY_TREE)/tunefit
	for package in app estimator profiler; do ln -sfn ../../../$$package $(MYPY_TREE)/tunefit/$$package; done
	cd $(MYPY_TREE) && $(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/pyproject.toml -p tunefit

test: test-deps venv lint
	$(VENV)/bin/python -m pytest

serve:
	python3 -m venv $(VENV) && $(VENV)/bin/pip install -e . && $(VENV)/bin/tunefit serve

bench:
	$(VENV)/bin/python bench/estimator_bench.py && $(VENV)/bin/python bench/api_bench.py
