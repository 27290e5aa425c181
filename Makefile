# Relay gateway. `make dev` runs the whole system locally; `make test` runs the tests.
# Both set up .venv themselves (Python 3.11+ and pip are all they need).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The venv is re-installed when pyproject.toml or the dev lock changes.
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml requirements/dev.lock | cksum | cut -d' ' -f1)
BENCH_STAMP := $(VENV)/.bench-$(shell cksum pyproject.toml | cut -d' ' -f1)
# Optic, the contracts' checker (below), is re-installed when its lock changes.
OPTIC_STAMP := .tools/optic/.installed-$(shell cat tools/optic/package.json tools/optic/package-lock.json | cksum | cut -d' ' -f1)

.PHONY: dev test test-unit test-functional test-template test-modules test-contracts test-integration test-fuzz test-build build lock bench check format lint openapi clean gameday optic contracts-release

# The exact versions of requirements/dev.lock (hash-checked; its runtime packages are the
# versions every Lambda artifact ships, requirements/lambda.lock), then the project itself.
$(STAMP): pyproject.toml requirements/dev.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
	$(BIN)/python -m pip install -q -r requirements/dev.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

# nginx from Debian's packages, installed if missing: the balancer of `make dev GATEWAYS=N`
# (N > 1), the fleet game days of the integration tier, and the benchmark.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
comma := ,
NGINX_INSTALLED := { command -v nginx || test -x /usr/sbin/nginx; } >/dev/null
install-nginx = $(NGINX_INSTALLED) || { $(SUDO) apt-get update -q && \
	$(SUDO) apt-get install -y -q nginx-light $(1); }
# Chromium from Debian's packages, installed if missing: the browser the dashboard's test
# drives through Playwright (tests/integration/test_dashboard.py, /usr/bin/chromium).
install-chromium = test -x /usr/bin/chromium || { $(SUDO) apt-get update -q && \
	$(SUDO) apt-get install -y -q chromium; }

# GATEWAYS=N: N gateway processes behind nginx on :8000 (relay dev --gateways N).
# REGIONS=us-east-1,us-west-2: two regions behind the front door (nginx) on :8000.
GATEWAYS ?= 1
REGIONS  ?= us-east-1
dev: $(STAMP)
	@$(if $(or $(filter-out 1,$(GATEWAYS)),$(findstring $(comma),$(REGIONS))),$(call install-nginx))
	$(BIN)/relay dev --gateways $(GATEWAYS) --regions $(REGIONS)

# Every tier, each in its own pytest run, fastest first: the unit tier's own check (it
# imports neither moto nor the SAM translator) holds only in a run of that tier alone. The
# functional, template and module tiers run on every core (pytest-xdist): their tests share
# nothing (each its own in-process moto, files under tmp_path). The integration tier runs
# whole stacks of processes, and its game days measure latency: one test at a time.
test: test-unit test-functional test-template test-modules test-contracts test-integration

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit

test-functional: $(STAMP)
	$(BIN)/pytest -n auto tests/functional

test-template: $(STAMP)
	$(BIN)/pytest -n auto tests/template

test-modules: $(STAMP)
	$(BIN)/pytest -n auto tests/modules

# Consumer-driven contracts (contracts/pacts): the consumers' tests write their pacts, each
# module is verified alone against every pact naming it (tests/contracts); the
# breaking-change check's tests run Optic.
test-contracts: $(STAMP) $(OPTIC_STAMP)
	$(BIN)/pytest -n auto tests/contracts

test-integration: $(STAMP)
	@$(call install-nginx)
	@$(call install-chromium)
	$(BIN)/pytest tests/integration --ignore=tests/integration/test_contract_fuzz.py

# Schemathesis over every operation of the published API through the real stack, with
# FUZZ_EXAMPLES generated cases per operation (about 45 s at 50; CI runs it after
# `make test`; docs/security.md).
FUZZ_EXAMPLES ?= 50
test-fuzz: $(STAMP)
	RELAY_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/integration/test_contract_fuzz.py

# Every game day (gamedays/*.json, Chaos Toolkit experiments) on stacks of its own, each
# fault held 20 s under a synthetic load; the failure-mode matrix rewritten into
# docs/gamedays.md and docs/gamedays.svg. Loopback only, a few minutes; fails when an
# invariant breaks. GAMEDAY_ARGS: e.g. "loads-killed --short" (no report).
GAMEDAY_ARGS ?= all --report docs/gamedays.md
gameday: $(STAMP)
	$(BIN)/relay gameday $(GAMEDAY_ARGS)

# The benchmark (docs/benchmarks.md): a few minutes, loopback only; not part of `make test`.
# nginx, wrk and valgrind (the before/after instruction counts) come from Debian's
# packages, installed here if missing.
# BENCH_ARGS: --quick (a smoke check), --rounds N, --seconds S, --baseline REF (this tree
# against git REF in the same run: make bench BENCH_ARGS="--baseline d29e99e"), --phases
# (e.g. --phases release: what a canary release in progress costs the hop, and a bad
# canary's time to 0% traffic; --phases overload: one gateway process offered ~3x its
# capacity, load shedding on and off).
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	rm -f $(VENV)/.bench-*
	touch $@

