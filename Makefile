# The two set-up commands in the README are `make run` and `make test`.
# Both build .venv on first use from pyproject.toml + constraints.txt.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install etcd triton run test

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed

etcd:
	./scripts/ensure-etcd

# Real NVIDIA Triton for the tests, extracted into build/triton/ (never into the venv)
triton: install
	./scripts/ensure-triton $(PY)

run: install
	$(VENV)/bin/inferplex up

test: install etcd triton
	$(PY) -m ruff check .
	$(PY) -m pytest -q
