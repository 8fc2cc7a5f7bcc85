# make demo   - virtualenv, install, migrate the example project, start worker + admin
# make test   - install and run the whole suite (SQLite; PostgreSQL too when reachable)
# make dist   - build the sdist and the wheel into dist/ and check them
# make bench-reference - the drain/bulk ratios to the reference peer, with their history
# make chaos  - the chaos tests at full scale on SQLite and PostgreSQL, one line per scenario
# make screenshots - run the admin browser test and keep its screenshots in docs/img/
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The Django 6.1 cells of the test matrix run on Python 3.13 (found on PATH or in pyenv).
PYTHON313 ?= $(shell v=$$(pyenv versions --bare 2>/dev/null | grep -E '^3\.13(\.[0-9]+)?$$' | sort -V | tail -n1); \
  if [ -n "$$v" ]; then echo "$$(pyenv prefix $$v)/bin/python"; \
  elif python3.13 -c pass 2>/dev/null; then command -v python3.13; fi)
VENV61 ?= .venv-dj61

.PHONY: install install-matrix dist demo test test-sqlite test-postgres lint bench bench-reference clean screenshots chaos

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Django 6.1 on Python 3.13: made when that Python exists (else its cells are skipped).
$(VENV61)/.installed: pyproject.toml
	@if [ -n "$(PYTHON313)" ] && [ -x "$(PYTHON313)" ]; then \
	  test -x $(VENV61)/bin/python || $(PYTHON313) -m venv $(VENV61); \
	  $(VENV61)/bin/python -m pip install -q --disable-pip-version-check -e '.[test,mysql]' \
	    'django>=6.1,<6.2' && touch $@; \
	else echo "Python 3.13 not found: the Django 6.1 cells will be skipped"; fi

install-matrix: install $(VENV61)/.installed

# Building needs only build (and twine to check the result), in a small virtualenv of
# its own: not the test suite and linters of .venv.
VENVBUILD ?= .venv-build
$(VENVBUILD)/.installed:
	test -x $(VENVBUILD)/bin/python || $(PYTHON) -m venv $(VENVBUILD)
	$(VENVBUILD)/bin/python -m pip install -q --disable-pip-version-check 'build>=1.2' 'twine>=5'
	touch $@

dist: $(VENVBUILD)/.installed
	rm -rf dist build
	$(VENVBUILD)/bin/python -m build --sdist --wheel --outdir dist .
	$(VENVBUILD)/bin/python -m twine check --strict dist/*
	$(VENVBUILD)/bin/python scripts/check_dist.py dist

demo: install
	$(PY) example_project/demo.py

test: install-matrix
	PY=$(PY) PY61=$(VENV61)/bin/python bash scripts/test.sh $(ARGS)

test-sqlite: install
	$(PY) -m pytest

test-postgres: install
	CONDUCTOR_TEST_DB=postgres $(PY) -m pytest

chaos: install
	PY=$(PY) bash scripts/chaos.sh

bench: install-matrix
	$(PY) bench/run.py --db postgres
	$(PY) bench/run.py --db sqlite
	$(VENV61)/bin/python bench/run.py --db mysql  # mysqlclient is in .venv-dj61
	$(PY) bench/reference.py

# Side by side with the reference (Postgres Conductor) in ../shared/bench: ratios saved
# in bench/results/reference-*.json, a drop of more than 10 % printed in red.
# Needs PGCONDUCTOR_GIT_DIR (a git dir of its repository) once; skipped without it.
bench-reference: install
	$(PY) bench/reference.py $(ARGS)

screenshots: install
	CONDUCTOR_REQUIRE_BROWSER=1 CONDUCTOR_SCREENSHOTS_DIR=docs/img $(PY) -m pytest -q tests/test_admin_browser.py tests/test_admin_browser_pages.py tests/test_admin_browser_bulk.py tests/test_admin_browser_controls.py

lint: install
	$(PY) -m ruff check .
	$(PY) -m mypy conductor_django
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf $(VENV) $(VENV61) $(VENVBUILD) build dist *.egg-info example_project/db.sqlite3*
