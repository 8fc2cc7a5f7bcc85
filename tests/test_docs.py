"""Every code block of README.md and docs/*.md runs here, in the order it is written.

Blocks are found and run by Sybil. Python blocks (```python) are executed in one
namespace per document, as a reader would paste them one after the other; blocks that
show shell commands or output are tagged ``sh``/``console``/``text`` (or ``mermaid``)
and only checked for being tagged. A document marked "worker" below gets a real
``Worker`` (the class ``conductor_worker`` runs) on background threads, so its
``conductor.wait(...)`` calls are answered; the other documents run their executions
with ``conductor_django.testing.drain()`` as their snippets show.

Tasks defined by a snippet are registered for that document only: the registry is put
back as it was afterwards, so two documents may both define, say, ``"report"``.
"""

from __future__ import annotations

import asyncio
import re
import threading
import tomllib
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections
from django.middleware.csrf import CsrfViewMiddleware
from django.test import RequestFactory
from sybil import Document, Sybil
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser
from sybil.parsers.markdown.lexers import FencedCodeBlockLexer

from conductor_django.definitions import registry
from conductor_django.runtime.worker import Worker

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Fence languages that are shown, never run.
NOT_PYTHON = {"sh", "console", "text", "mermaid", "toml", "ini"}
#: Documents whose snippets wait for results, so a worker must be running.
NEEDS_WORKER = {"README.md", "async.md", "durable-execution.md", "scheduling.md", "concepts.md",
                "flow-control.md", "operations.md"}

SYBIL = Sybil(parsers=[PythonCodeBlockParser(), SkipParser()])


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.fixture
def background_worker(transactional_db, restore_registry):
    """Torn down before restore_registry: the worker never sees a task vanish."""
    worker = Worker(concurrency=4, poll_interval=0.05, handle_signals=False)
    crashed: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:  # reported by the test, not lost in the thread
            crashed.append(exc)
            raise
        finally:
            connection.close()

    thread = threading.Thread(target=run, name="docs-worker", daemon=True)
    yield thread.start
    # the connection of the thread that async snippets' ORM calls ran on (docs/async.md)
    asyncio.run(sync_to_async(connections.close_all)())
    if thread.is_alive():
        worker.stop()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the docs worker did not stop within 30 s"
    assert not crashed, f"the docs worker crashed: {crashed[0]!r}"


@pytest.fixture
def restore_registry():
    """The document sees the test project's tasks only, and the registry is put back.

    Tasks other tests imported from elsewhere (the example project's ``shop.tasks``)
    are set aside while the document runs, so that its own ``send-welcome-email`` is
    the only one, as in a reader's project.
    """
    before = registry.all_tasks()
    aside = [t for t in before.values() if not t.func.__module__.startswith("tests.")]
    for t in aside:
        registry.unregister(t.name)
    yield
    for name, t in registry.all_tasks().items():
        if before.get(name) is not t:
            registry.unregister(name)
    for t in aside:
        registry.register(t)


@pytest.mark.parametrize("path", DOCUMENTS, ids=_name)
def test_every_code_block_is_tagged(path: Path) -> None:
    """An untagged or unknown fence would be silently skipped: refuse it (and internal talk)."""
    text = path.read_text()
    lexer = FencedCodeBlockLexer(language=r".*")
    blocks = list(lexer(Document(text, str(path))))
    assert blocks or "```" not in text
    for internal in ("§", "SPEC", "../shared", "_check_issue", "this session"):
        assert internal not in text, f"{_name(path)} speaks of {internal!r}, not for users"
    # The suite has imported conductor_django.testing, a reader's shell has not.
    assert "conductor.testing." not in text, (
        f"{_name(path)}: write 'from conductor_django.testing import drain'")
    for region in blocks:
        language = region.lexemes["language"]
        line = text.count("\n", 0, region.start) + 1
        assert language == "python" or language in NOT_PYTHON, (
            f"{_name(path)}:{line}: code block tagged {language!r}; tag Python "
            f"'python' (it is run) and anything else one of {sorted(NOT_PYTHON)}"
        )


@pytest.mark.parametrize("path", DOCUMENTS, ids=_name)
def test_python_snippets_run(path: Path, transactional_db, background_worker) -> None:
    if path.name in NEEDS_WORKER:
        background_worker()
    ran = run_document(path)
    if "```python" in path.read_text():
        assert ran, f"{_name(path)} has Python blocks but none ran"


def run_document(path: Path) -> int:
    """Run the Python examples of ``path`` in order; return how many ran."""
    document = SYBIL.parse(path)
    document.namespace.update(__name__=f"docs.{path.stem.replace('-', '_')}",
                              __file__=str(path))
    ran = 0
    for example in document:
        try:
            example.evaluate()
        except Exception as exc:
            raise AssertionError(
                f"{path.name}, line {example.line}: {type(exc).__name__}: {exc}"
            ) from exc
        ran += 1
    return ran


@pytest.mark.parametrize(("snippet", "expected"), [
    ("```python\nimport conductor_django as conductor\nconductor.no_such_call()\n```\n",
     "AttributeError"),
    ("```python\n>>> 1 + 1\n3\n```\n", "Expected:"),
    ("<!-- invisible-code-block: python\nassert False, 'hidden'\n-->\n", "hidden"),
])
def test_a_broken_snippet_fails(tmp_path: Path, snippet: str, expected: str) -> None:
    doc = tmp_path / "broken.md"
    doc.write_text("# A page\n\n```python\nx = 1\n```\n\n" + snippet)
    with pytest.raises(AssertionError, match=expected) as failure:
        run_document(doc)
    assert "broken.md, line " in str(failure.value)


def test_the_readme_lists_every_extra() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in extras if f"| `{name}` |" not in readme]
    assert not missing, f"extras missing from the README's table: {missing}"


def test_the_async_docs_view_accepts_a_post_from_another_program() -> None:
    """docs/async.md's view, called over HTTP without a CSRF token (curl, a service):
    Django's CSRF middleware lets it through."""
    section = (ROOT / "docs" / "async.md").read_text().split("## Async views", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S)[1]
    namespace: dict = {}
    exec(code, namespace)  # defines the view, runs nothing
    request = RequestFactory().post("/invoice/", data="{}", content_type="application/json")
    middleware = CsrfViewMiddleware(lambda request: None)
    assert middleware.process_view(request, namespace["invoice_view"], (), {}) is None
