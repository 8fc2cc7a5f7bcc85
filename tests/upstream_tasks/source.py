"""Fetch, extract and adapt Django's ``tests/tasks/`` at test time.

``pip download --no-deps --no-binary :all: django==<installed version>`` into
``build/upstream-tasks/`` (kept there as a cache), then its ``tests/tasks/`` becomes the
package ``tasks`` (the name Django's suite imports it by: its tests check task module
paths such as ``tasks.tasks.noop_task``) with the adaptations below, each of which must
apply (a new Django that changes them fails here loudly instead of running something
else).
"""

from __future__ import annotations

import fcntl
import importlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import django

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("CONDUCTOR_UPSTREAM_CACHE") or ROOT / "build" / "upstream-tasks")

#: The upstream test modules run here (``test_custom_backend`` is set aside: see skips).
MODULES = ("test_tasks", "test_immediate_backend", "test_dummy_backend")

#: ``(what, pattern, replacement)``: the whole adaptation of the upstream files.
ADAPTATIONS = (
    ("the in-memory backend is ConductorBackend, keeping what is enqueued",
     r'"django\.tasks\.backends\.dummy\.DummyBackend"', '"tests.upstream_tasks.backends.Stored"'),
    ("the immediate backend is ConductorBackend, drained before enqueue returns",
     r'"django\.tasks\.backends\.immediate\.ImmediateBackend"',
     '"tests.upstream_tasks.backends.Draining"'),
    ("TestCase instead of SimpleTestCase: a database backend queries",
     r"^(from django\.test import .*)\bSimpleTestCase\b", r"\1TestCase as SimpleTestCase"),
    ("conductor's tables are flushed after a TransactionTestCase",
     r"^    available_apps = \[\]$", "    available_apps = None"),
)


class Unavailable(Exception):
    """The source distribution could not be downloaded or read."""


#: Django 5.2 runs the ``django_tasks`` backport, a port of Django 6's ``django.tasks``
#: whose source distribution ships no tests: there the suite of this Django release
#: runs, its imports moved to the backport (``BACKPORT``).
BACKPORT_SUITE = "6.1.3"

BACKPORT = (
    ("Django 6's names of the backport's exceptions (tests/upstream_tasks/backport.py)",
     r"^from django\.tasks\.exceptions import\b",
     "from tests.upstream_tasks.backport import"),
    ("the backport's package", r"\bdjango\.tasks\b", "django_tasks"),
)


def version() -> str:
    return django.__version__ if django.VERSION >= (6, 0) else BACKPORT_SUITE


def load() -> list[ModuleType]:
    """The adapted upstream test modules of the installed Django (or, on Django 5.2, of
    ``BACKPORT_SUITE`` for the backport)."""
    backport = django.VERSION < (6, 0)
    home = CACHE / (f"django-{version()}" + ("-backport" if backport else ""))
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:  # cells of the matrix run side by side
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (home / "tasks" / "__init__.py").exists():
            _extract(_download(), home, ADAPTATIONS + (BACKPORT if backport else ()))
    if str(home) not in sys.path:
        sys.path.insert(0, str(home))
    return [importlib.import_module(f"tasks.{name}") for name in MODULES]


def _download() -> Path:
    target = CACHE / f"django-{version()}.tar.gz"
    if target.exists():
        return target
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "-q", "-d", str(CACHE),
               f"django=={version()}"]
    if django.VERSION < (6, 0):  # the source of a Django this Python cannot install
        command[4:4] = ["--python-version", "3.13"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"pip download of Django {version()} failed: {exc}") from exc
    if done.returncode != 0 or not target.exists():
        raise Unavailable(f"pip download of Django {version()}'s source distribution "
                          f"failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return target


def _extract(archive: Path, home: Path,
             adaptations: tuple[tuple[str, str, str], ...]) -> None:
    prefix = f"django-{version()}/tests/tasks/"
    staging = home.with_name(home.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    package = staging / "tasks"
    package.mkdir(parents=True)
    try:
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers()
                       if m.isfile() and m.name.startswith(prefix) and m.name.endswith(".py")
                       and "/" not in m.name[len(prefix):]]
            if not members:
                raise Unavailable(f"{archive.name} has no {prefix}")
            texts = {Path(m.name).name: tar.extractfile(m).read().decode()  # type: ignore[union-attr]
                     for m in members}
    except (OSError, tarfile.TarError) as exc:
        raise Unavailable(f"cannot read {archive}: {exc}") from exc
    used = dict.fromkeys(range(len(adaptations)), 0)
    for name, text in texts.items():
        for n, (_, pattern, replacement) in enumerate(adaptations):
            text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
            used[n] += count
        (package / name).write_text(text)
    unused = [adaptations[n][0] for n, count in used.items() if not count]
    if unused:
        raise RuntimeError(f"adaptations that no longer apply to Django {version()}'s "
                           f"tests/tasks: {unused}")
    shutil.rmtree(home, ignore_errors=True)
    staging.rename(home)
