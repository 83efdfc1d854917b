# mlflow-platform: provision, test and measure the MLflow platform bundle.
PYTHON      ?= /usr/bin/python3
TOOLS_VENV  := .venv/tools
DEV_VENV    := .venv/dev
BUILD_VENV  := .venv/build
INVENTORY   ?= ansible/inventories/local
ANSIBLE_ARGS ?=
export ANSIBLE_CONFIG := $(CURDIR)/ansible/ansible.cfg
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: help up down backup restore upgrade test test-infra chaos test-docker test-lab lint bench client clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(TOOLS_VENV)/.installed: requirements/tools.txt
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install -q --require-hashes -r requirements/tools.txt
	touch $@

$(DEV_VENV)/.installed: requirements/server.lock requirements/dev.txt pyproject.toml
	$(PYTHON) -m venv $(DEV_VENV)
	$(DEV_VENV)/bin/pip install -q --require-hashes -r requirements/server.lock -r requirements/dev.txt
	$(DEV_VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	touch $@

$(BUILD_VENV)/.installed: requirements/build.txt
	$(PYTHON) -m venv $(BUILD_VENV)
	$(BUILD_VENV)/bin/pip install -q --require-hashes -r requirements/build.txt
	touch $@

up: $(TOOLS_VENV)/.installed  ## provision the whole platform on this host
	$(TOOLS_VENV)/bin/ansible-playbook -i $(INVENTORY) ansible/site.yml $(ANSIBLE_ARGS)

down: $(TOOLS_VENV)/.installed  ## stop the platform's services, keeping all data
	$(TOOLS_VENV)/bin/ansible-playbook -i $(INVENTORY) ansible/down.yml $(ANSIBLE_ARGS)

backup: $(TOOLS_VENV)/.installed  ## back up PostgreSQL, the artifact bucket and the secrets now
	$(TOOLS_VENV)/bin/ansible-playbook -i $(INVENTORY) ansible/backup.yml $(ANSIBLE_ARGS)

restore: $(TOOLS_VENV)/.installed  ## rebuild the platform from its backups (ANSIBLE_ARGS='-e backup_restore_set=...')
	$(TOOLS_VENV)/bin/ansible-playbook -i $(INVENTORY) ansible/restore.yml $(ANSIBLE_ARGS)

upgrade: $(TOOLS_VENV)/.installed  ## back up, migrate once, restart the servers one at a time (docs/operations.md)
	$(TOOLS_VENV)/bin/ansible-playbook -i $(INVENTORY) ansible/upgrade.yml $(ANSIBLE_ARGS)

test: $(DEV_VENV)/.installed /usr/bin/promtool /usr/bin/npm /usr/bin/chromium  ## unit, contract and integration tests (real Postgres, SeaweedFS, mlflow server)
	$(DEV_VENV)/bin/python -m tests.support.oidc_provider
	$(DEV_VENV)/bin/pytest -q --durations=25

# Debian's promtool (package prometheus), for the alert rules' check and unit tests in tests/contract.
/usr/bin/promtool:
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus

# Node.js and npm, for the OpenID Provider of the single sign-on tests (tests/support/oidc: oidc-provider 9.x,
# installed by `npm ci` from its lock file into ~/.cache/mlflow-platform once, by the line in the test target).
/usr/bin/npm:
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm

# Debian's chromium, for the UI tests (tests/integration/test_ui_features.py, and the UI-under-CSP test of
# tests/infra; installed once; CI starts from a clean machine).
/usr/bin/chromium:
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium

test-infra: $(DEV_VENV)/.installed $(TOOLS_VENV)/.installed /usr/bin/chromium  ## converge site.yml on this host, then test it
	$(DEV_VENV)/bin/pytest -q --durations=15 tests/infra

chaos: $(DEV_VENV)/.installed  ## fault suite against the provisioned platform (after test-infra); table in results/
	MLFLOW_PLATFORM_CHAOS=1 $(DEV_VENV)/bin/pytest -q tests/chaos

# Builds docker/Dockerfile and brings docker/compose.yaml up on a Docker engine (Debian's docker.io, started here
# when none answers), images that cannot be pulled replaced by local stand-ins (tests/lab/README.md); prints the
# image's size and cold start, also written to results/docker.txt.
test-docker: $(DEV_VENV)/.installed  ## build the image and run the compose stack for real (needs root for the engine)
	$(DEV_VENV)/bin/pytest -q -s -p no:cacheprovider tests/docker

# Converges site.yml onto a lab of containers, one per host of ansible/inventories/lab/ (tests/lab/lab.py), on the
# same engine, and proves there what one host cannot: both replicas serving, a replica killed under load, the
# lockout's client address, shared secrets, PgBouncer's connection count under load. Figures in
# results/lab/figures.txt; the lab is removed whatever failed (SIGINT at the time limit lets pytest tear it down).
test-lab: $(DEV_VENV)/.installed $(TOOLS_VENV)/.installed  ## the platform on five container hosts (needs root for the engine)
	timeout -s INT -k 300 2700 $(DEV_VENV)/bin/pytest -q -s -p no:cacheprovider tests/lab

lint: $(DEV_VENV)/.installed  ## ansible-lint, yamllint, ruff, mypy, hadolint
	cd ansible && ../$(DEV_VENV)/bin/ansible-lint --profile production
	$(DEV_VENV)/bin/yamllint -s .
	$(DEV_VENV)/bin/ruff check .
	$(DEV_VENV)/bin/ruff format --check .
	$(DEV_VENV)/bin/mypy
	$(DEV_VENV)/bin/hadolint docker/Dockerfile

bench: $(DEV_VENV)/.installed  ## side-by-side benchmarks; results under results/
	$(DEV_VENV)/bin/python -m tests.bench

client: $(BUILD_VENV)/.installed  ## build the light client wheel (mlflow-platform-client, on mlflow-skinny) into dist/
	$(BUILD_VENV)/bin/python client/build.py --out dist

clean:  ## remove the venvs and results (never touches provisioned data)
	rm -rf .venv results build dist
