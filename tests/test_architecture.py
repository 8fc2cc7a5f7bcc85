"""The architecture holds (docs/architecture.md): the import contracts of pyproject.toml,
no import inside a function outside the documented few, no module over 600 lines, and
``connection.vendor`` read in one place."""

from __future__ import annotations

import ast
import contextlib
import logging
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "conductor_django"
MAX_LINES = 600

#: Where an import inside a function is allowed, and why (docs/architecture.md).
LAZY_IMPORTS_ALLOWED = {
    # the package's lazy public API: the root imports nothing that needs the app registry
    "__init__.py": None,
    # the app registry is ready only in ready()
    "apps.py": None,
    # Task.invoke goes through the package's lazy API
    "definitions/tasks.py": {"conductor_django"},
    # optional third-party code, imported where it is used
    "engines/django_q.py": {"django_q"},
    "store/prepared.py": {"psycopg"},
    "store/vendor.py": {"psycopg"},
    "definitions/cron.py": {"django.conf"},
}


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)


def _name(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


@contextlib.contextmanager
def _logging_kept():
    """Put the logging tree back as it was: import-linter configures logging when it
    runs, which turned every existing logger off (``disabled``) for the rest of the
    session, and later tests that read conductor's log lines saw none."""
    manager = logging.root.manager
    loggers = {name: lg.disabled for name, lg in manager.loggerDict.items()
               if isinstance(lg, logging.Logger)}
    handlers, level = list(logging.root.handlers), logging.root.level
    try:
        yield
    finally:
        for name, disabled in loggers.items():
            manager.loggerDict[name].disabled = disabled  # type: ignore[union-attr]
        logging.root.handlers[:] = handlers
        logging.root.setLevel(level)


def test_import_contracts_hold():
    pytest.importorskip("importlinter")
    from importlinter.cli import lint_imports

    with _logging_kept():
        broken = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True)
    assert broken == 0, "an import contract of pyproject.toml is broken: run lint-imports"
    assert not logging.getLogger("conductor_django.worker").disabled


def _function_imports(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    found += [(inner.lineno, alias.name) for alias in inner.names]
                elif isinstance(inner, ast.ImportFrom):
                    module = "." * inner.level + (inner.module or "")
                    found.append((inner.lineno, module))
    return found


def test_no_import_inside_a_function_outside_the_documented_few():
    wrong = []
    for path in _sources():
        name = _name(path)
        if name in LAZY_IMPORTS_ALLOWED and LAZY_IMPORTS_ALLOWED[name] is None:
            continue
        allowed = LAZY_IMPORTS_ALLOWED.get(name) or set()
        for line, module in _function_imports(ast.parse(path.read_text())):
            if not any(module == a or module.startswith(a + ".") for a in allowed):
                wrong.append(f"{name}:{line} imports {module} inside a function")
    assert not wrong, "\n".join(wrong)


def test_no_module_over_600_lines():
    long = [f"{_name(p)}: {n} lines" for p in _sources()
            if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not long, "\n".join(long)


def test_connection_vendor_is_read_only_by_the_dialects():
    readers = [_name(p) for p in _sources() if ".vendor ==" in p.read_text()
               or ".vendor !=" in p.read_text() or "connection.vendor" in p.read_text()]
    assert readers == ["store/vendor.py"]
