# The two front-door commands: `make demo` and `make test` (what .ci/run runs).
# Every target installs what it needs, idempotently; reruns are fast thanks to stamps and caches.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY ?= python3
VENV := .venv
# pytest workers: each runs whole test files and starts its own local cluster.
TEST_WORKERS ?= 2
VPY := $(VENV)/bin/python
# Re-install the virtualenv only when the dependency list changes.
VENV_STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)

.PHONY: help
help:
	@echo "make demo   - start the local cluster, the operator, and show predictions, probes and mismatches"
	@echo "make test   - install everything the tests need, lint, type-check and run the whole test suite"
	@echo "make lint   - ruff and mypy only"
	@echo "make lock   - pin the image's Python dependencies with hashes (requirements.lock) after editing pyproject.toml"

$(VENV_STAMP):
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

.PHONY: venv
venv: $(VENV_STAMP)

.PHONY: system-deps
system-deps:
	bash localcluster/setup.sh

# The image's dependency lock (requirements.lock, hashes included) from pyproject.toml's dependencies.
.PHONY: lock
lock: venv
	$(VPY) -m pip install -q 'pip-tools>=7.4'
	PIP_FIND_LINKS= $(VENV)/bin/pip-compile -q --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url \
		--no-emit-find-links --output-file=requirements.lock pyproject.toml

.PHONY: lint
lint: venv
	$(VENV)/bin/ruff check operator tests localcluster bench
	$(VENV)/bin/mypy

.PHONY: test
test: system-deps venv lint
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

.PHONY: demo
demo: system-deps venv
	$(VPY) -m localcluster.demo $(DEMO_ARGS)
