# Consciousness Control Center — the two commands are `make run` and `make test`.
SHELL := /bin/bash
UV := $(shell ./scripts/bootstrap-uv.sh)
VENV := .venv
PY := $(VENV)/bin/python
export UV_PYTHON_DOWNLOADS := never
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: setup run test test-unit test-integration lint format typecheck bench services-up ci clean

$(VENV)/.synced: pyproject.toml uv.lock $(wildcard libs/*/pyproject.toml services/*/pyproject.toml)
	$(UV) sync --all-packages --frozen
	@touch $@

setup: $(VENV)/.synced ## create the environment (uv workspace, locked)

run: setup ## start NATS (if none answers), every service and the gateway on :8080
	$(VENV)/bin/ccc up

test: setup ## unit and integration tests on a real bus (starts its own nats-server)
	@./scripts/ensure-databases.sh
	$(VENV)/bin/pytest -m "not slow" -q

lint: setup ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy -p ccc.common -p ccc.cli $(foreach s,$(notdir $(wildcard services/*)),-p ccc.$(s))

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup ## benchmarks; print numbers, assert none
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

ci: lint test ## what .ci/run does

clean:
	rm -rf $(VENV) .tools .mypy_cache .ruff_cache .pytest_cache

-include deploy/deploy.mk
