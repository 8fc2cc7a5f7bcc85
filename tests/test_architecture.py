"""The architecture holds (docs/architecture.md): the import contracts of pyproject.toml,
no import inside a function outside the documented few, no import circle (imports
inside functions counted), no module over 600 lines, ``connection.vendor`` read in one
place, raw SQL executed only in ``store/`` and the wake-up channels named only in
``store/wakeup.py``."""

from __future__ import annotations

import ast
import contextlib
import logging
import re
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


#: Imports inside functions that the import graph leaves out, and why: the package's
#: lazy public API (the root imports nothing that needs the app registry) and
#: ``AppConfig.ready`` (it runs once every module is importable).
GRAPH_EXCEPTIONS = {"conductor_django": "the lazy API", "conductor_django.apps": "ready()"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module, module: str, is_package: bool, modules: set[str],
             skip_functions: bool) -> set[str]:
    """The package's modules that ``module`` imports, at any depth of its code (inside
    functions too unless ``skip_functions``), leaving out ``if TYPE_CHECKING:`` blocks."""
    found: set[str] = set()
    base = module.split(".") if is_package else module.split(".")[:-1]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if skip_functions and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            origin = ".".join(base[:len(base) - node.level + 1] if node.level else [])
            target = ".".join(p for p in (origin, node.module or "") if p)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in modules and m != module}


def import_graph() -> dict[str, set[str]]:
    """Who imports whom inside the package, imports inside functions counted (but for
    ``GRAPH_EXCEPTIONS``), as grimp (import-linter's graph) resolves them."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    return {name: _imports(ast.parse(path.read_text()), name, path.name == "__init__.py",
                           modules, skip_functions=name in GRAPH_EXCEPTIONS)
            for name, path in paths.items()}


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return circles


def test_the_import_graph_finds_a_circle():
    """The search below would see a circle (so its silence means something)."""
    graph = import_graph()
    assert "conductor_django.store.vendor" in graph["conductor_django.store.wakeup"]
    graph["conductor_django.store.vendor"].add("conductor_django.store.wakeup")
    circles = import_circles(graph)
    assert any({"conductor_django.store.vendor", "conductor_django.store.wakeup"} <= set(c)
               for c in circles), circles


def test_no_import_circle_counting_imports_inside_functions():
    circles = import_circles(import_graph())
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


EXECUTE = re.compile(r"\.execute(many)?\(")
#: The wake-up protocol's channels (``store/wakeup.py``; the migrations' triggers keep
#: frozen copies).
CHANNEL = re.compile(r"\bconductor_(new|cancel|done)\b")


def _outside_migrations() -> list[Path]:
    return [p for p in _sources() if not _name(p).startswith("migrations/")]


def test_sql_is_executed_only_in_the_store():
    """Raw SQL (a cursor's or a connection's ``execute``) lives in ``store/`` (and the
    migrations); everything else goes through the ORM or a ``store`` function."""
    wrong = [f"{_name(p)}:{n}" for p in _outside_migrations()
             if not _name(p).startswith("store/")
             for n, line in enumerate(p.read_text().splitlines(), 1) if EXECUTE.search(line)]
    assert not wrong, "raw SQL outside store/:\n" + "\n".join(wrong)


def test_channel_names_live_in_the_wake_up_module():
    wrong = [f"{_name(p)}:{n}" for p in _outside_migrations()
             if _name(p) != "store/wakeup.py"
             for n, line in enumerate(p.read_text().splitlines(), 1) if CHANNEL.search(line)]
    assert not wrong, "a wake-up channel named outside store/wakeup.py:\n" + "\n".join(wrong)
