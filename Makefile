# make demo   - virtualenv, install, migrate the example project, start worker + admin
# make test   - install and run the whole suite (SQLite; PostgreSQL too when reachable)
# make chaos  - the chaos tests at full scale on SQLite and PostgreSQL, one line per scenario
# make screenshots - run the admin browser test and keep its screenshots in docs/img/
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test test-sqlite test-postgres lint bench clean screenshots chaos

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) example_project/demo.py

test: install
	PY=$(PY) bash scripts/test.sh

test-sqlite: install
	$(PY) -m pytest

test-postgres: install
	CONDUCTOR_TEST_DB=postgres $(PY) -m pytest

chaos: install
	PY=$(PY) bash scripts/chaos.sh

bench: install
	$(PY) bench/run.py --db postgres
	$(PY) bench/run.py --db sqlite

screenshots: install
	CONDUCTOR_REQUIRE_BROWSER=1 CONDUCTOR_SCREENSHOTS_DIR=docs/img $(PY) -m pytest -q tests/test_admin_browser.py

lint: install
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) build *.egg-info example_project/db.sqlite3*
