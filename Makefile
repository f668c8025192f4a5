# edged — `make demo` shows the whole pipeline; `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO   := build/demo

.PHONY: all demo demo-serve test test-fast bench bench-soak lint typecheck check clean install uninstall

all: $(STAMP)

$(STAMP): pyproject.toml tools/system-deps
	@tools/system-deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,systemd]'
	@touch $@

demo: $(STAMP)
	$(PY) -m edged demo --workdir $(DEMO)

# The same, the clip looping and the web page up (http://localhost:8426/) until Ctrl-C.
demo-serve: $(STAMP)
	$(PY) -m edged demo --workdir $(DEMO) --serve

test: $(STAMP)
	@tools/system-deps --test
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not broker"

bench: $(STAMP)
	$(PY) -m bench

bench-soak: $(STAMP)
	$(PY) -m bench soak --minutes 10

lint: $(STAMP)
	$(VENV)/bin/ruff check edged tests bench
	$(VENV)/bin/ruff format --check edged tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# What CI runs: ruff (lint and format), mypy (strict on edged/), then the tests.
check: lint typecheck test

clean:
	rm -rf $(VENV) build .pytest_cache

# `sudo make install` / `sudo make uninstall`: edged as a systemd service (README.md, Deployment).
# Both idempotent. Variables given on the command line reach the script: DESTDIR, PREFIX,
# BINDIR, UNITDIR, PACKAGE, EXTRAS, PIP_INSTALL_ARGS, SYSTEMCTL, SYSTEM_DEPS.
install uninstall:
	@deploy/install.sh $@
