# RadCurate — every target sets up what it needs itself (a fresh machine needs only python3).
SHELL := /bin/bash
PY := .venv/bin/python
UV_VERSION := 0.13.9
PROTOCOL ?= cxr
STUDIES ?= $(if $(filter lumbar,$(PROTOCOL)),60,13735)
SEED ?= 0
PYTEST_ARGS ?=

.PHONY: setup demo read test unit integration e2e chaos bench bench-peers eval-labels up down status clean check lint lint-imports types

.venv/.synced: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	uv sync --frozen --extra local
	@touch $@

setup: .venv/.synced  ## the venv; Debian chromium (reviewer-page browser test), prometheus (--with-prometheus), orthanc (PACS ingest test), openssl (S3 gRPC certificates)
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium; } \
		|| echo "chromium not installed: the browser test will be skipped"
	@command -v prometheus >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends prometheus; } \
		|| echo "prometheus not installed: 'radcurate up --with-prometheus' and its test need it"
	@sh tests/support/install_orthanc.sh \
		|| echo "orthanc not installed: the PACS ingest test (tests/integration/test_pacs_ingest.py) will be skipped"
	@command -v openssl >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq openssl; } \
		|| echo "openssl not installed: the local S3 server needs it for its gRPC certificates"

demo: setup  ## a protocol's funnel on a fresh local stack: CXR at the paper's scale (STUDIES=… to shrink it), PROTOCOL=lumbar
	$(PY) -m radcurate.cli demo --studies $(STUDIES) --seed $(SEED) --protocol $(PROTOCOL)

read: setup  ## a small CXR funnel, then the stack stays up with a reviewer token for you: read at the printed URL
	$(PY) -m radcurate.cli demo --studies 300 --seed $(SEED) --keep-running

test: setup  ## the whole suite: unit, integration (real broker/Postgres/S3) and end-to-end
	$(PY) -m pytest $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint-imports: .venv/.synced  ## the import contracts in pyproject.toml (services apart, protocols as plug-ins)
	PYTHONPATH=$(CURDIR) .venv/bin/lint-imports --no-logo

lint: .venv/.synced  ## ruff: pyflakes, import order, bugbear, pyupgrade (config in pyproject.toml)
	.venv/bin/ruff check services radcurate tests bench

types: .venv/.synced  ## mypy, strict on the modules listed in pyproject.toml
	.venv/bin/mypy

check: lint types lint-imports  ## the fast inner loop: lint + types + import contracts + unit tests (no apt, no network once synced)
	PYTHONPATH=$(CURDIR) $(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

integration: setup
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

e2e: setup
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

# The fault test at full strength (issue 11 item 7): a 300-study funnel, every service, the broker,
# Postgres and the S3 server SIGKILLed CHAOS_ROUNDS times each, a 60 s LLM outage; a new random
# fault plan each run unless CHAOS_SEED is given (the seed is printed: rerun it to reproduce).
CHAOS_STUDIES ?= 300
CHAOS_ROUNDS ?= 3
CHAOS_LLM_OUTAGE_S ?= 60
CHAOS_SEED ?= $(shell od -An -N2 -tu2 /dev/urandom | tr -d ' ')
chaos: setup  ## the fault test, longer: CHAOS_STUDIES=300 CHAOS_ROUNDS=3 CHAOS_LLM_OUTAGE_S=60 CHAOS_SEED=…
	RADCURATE_FAULT_STUDIES=$(CHAOS_STUDIES) RADCURATE_FAULT_ROUNDS=$(CHAOS_ROUNDS) \
		RADCURATE_FAULT_LLM_OUTAGE_S=$(CHAOS_LLM_OUTAGE_S) RADCURATE_FAULT_SEED=$(CHAOS_SEED) \
		$(PY) -m pytest tests/e2e/test_faults.py -s $(PYTEST_ARGS)

bench: setup  ## speed, measured: prints figures and ratios to the targets
	$(PY) bench/run_all.py

# Label Studio for `make bench-peers` lives in its own throwaway venv: never a project dependency.
LABEL_STUDIO_VERSION := 1.23.2
PEERS_VENV := .bench-peers/venv
PEERS_ARGS ?=

$(PEERS_VENV)/.installed:
	@command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	uv venv -q --python python3 $(PEERS_VENV)
	uv pip install --quiet --python $(PEERS_VENV)/bin/python "label-studio==$(LABEL_STUDIO_VERSION)"
	@touch $@

bench-peers: setup $(PEERS_VENV)/.installed  ## RadCurate vs Label Studio on this machine: import, 3,000 annotations, export (PEERS_ARGS="--tasks 500 --votes 300" for a quick try)
	PYTHONPATH=$(CURDIR) $(PY) bench/peers/bench_peers.py --label-studio $(PEERS_VENV)/bin/label-studio $(PEERS_ARGS)

eval-labels: setup  ## accuracy of the offline report labeller: hand-labelled gold set + real Open-i reports (RADCURATE_OPENI_DIR)
	$(PY) -m radcurate.eval_labels

up: setup
	$(PY) -m radcurate.cli up
down: setup
	$(PY) -m radcurate.cli down
status: setup
	$(PY) -m radcurate.cli status

clean:
	-$(PY) -m radcurate.cli down
	rm -rf .radcurate out data .bench-peers
