# Workspace: the two entry points a fresh Debian machine needs are `make run` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
DATA_DIR ?= $(CURDIR)/data
PORT ?= 8080

.PHONY: setup run demo test check lint typecheck spec unit e2e bench clean

setup:
	./scripts/setup.sh

run:
	./scripts/run.sh

test: check
	$(PY) -m pytest -q

check: lint typecheck spec
	$(PY) sdk-python/scripts/unasync.py --check

lint:
	$(VENV)/bin/ruff check server sdk-python tests benchmarks
	$(VENV)/bin/ruff format --check server sdk-python tests benchmarks

typecheck:
	$(VENV)/bin/mypy --strict server/src/workspace_server sdk-python/src/workspace_sdk sdk-python/src/workspace_cli

spec:
	$(VENV)/bin/workspace openapi --output spec/openapi.json.new
	@diff -q spec/openapi.json spec/openapi.json.new >/dev/null || \
	  (echo "spec/openapi.json is out of date: run 'make spec-update'"; rm -f spec/openapi.json.new; exit 1)
	@rm -f spec/openapi.json.new

spec-update:
	$(VENV)/bin/workspace openapi --output spec/openapi.json

bench:
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) $(DATA_DIR)