bench: $(BENCH_STAMP)
	@command -v nginx >/dev/null && command -v wrk >/dev/null && command -v valgrind >/dev/null || \
		{ $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -q && \
		  $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -q nginx-light wrk valgrind; }
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# The quality gate: CI runs it before the tests, pre-commit runs it on every commit.
check: $(STAMP) $(OPTIC_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/cfn-lint template.yaml platform/template.yaml frontdoor/template.yaml modules/*/template.yaml
	$(BIN)/python -m relay.openapi --check
	$(BIN)/python -m relay.contracts --check
	$(MAKE) --no-print-directory checkov

# Optic (npm, the versions of tools/optic/package-lock.json) in .tools/optic: the checker of
# `relay.contracts --check`, the modules' published contracts against their released
# baselines (contracts/baseline, docs/contracts.md). Install scripts are not run: one of
# them reports the install to its vendor. Node and npm from Debian's packages if missing.
install-node = { command -v node && command -v npm; } >/dev/null || { $(SUDO) apt-get update -q && \
	$(SUDO) apt-get install -y -q nodejs npm; }
$(OPTIC_STAMP): tools/optic/package.json tools/optic/package-lock.json
	@$(call install-node)
	mkdir -p .tools/optic && echo '*' > .tools/.gitignore  # not ours: git, ruff and mypy skip it
	cp tools/optic/package.json tools/optic/package-lock.json .tools/optic/
	cd .tools/optic && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	rm -f .tools/optic/.installed-*
	touch $@
optic: $(OPTIC_STAMP)

# The modules' contracts as the tree builds them become the released baselines; refused
# while one breaks its released contract without declaring a new major.
contracts-release: $(STAMP) $(OPTIC_STAMP)
	$(BIN)/python -m relay.contracts --release $(MODULES)

# checkov over every template, in its own venv (its dependencies conflict with ours); each
# remaining finding is suppressed in the resource's Metadata with its reason (docs/deploy.md).
CHECKOV := .tools/checkov/bin/checkov
$(CHECKOV):
	mkdir -p .tools && echo '*' > .tools/.gitignore  # not ours: git, ruff and mypy skip it
	$(PYTHON) -m venv .tools/checkov
	.tools/checkov/bin/python -m pip install -q checkov
checkov: $(CHECKOV)
	$(CHECKOV) --quiet --compact --skip-download --framework cloudformation \
		$(addprefix -f ,template.yaml platform/template.yaml frontdoor/template.yaml $(wildcard modules/*/template.yaml))

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

lint: check

openapi: $(STAMP)
	$(BIN)/python -m relay.openapi

clean:
	rm -rf $(VENV) .relay .pytest_cache

# --- Lambda artifacts: `make build`, and `sam build` (BuildMethod: makefile) ------------------
# One artifact per function (tools/lambda_artifact.py): the project packages it imports
# plus the wheels of its requirement set, requirements/lambda-<set>.lock (the versions of
# requirements/lambda.lock, with hashes), for the architecture and runtime its template
# declares: arm64 functions get aarch64 wheels on any build host. Byte-identical across
# builds of one commit. The build's own tools (pip, uv, PyYAML: requirements/tools.lock)
# live in .relay/tools/build, made with Python 3.11, the functions' runtime. `sam build`
# runs the build-<LogicalId> targets in the source tree (samconfig.toml: build_in_source).
# LAMBDA_PIP=true skips the wheels: tests/template builds the artifacts offline that way,
# with BUILD_PYTHON=<the test venv's python> and BUILD_TOOLS= (no tools venv).
LAMBDA_PYTHON ?= $(shell command -v python3.11 || echo python3)
TOOLS         := .relay/tools/build
BUILD_TOOLS   ?= $(TOOLS)/.installed-$(shell cksum requirements/tools.lock | cut -d' ' -f1)
BUILD_PYTHON  ?= $(TOOLS)/bin/python
LAMBDA_PIP    ?= $(BUILD_PYTHON) -m pip
BUILD_DIR     ?= .relay/build
# CodeDeploy's pre/post-traffic hooks (module_kit/deploy_hooks.py): each is built like the
# function it smokes, whose smoke list (modules/<name>/smoke.py, gateway/smoke.py) it reads.
# A module has a pre-traffic hook only (its canary is judged by the release controller).
DEPLOY_HOOKS := $(foreach f,Gateway Loads Gatepass Navigate Message,$(f)PreTrafficHook) \
	GatewayPostTrafficHook
LAMBDA_FUNCTIONS := GatewayFunction DeferredReplayFunction FallbackProjectorFunction \
	LoadsFunction GatepassFunction NavigateFunction MessageFunction NotificationsFunction \
	$(DEPLOY_HOOKS)

