# The two commands of the README:
#   make up    - set up and run the embedded default facility on this machine
#   make test  - set up and run the whole test suite
# Everything they need (apt, pip, npm) is installed here; nothing is assumed pre-installed.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=
JLPM := $(abspath $(VENV))/bin/jlpm
# the JupyterLab extension's sources: a change rebuilds it into the (editable) install
LABEXT_SOURCES := $(shell find labextension/src labextension/style labextension/schema -type f 2>/dev/null) \
	labextension/package.json labextension/yarn.lock

# The environment user servers of the local backend run in: a venv from the system Python
# (per-user accounts cannot execute a Python under /root) at a world-readable prefix, holding
# images/analysis/requirements.txt and afhub itself (non-editable, no deps). As root it lives in
# /opt (readable by every account); otherwise in the checkout (servers then run as you).
# Setting AFHUB_SERVER_ENV chooses another prefix; the hub reads the same variable.
SYSTEM_PYTHON ?= /usr/bin/python3
ifeq ($(shell id -u),0)
SERVER_ENV ?= $(or $(AFHUB_SERVER_ENV),/opt/afhub/envs/analysis)
else
SERVER_ENV ?= $(or $(AFHUB_SERVER_ENV),$(CURDIR)/.afhub/envs/analysis)
endif
export AFHUB_SERVER_ENV := $(SERVER_ENV)
# The stamp names the checkout that built the environment: another checkout's `make` rebuilds it.
ifneq ($(shell cat $(SERVER_ENV)/.afhub-built 2>/dev/null),$(CURDIR))
.PHONY: $(SERVER_ENV)/.afhub-built
endif
AFHUB_SOURCES := pyproject.toml $(shell find hub_config spawner authenticator server_ext \
	-type f -not -path '*/__pycache__/*' -not -name '*.pyc' 2>/dev/null)

.PHONY: setup server-env system-deps up test lint docs clean

setup: $(VENV)/.afhub-installed node_modules/.afhub-installed labextension/node_modules/.afhub-installed

# `pip install -e` builds the JupyterLab extension (labextension/afhub_build.py: jlpm install,
# jlpm build:prod) and installs it into $(VENV)/share/jupyter/labextensions.
$(VENV)/.afhub-installed: pyproject.toml labextension/afhub_build.py $(LABEXT_SOURCES)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

node_modules/.afhub-installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

server-env: $(SERVER_ENV)/.afhub-built

# after the dev install: it builds the JupyterLab extension, which `pip install .` then ships
$(SERVER_ENV)/.afhub-built: images/analysis/requirements.txt $(wildcard images/analysis/data/*.root) \
		$(AFHUB_SOURCES) $(LABEXT_SOURCES) $(VENV)/.afhub-installed
	@$(SYSTEM_PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-venv >/dev/null; }
	mkdir -p $(dir $(SERVER_ENV))
	chmod a+rx $(dir $(SERVER_ENV)) $(dir $(patsubst %/,%,$(dir $(SERVER_ENV))))
	[ -x $(SERVER_ENV)/bin/pip ] || $(SYSTEM_PYTHON) -m venv $(SERVER_ENV)
	$(SERVER_ENV)/bin/python -m pip install --quiet --upgrade pip
	$(SERVER_ENV)/bin/python -m pip install --quiet -r images/analysis/requirements.txt
	# scikit-hep-testdata files the sample notebook opens (it would download them; see SOURCE.md)
	cp images/analysis/data/*.root "$$($(SERVER_ENV)/bin/python -c 'import os, skhep_testdata.data as d; print(os.path.dirname(d.__file__))')"/
	rm -rf build
	$(SERVER_ENV)/bin/python -m pip install --quiet --no-deps --force-reinstall .
	rm -rf build
	chmod -R a+rX,go-w $(SERVER_ENV)
	echo '$(CURDIR)' > $@

# the extension's JS dependencies (jest, builder) from its committed yarn.lock
labextension/node_modules/.afhub-installed: labextension/package.json labextension/yarn.lock $(VENV)/.afhub-installed
	cd labextension && $(JLPM) install --immutable
	touch $@

# Debian packages the tests use: headless Chromium for page tests; Slurm (slurm-wlm), munge and
# sudo for the batch backend's tests (tests/slurm.py starts the daemons, nothing runs here).
SYSTEM_PACKAGES := chromium slurm-wlm munge sudo
SYSTEM_COMMANDS := /usr/bin/chromium /usr/sbin/slurmctld /usr/sbin/slurmd /usr/sbin/munged /usr/bin/sudo
system-deps:
	@for c in $(SYSTEM_COMMANDS); do [ -x $$c ] || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	fi

up: setup server-env
	$(VENV)/bin/afhub up $(AFHUB_ARGS)

test: setup server-env system-deps
	cd labextension && PATH=$(abspath $(VENV))/bin:$$PATH $(JLPM) test --ci
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

docs: setup
	$(VENV)/bin/afhub docs -o docs/values.md

clean:
	rm -rf $(VENV) node_modules .afhub labextension/node_modules labextension/lib labextension/dist labextension/.build-stamp
