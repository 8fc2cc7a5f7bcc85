# make demo   - virtualenv, install, migrate the example project, start worker + admin
# make test   - install and run the whole suite (SQLite; PostgreSQL too when reachable)
# make dist   - build the sdist and the wheel into dist/ and check them
# make screenshots - run the admin browser test and keep its screenshots in docs/img/
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install dist demo test test-sqlite test-postgres lint bench clean screenshots

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(VENV)/.installed

dist: install
	rm -rf dist build
	$(PY) -m build --sdist --wheel --outdir dist .
	$(PY) -m twine check --strict dist/*
	$(PY) scripts/check_dist.py dist

demo: install
	$(PY) example_project/demo.py

test: install
	PY=$(PY) bash scripts/test.sh

test-sqlite: install
	$(PY) -m pytest

test-postgres: install
	CONDUCTOR_TEST_DB=postgres $(PY) -m pytest

bench: install
	$(PY) bench/run.py --db postgres
	$(PY) bench/run.py --db sqlite

screenshots: install
	CONDUCTOR_REQUIRE_BROWSER=1 CONDUCTOR_SCREENSHOTS_DIR=docs/img $(PY) -m pytest -q tests/test_admin_browser.py

lint: install
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) build dist *.egg-info example_project/db.sqlite3*
