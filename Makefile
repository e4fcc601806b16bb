# The two commands of the README:
#   make up    - set up and run the embedded default facility on this machine
#   make test  - set up and run the whole test suite
# Everything they need (apt, pip, npm) is installed here; nothing is assumed pre-installed.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: setup system-deps up test lint docs clean

setup: $(VENV)/.afhub-installed node_modules/.afhub-installed

$(VENV)/.afhub-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

node_modules/.afhub-installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Debian packages the tests use: headless Chromium for page tests.
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

up: setup
	$(VENV)/bin/afhub up $(AFHUB_ARGS)

test: setup system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

docs: setup
	$(VENV)/bin/afhub docs -o docs/values.md

clean:
	rm -rf $(VENV) node_modules .afhub
