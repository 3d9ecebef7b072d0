# atc-wsi: two commands do all set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.atc-installed
VIEWER_STATIC := workers/viewer/static/openseadragon
PYTEST_ARGS ?=

.PHONY: all venv system-deps viewer-assets demo test lint typecheck pytest clean

all: test

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch is pinned here and installed first; pyproject declares compatible ranges that this
# exact pin satisfies, so the editable install below pulls no other build.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q --config-settings editable_mode=compat -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v Orthanc >/dev/null || [ -x /usr/sbin/Orthanc ] || missing="$$missing orthanc"; \
	[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing="$$missing orthanc-dicomweb"; \
	command -v OrthancWSIDicomizer >/dev/null || missing="$$missing orthanc-wsi"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

viewer-assets: $(VIEWER_STATIC)/openseadragon.min.js

$(VIEWER_STATIC)/openseadragon.min.js:
	mkdir -p .npm-cache && cd .npm-cache && \
	  ( [ -f package.json ] || echo '{"private": true}' > package.json ) && \
	  npm install --silent --no-audit --no-fund openseadragon@6
	mkdir -p $(VIEWER_STATIC)
	cp -r .npm-cache/node_modules/openseadragon/build/openseadragon/* $(VIEWER_STATIC)/

demo: venv viewer-assets
	$(VENV)/bin/atc-wsi demo --out out/demo

lint: venv
	$(VENV)/bin/ruff check wsi models workers tests scripts
	$(VENV)/bin/ruff format --check wsi models workers tests scripts

typecheck: venv
	$(VENV)/bin/mypy

pytest: venv system-deps viewer-assets
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test: venv system-deps viewer-assets lint typecheck pytest

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache
