# The two commands a newcomer needs: `make demo` and `make test`.
# Everything runs inside a project-local .venv that is (re)built only when the
# dependency files change.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA_DIR ?= data
PYTEST_ARGS ?=

export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv demo test test-fast bench airflow airflow-celery airflow-celery-stop clean help

help:
	@echo "make demo      - set up .venv and run the whole pipeline offline on a synthetic FAERS mirror"
	@echo "make test      - set up .venv and run the whole test suite (slow tests included)"
	@echo "make test-fast - the test suite without tests marked slow"
	@echo "make bench     - benchmarks (time and peak memory) under bench/"
	@echo "make airflow   - Airflow standalone on SQLite with the project's DAGs (offline-capable)"
	@echo "make airflow-celery      - the production topology: CeleryExecutor, local PostgreSQL + Redis, 2 workers"
	@echo "make airflow-celery-stop - stop exactly the processes make airflow-celery started"

venv: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m pipeline demo --data-dir $(DATA_DIR)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m pip install -q -r bench/requirements.txt -c constraints.txt
	$(PY) -m bench $(BENCH_ARGS)

airflow: $(STAMP)
	scripts/airflow-standalone.sh

airflow-celery: $(STAMP)
	scripts/airflow-celery.sh start

airflow-celery-stop:
	scripts/airflow-celery.sh stop

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .airflow-test
