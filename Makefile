# The two commands of the README:  `make run`  and  `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed

.PHONY: setup run test lint bench browser-deps

setup: $(STAMP)

$(STAMP): requirements.txt
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $(STAMP)

## Start everything: Redis, the Keepa simulator (when KEEPA_API_KEY is unset), worker, beat, dashboard.
run: setup
	exec $(VPY) -m keepa_deals.runner

## Install what the tests need (Chromium for the browser tests), lint, and run the whole suite.
test: setup browser-deps lint
	$(VPY) -m pytest

lint: setup
	$(VPY) -m ruff check .

browser-deps:
	@command -v chromium >/dev/null || test -x /usr/bin/chromium || { \
	  echo "installing Debian chromium for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi; }

## Benchmarks: each prints its figures as ratios against a baseline run in the same script; a
## missed target is reported and the others still run (the exit status says whether all met).
bench: setup
	@missed=""; for b in bench/bench_*.py; do echo "== $$b"; $(VPY) $$b || missed="$$missed $$b"; done; \
	  if [ -n "$$missed" ]; then echo "targets missed in:$$missed"; exit 1; fi
