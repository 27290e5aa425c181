# Relay gateway. `make dev` runs the whole system locally; `make test` runs the tests.
# Both set up .venv themselves (Python 3.11+ and pip are all they need).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
BENCH_STAMP := $(VENV)/.bench-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: dev test test-unit test-functional test-template test-modules test-integration bench check format lint openapi clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
	$(BIN)/python -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

dev: $(STAMP)
	$(BIN)/relay dev

# Every tier, each in its own pytest run, fastest first: the unit tier's own check (it
# imports neither moto nor the SAM translator) holds only in a run of that tier alone.
test: test-unit test-functional test-template test-modules test-integration

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit

test-functional: $(STAMP)
	$(BIN)/pytest tests/functional

test-template: $(STAMP)
	$(BIN)/pytest tests/template

test-modules: $(STAMP)
	$(BIN)/pytest tests/modules

test-integration: $(STAMP)
	$(BIN)/pytest tests/integration

# The benchmark (docs/benchmarks.md): a few minutes, loopback only; not part of `make test`.
# nginx and wrk come from Debian's packages, installed here if missing.
# BENCH_ARGS: --quick (a smoke check), --rounds N, --seconds S, --baseline REF (this tree
# against git REF in the same run: make bench BENCH_ARGS="--baseline d29e99e").
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	rm -f $(VENV)/.bench-*
	touch $@

bench: $(BENCH_STAMP)
	@command -v nginx >/dev/null && command -v wrk >/dev/null || \
		{ $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -q && \
		  $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -q nginx-light wrk; }
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# The quality gate: CI runs it before the tests, pre-commit runs it on every commit.
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/cfn-lint template.yaml platform/template.yaml modules/*/template.yaml
	$(BIN)/python -m relay.openapi --check
	$(MAKE) --no-print-directory checkov

# checkov over every template, in its own venv (its dependencies conflict with ours); each
# remaining finding is suppressed in the resource's Metadata with its reason (docs/deploy.md).
CHECKOV := .tools/checkov/bin/checkov
$(CHECKOV):
	$(PYTHON) -m venv .tools/checkov
	.tools/checkov/bin/python -m pip install -q checkov
checkov: $(CHECKOV)
	$(CHECKOV) --quiet --compact --skip-download --framework cloudformation \
		$(addprefix -f ,template.yaml platform/template.yaml $(wildcard modules/*/template.yaml))

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

lint: check

openapi: $(STAMP)
	$(BIN)/python -m relay.openapi

clean:
	rm -rf $(VENV) .relay .pytest_cache

# --- sam build (BuildMethod: makefile): one artifact per function ----------------------
# Each function gets shared_contracts (the contracts), module_kit (the runtime modules are
# built on) and its own package only, plus runtime requirements. LAMBDA_PIP=true skips the
# requirements (tests/template/test_artifacts.py builds the artifacts without a network).
LAMBDA_PIP ?= pip
define lambda_artifact
	mkdir -p $(ARTIFACTS_DIR)/modules
	cp -r shared_contracts module_kit $(ARTIFACTS_DIR)/
	$(1)
	$(LAMBDA_PIP) install -q -t $(ARTIFACTS_DIR) -r requirements-lambda.txt
endef

build-LoadsFunction:
	$(call lambda_artifact,cp modules/__init__.py $(ARTIFACTS_DIR)/modules/ && cp -r modules/loads $(ARTIFACTS_DIR)/modules/)
build-GatepassFunction:
	$(call lambda_artifact,cp modules/__init__.py $(ARTIFACTS_DIR)/modules/ && cp -r modules/gatepass $(ARTIFACTS_DIR)/modules/)
build-NavigateFunction:
	$(call lambda_artifact,cp modules/__init__.py $(ARTIFACTS_DIR)/modules/ && cp -r modules/navigate $(ARTIFACTS_DIR)/modules/)
build-MessageFunction:
	$(call lambda_artifact,cp modules/__init__.py $(ARTIFACTS_DIR)/modules/ && cp -r modules/message $(ARTIFACTS_DIR)/modules/)
build-NotificationsFunction:
	$(call lambda_artifact,cp modules/__init__.py $(ARTIFACTS_DIR)/modules/ && cp -r modules/notifications $(ARTIFACTS_DIR)/modules/)
build-GatewayFunction:
	$(call lambda_artifact,cp -r gateway $(ARTIFACTS_DIR)/)
build-DeferredReplayFunction:
	$(call lambda_artifact,cp -r gateway $(ARTIFACTS_DIR)/)
