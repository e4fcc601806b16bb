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

# The locks: every environment we install is installed from one (docs/developers.md, "Locks").
# pyproject.toml keeps ranges (a library must not pin); the locks are what we test and ship.
HUB_LOCK ?= requirements-hub.txt
SERVER_LOCK ?= images/analysis/requirements.txt
UV := $(VENV)/bin/uv
# Linux, Python 3.11; the locks are compiled for x86_64 and must resolve unchanged for aarch64
LOCK_FOR = --python-version 3.11 --python-platform $(1)-unknown-linux-gnu
HUB_INPUTS := --extra test --extra demo pyproject.toml requirements-hub.in
SERVER_INPUTS := -c $(HUB_LOCK) images/analysis/requirements.in
# the images' own locks, each constrained by the one it extends (same version of every package):
# the GPU image's additions to the analysis environment, the hub image's afhub[kubernetes]
GPU_LOCK ?= images/analysis/requirements-gpu.txt
GPU_INPUTS := -c $(SERVER_LOCK) images/analysis/requirements-gpu.in
HUB_IMAGE_LOCK ?= images/hub/requirements.txt
HUB_IMAGE_INPUTS := -c $(HUB_LOCK) --extra kubernetes pyproject.toml requirements-hub.in

.PHONY: setup server-env system-deps up-deps up test lint docs clean lock lock-verify images image-deps

setup: $(VENV)/.afhub-installed node_modules/.afhub-installed labextension/node_modules/.afhub-installed

