# Two entry points for a fresh machine (see README):
#   make demo   installs, starts the three services in dev mode and runs the example pipeline
#   make test   installs the test tools and runs every check CI runs
VENV ?= .venv
PY := $(VENV)/bin/python
BUF := node_modules/.bin/buf

.PHONY: demo test install lint buf-lint buf-breaking gen docs check-gen pytest

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

$(BUF): package.json package-lock.json
	npm ci --silent --no-audit --no-fund
	touch $@

demo: install
	$(VENV)/bin/datadog dev --run examples/csv_to_parquet.yaml

gen: install
	PYTHON=$(PY) scripts/gen-protos
	$(PY) scripts/api_reference.py

docs: install
	PYTHON=$(PY) scripts/gen-docs
	$(PY) scripts/api_reference.py
	$(PY) scripts/error_reasons.py

check-gen: install
	PYTHON=$(PY) scripts/check-gen

lint: install
	$(VENV)/bin/ruff check
	$(VENV)/bin/ruff format --check

buf-lint: $(BUF)
	$(BUF) lint

# Breaking-change check of the contracts against the previous commit, when there is one.
buf-breaking: $(BUF)
	@if git rev-parse -q --verify HEAD~1 >/dev/null; then \
	  $(BUF) breaking protos --against '.git#ref=HEAD~1,subdir=protos' && echo 'buf breaking: no breaking change since HEAD~1'; \
	else echo "buf breaking: no previous commit to compare with"; fi

pytest: install $(BUF)
	$(VENV)/bin/pytest -q

test: lint buf-lint buf-breaking check-gen pytest
