# Two commands on a fresh machine: `make run` starts the gateway, `make test` runs every test.
# `make check` (or `make check CONFIG=path`) checks a config as start-up does and shows what it sends.
# `make soak` (MINUTES=30 by default, or SECONDS=180) runs two instances behind nginx and Redis under load.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# `make test` runs the suite in this many pytest-xdist processes; TEST_WORKERS=0: in one, without
# xdist, for debugging. On 2 cores, 3 are as fast as 4 on 20-40 s less CPU, since gateways stop at
# once (2: 130 s); see docs/testing.md.
TEST_WORKERS ?= 3

.PHONY: run check test test-durations bench soak clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit("llm-gateway needs Python 3.11 or newer (tomllib)") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.test: requirements.txt requirements-test.txt bench/requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-test.txt
	touch $@ $(VENV)/.runtime $(VENV)/.bench

$(VENV)/.bench: requirements.txt bench/requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt -r bench/requirements.txt
	touch $@ $(VENV)/.runtime

run: $(VENV)/.runtime
	$(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

check: $(VENV)/.runtime
	$(BIN)/python -m gateway check $(CONFIG)

# The suite starts some 250 Python processes (gateways, their workers, checks): each would compile
# every module of ours again where PYTHONDONTWRITEBYTECODE is set; compiled once here, they are read.
# pytest itself keeps its assertion-rewritten test modules only where bytecode may be written: with
# the variable set, each xdist process rewrote all 70 of them on every run (2.5 s of CPU each).
test: $(VENV)/.test
	$(BIN)/python -m compileall -q -x '/\.' app.py wsgi.py gunicorn.conf.py gateway bench tests > /dev/null
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadgroup) --durations=10 $(PYTEST_ARGS)

# The test times a fresh clone schedules by (tests/durations.json), from this checkout's last `make test`.
test-durations: $(VENV)/.test
	$(BIN)/python -m tests.xdist_groups

bench: $(VENV)/.bench
	$(BIN)/python bench/run.py$(if $(filter-out 0,$(CHECK)), --check)

soak: $(VENV)/.runtime
	$(BIN)/python bench/soak.py $(if $(SECONDS),--seconds $(SECONDS),--minutes $(or $(MINUTES),30))

clean:
	rm -rf $(VENV) .pytest_cache