$(TOOLS)/.installed-%: requirements/tools.lock
	test -x $(TOOLS)/bin/python || $(LAMBDA_PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install -q --require-hashes -r requirements/tools.lock
	rm -f $(TOOLS)/.installed-*
	touch $@

# $(1): the requirement set (requirements/lambda-$(1).lock); $(2): the project paths the
# function imports (shared_contracts and module_kit always).
lambda_artifact = $(BUILD_PYTHON) tools/lambda_artifact.py $(@:build-%=%) \
	shared_contracts module_kit $(2) --requirements requirements/lambda-$(1).lock \
	--out "$(ARTIFACTS_DIR)" --pip "$(LAMBDA_PIP)"

build-GatewayFunction: $(BUILD_TOOLS)
	$(call lambda_artifact,gateway,gateway)
build-DeferredReplayFunction: $(BUILD_TOOLS)
	$(call lambda_artifact,gateway,gateway)
build-FallbackProjectorFunction: $(BUILD_TOOLS)
	$(call lambda_artifact,gateway,gateway)
build-LoadsFunction: $(BUILD_TOOLS)
	$(call lambda_artifact,module,modules/__init__.py modules/loads)
build-GatepassFunction: $(BUILD_TOOLS)
	$(call lambda_artifact,module,modules/__init__.py modules/gatepass)
build-NavigateFunction: $(BUILD_TOOLS)
	$(call lambda_artifact,module,modules/__init__.py modules/navigate)
build-MessageFunction: $(BUILD_TOOLS)
	$(call lambda_artifact,module,modules/__init__.py modules/message)
build-NotificationsFunction: $(BUILD_TOOLS)
	$(call lambda_artifact,notifications,modules/__init__.py modules/notifications)
build-GatewayPreTrafficHook: $(BUILD_TOOLS)
	$(call lambda_artifact,gateway,gateway)
build-GatewayPostTrafficHook: $(BUILD_TOOLS)
	$(call lambda_artifact,gateway,gateway)
build-LoadsPreTrafficHook: $(BUILD_TOOLS)
	$(call lambda_artifact,module,modules/__init__.py modules/loads)
build-GatepassPreTrafficHook: $(BUILD_TOOLS)
	$(call lambda_artifact,module,modules/__init__.py modules/gatepass)
build-NavigatePreTrafficHook: $(BUILD_TOOLS)
	$(call lambda_artifact,module,modules/__init__.py modules/navigate)
build-MessagePreTrafficHook: $(BUILD_TOOLS)
	$(call lambda_artifact,module,modules/__init__.py modules/message)

# Every function's artifact into $(BUILD_DIR)/<LogicalId> (network to PyPI, or pip's cache).
build: $(BUILD_TOOLS)
	@for f in $(LAMBDA_FUNCTIONS); do \
		$(MAKE) --no-print-directory build-$$f ARTIFACTS_DIR=$(BUILD_DIR)/$$f || exit 1; done

# The locks, from pyproject.toml's ranges (uv, universal: one lock for every platform, so
# x86_64 test hosts and arm64 Lambda read the same pins). The dev lock is resolved first,
# the runtime lock within it: the artifacts ship exactly the versions the tests run.
# Existing pins are kept; `make lock LOCK_ARGS=--upgrade` (or
# `LOCK_ARGS='--upgrade-package pydantic'`) moves them.
UV         := $(TOOLS)/bin/uv
LOCK_FLAGS := --quiet --universal --python-version 3.11 --generate-hashes $(LOCK_ARGS)
lock: $(BUILD_TOOLS)
	$(UV) pip compile $(LOCK_FLAGS) requirements/tools.in -o requirements/tools.lock
	$(UV) pip compile $(LOCK_FLAGS) pyproject.toml --extra dev -o requirements/dev.lock
	$(UV) pip compile $(LOCK_FLAGS) pyproject.toml -c requirements/dev.lock \
		-o requirements/lambda.lock
	for set in gateway module notifications; do \
		$(UV) pip compile $(LOCK_FLAGS) requirements/lambda-$$set.in \
			-c requirements/lambda.lock -o requirements/lambda-$$set.lock || exit 1; done

# Real builds, network to PyPI (CI runs it after `make test`): `sam build` of template.yaml
# and of each module's template, `make build`, each artifact checked for its architecture,
# its handler's imports and byte-identity across the builds (tests/template/test_build.py).
# The SAM CLI lives in its own venv: its dependencies conflict with ours.
SAM_VERSION := 1.170.0
SAM := .relay/tools/sam/bin/sam
$(SAM):
	test -x .relay/tools/sam/bin/python || $(LAMBDA_PYTHON) -m venv .relay/tools/sam
	.relay/tools/sam/bin/python -m pip install -q aws-sam-cli==$(SAM_VERSION)

test-build: $(STAMP) $(BUILD_TOOLS) $(SAM)
	RELAY_TEST_BUILD=1 RELAY_SAM=$(SAM) $(BIN)/pytest tests/template/test_build.py tests/template/test_deploy_doc.py
