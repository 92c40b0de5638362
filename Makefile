# Developer and CI entry points. Everything installs into .venv from constraints.txt.
VENV := .venv
PY := $(VENV)/bin/python
# Touched after a successful install: `setup` is a no-op until pyproject.toml or
# constraints.txt change (or the venv is deleted).
STAMP := $(VENV)/.installed

.PHONY: setup run test lint

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -c constraints.txt -e '.[test]'
	touch $(STAMP)

run: setup
	$(VENV)/bin/hierfl run examples/digits.toml

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