# `pip install -e` builds the JupyterLab extension (labextension/afhub_build.py: jlpm install,
# jlpm build:prod) and installs it into $(VENV)/share/jupyter/labextensions.
# The lock includes the `demo` extra (oidc-provider-mock, the demo identity provider of `afhub up`),
# which a plain `pip install afhub` does not bring.
# Everything comes from the lock (exact versions, hashes checked, no resolver: --no-deps), then
# afhub itself is built with the lock's setuptools (--no-build-isolation) and installed editable.
$(VENV)/.afhub-installed: $(HUB_LOCK) pyproject.toml labextension/afhub_build.py $(LABEXT_SOURCES)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(HUB_LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	touch $@

node_modules/.afhub-installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

server-env: $(SERVER_ENV)/.afhub-built

# after the dev install: it builds the JupyterLab extension, which `pip install .` then ships
$(SERVER_ENV)/.afhub-built: $(SERVER_LOCK) $(wildcard images/analysis/data/*.root) \
		$(AFHUB_SOURCES) $(LABEXT_SOURCES) $(VENV)/.afhub-installed
	@$(SYSTEM_PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-venv >/dev/null; }
	mkdir -p $(dir $(SERVER_ENV))
	chmod a+rx $(dir $(SERVER_ENV)) $(dir $(patsubst %/,%,$(dir $(SERVER_ENV))))
	# no seeded pip/setuptools: the lock brings its own pip
	[ -x $(SERVER_ENV)/bin/python ] || $(SYSTEM_PYTHON) -m venv --without-pip $(SERVER_ENV)
	# exactly the lock: uv installs what it pins (hashes checked) and removes anything else
	$(UV) pip sync --quiet --require-hashes --python $(SERVER_ENV)/bin/python $(SERVER_LOCK)
	$(UV) pip check --quiet --python $(SERVER_ENV)/bin/python
	# scikit-hep-testdata files the sample notebook opens (it would download them; see SOURCE.md)
	cp images/analysis/data/*.root "$$($(SERVER_ENV)/bin/python -c 'import os, skhep_testdata.data as d; print(os.path.dirname(d.__file__))')"/
	# afhub: a wheel built by the hub environment (the lock's setuptools and jlpm), no deps
	rm -rf build
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir build/afhub-wheel .
	$(SERVER_ENV)/bin/python -m pip install --quiet --no-deps --force-reinstall build/afhub-wheel/afhub-*.whl
	rm -rf build
	chmod -R a+rX,go-w $(SERVER_ENV)
	echo '$(CURDIR)' > $@

# the extension's JS dependencies (jest, builder) from its committed yarn.lock
labextension/node_modules/.afhub-installed: labextension/package.json labextension/yarn.lock $(VENV)/.afhub-installed
	cd labextension && $(JLPM) install --immutable
	touch $@

# Debian packages: XRootD with the scitokens plugin for the embedded storage (`afhub up` with
# data.embedded); for the tests also headless Chromium (page tests), Slurm (slurm-wlm), munge and
# sudo (the batch backend's tests; tests/slurm.py starts the daemons, nothing runs here),
# PostgreSQL (the hub database under restarts; tests/postgres.py runs its own server).
UP_PACKAGES := xrootd-server xrootd-server-plugins xrootd-scitokens-plugins xrootd-client
# podman and what makes a base image without a registry (tests/test_images.py, make images)
IMAGE_PACKAGES := podman buildah mmdebstrap runc
SYSTEM_PACKAGES := $(UP_PACKAGES) chromium slurm-wlm munge sudo postgresql $(IMAGE_PACKAGES)
# apt-get install of those of $(1) that are not installed yet
define apt_install
	@missing=$$(for p in $(1); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
endef
system-deps:
	$(call apt_install,$(SYSTEM_PACKAGES))
up-deps:
	$(call apt_install,$(UP_PACKAGES))
image-deps:
	$(call apt_install,$(IMAGE_PACKAGES))

# The images (images/build.py; images/README.md): podman configured for this machine with its
# storage in .afhub/containers, a Debian base made here with mmdebstrap when missing (no registry
# needed), the afhub wheel built by the hub environment, then each image of IMAGES
# (analysis, analysis-gpu, hub, or all), reused when one with the same inputs exists.
IMAGES ?= analysis
images: setup image-deps
	$(PY) images/build.py $(IMAGES)

up: setup server-env up-deps
	$(VENV)/bin/afhub up $(AFHUB_ARGS)

# The images tests/test_images.py runs are built first, in the background (their downloads and
# builds overlap the suite instead of following it); the test waits for that build (images/build.py
# builds one at a time per image store) and reuses its images, or builds and reports what failed.
# Not when PYTEST_ARGS picks tests.
test: setup server-env system-deps
	$(if $(PYTEST_ARGS),,@mkdir -p .afhub && ($(PY) images/build.py all > .afhub/images-prebuild.log 2>&1 &))
	cd labextension && PATH=$(abspath $(VENV))/bin:$$PATH $(JLPM) test --ci
	$(PY) -m pytest $(PYTEST_ARGS)

# Refresh both locks to the newest releases the inputs allow (LOCK_ARGS=--upgrade-package NAME
# for one), check them for aarch64, then run the whole suite on what they now pin.
LOCK_ARGS ?= --upgrade
lock: setup
	$(UV) pip compile --quiet --generate-hashes $(LOCK_ARGS) $(call LOCK_FOR,x86_64) \
	  $(HUB_INPUTS) -o $(HUB_LOCK)
	$(UV) pip compile --quiet --generate-hashes $(LOCK_ARGS) $(call LOCK_FOR,x86_64) \
	  $(SERVER_INPUTS) -o $(SERVER_LOCK)
	$(UV) pip compile --quiet --generate-hashes $(LOCK_ARGS) $(call LOCK_FOR,x86_64) \
	  $(GPU_INPUTS) -o $(GPU_LOCK)
	$(UV) pip compile --quiet --generate-hashes $(LOCK_ARGS) $(call LOCK_FOR,x86_64) \
	  $(HUB_IMAGE_INPUTS) -o $(HUB_IMAGE_LOCK)
	$(MAKE) lock-verify
	$(MAKE) test

# Each lock, resolved again for aarch64 with binary wheels only and constrained by itself, must
# pin exactly what it pins (a version with no aarch64 wheel makes the resolution fail or move).
lock-verify:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	for lock in $(HUB_LOCK) $(SERVER_LOCK) $(GPU_LOCK) $(HUB_IMAGE_LOCK); do \
	  case "$$lock" in \
	    $(HUB_LOCK)) inputs="$(HUB_INPUTS)";; $(SERVER_LOCK)) inputs="$(SERVER_INPUTS)";; \
	    $(GPU_LOCK)) inputs="$(GPU_INPUTS)";; *) inputs="$(HUB_IMAGE_INPUTS)";; \
	  esac; \
	  $(UV) pip compile --quiet --no-header --no-annotate --only-binary :all: \
	    $(call LOCK_FOR,aarch64) -c "$$lock" $$inputs -o "$$tmp/aarch64.txt"; \
	  grep -oE '^[A-Za-z0-9_.-]+==[^ ;]+' "$$lock" > "$$tmp/want"; \
	  grep -oE '^[A-Za-z0-9_.-]+==[^ ;]+' "$$tmp/aarch64.txt" > "$$tmp/got"; \
	  diff -u --label "$$lock" --label "$$lock resolved for aarch64" "$$tmp/want" "$$tmp/got"; \
	  echo "$$lock: $$(wc -l < "$$tmp/want") pins resolve unchanged for aarch64"; \
	done

lint: setup
	$(VENV)/bin/ruff check .

docs: setup
	$(VENV)/bin/afhub docs -o docs/values.md

clean:
	rm -rf $(VENV) node_modules .afhub labextension/node_modules labextension/lib labextension/dist labextension/.build-stamp
