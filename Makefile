# `make test` is the README's test command (and what .ci/run runs) on a fresh Debian machine:
# Debian's chromium + chromium-driver for the browser test and redis-server for the fleet test,
# a venv, the package with its test extras, then every test.
VENV ?= .venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test test-deps serve bench

test-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v redis-server >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    chromium chromium-driver redis-server; }

test: test-deps
	python3 -m venv $(VENV) && $(VENV)/bin/pip install -e '.[profiler,fleet,test]' && $(VENV)/bin/python -m pytest

serve:
	python3 -m venv $(VENV) && $(VENV)/bin/pip install -e . && $(VENV)/bin/tunefit serve

bench:
	$(VENV)/bin/python bench/estimator_bench.py && $(VENV)/bin/python bench/api_bench.py
