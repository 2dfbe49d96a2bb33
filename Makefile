# The two set-up commands in the README are `make run` and `make test`.
# Both build .venv on first use from pyproject.toml + constraints.txt.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install etcd triton chromium run test

# the admin console's JavaScript libraries (console/package-lock.json), served by the control plane
CONSOLE_LIBS := console/node_modules/.package-lock.json

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $@

$(CONSOLE_LIBS): console/package.json console/package-lock.json
	./scripts/ensure-console-libs

install: $(VENV)/.installed $(CONSOLE_LIBS)

etcd:
	./scripts/ensure-etcd

# Real NVIDIA Triton for the tests, extracted into build/triton/ (never into the venv)
triton: install
	./scripts/ensure-triton $(PY)

# Debian's chromium, for the console's browser tests (Playwright drives it; no browser download)
chromium:
	./scripts/ensure-chromium

run: install
	$(VENV)/bin/inferplex up

test: install etcd triton chromium
	$(PY) -m ruff check .
	$(PY) -m pytest -q
