# The two commands of the README:  `make run`  and  `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed

# $(call apt_install,PACKAGE,WHY[,APT OPTIONS]): install a Debian package (as root, or with sudo).
apt_install = { echo "installing $(2)"; as_root=$$([ "$$(id -u)" = 0 ] || echo sudo); \
  $$as_root apt-get update -qq && $$as_root apt-get install -y -qq $(3) $(1) >/dev/null; }

.PHONY: setup run test lint bench browser-deps mutation

setup: $(STAMP)

$(STAMP): requirements.txt
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $(STAMP)

## Start everything: Redis, the Keepa simulator (when KEEPA_API_KEY is unset), worker, beat, dashboard.
run: setup
	exec $(VPY) -m keepa_deals.runner

## Install what the tests need (Chromium, promtool, systemd-analyze, PostgreSQL, a TLS-capable Redis), lint, and run the whole suite.
test: setup browser-deps lint
	$(VPY) -m pytest

lint: setup
	$(VPY) -m ruff check .

browser-deps:
	@command -v chromium >/dev/null || test -x /usr/bin/chromium || \
	  $(call apt_install,chromium,Debian chromium for the browser tests)
	@command -v systemd-analyze >/dev/null || \
	  $(call apt_install,systemd,systemd-analyze to verify the systemd units,--no-install-recommends)
	@command -v promtool >/dev/null || \
	  $(call apt_install,prometheus,promtool (Debian prometheus) for docs/prometheus-alerts.yml,--no-install-recommends)
	@test -x /usr/bin/redis-server || \
	  $(call apt_install,redis-server,Debian redis-server (built with TLS) for the rediss:// tests)
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
	  $(call apt_install,postgresql,Debian postgresql: the tests start their own server on a free port)

## Benchmarks: each prints its figures as ratios against a baseline run in the same script; a
## missed target is reported and the others still run (the exit status says whether all met).
bench: setup
	@missed=""; for b in bench/bench_*.py; do echo "== $$b"; $(VPY) $$b || missed="$$missed $$b"; done; \
	  if [ -n "$$missed" ]; then echo "targets missed in:$$missed"; exit 1; fi

## Mutation testing with mutmut (slow, not in CI; docs/mutation.md). MUTATE="locks tokens" runs
## only those modules' mutants; MUTATION_CHILDREN mutants are tested at a time (half the CPUs).
MUTATE ?=
MUTATION_CHILDREN ?= $(shell n=$$(nproc); echo $$(( n > 1 ? n / 2 : 1 )))
mutation: setup
	$(VPY) -m pip install --quiet --disable-pip-version-check -r requirements-mutation.txt
	$(VENV)/bin/mutmut run --max-children $(MUTATION_CHILDREN) \
	  $(foreach module,$(MUTATE),'keepa_deals.$(module).*')
	$(VPY) tools/mutation_report.py
