"""Django's own tests of its tasks framework (``tests/tasks/`` of the installed Django's
source distribution; on Django 5.2, of Django ``source.BACKPORT_SUITE`` on the
``django_tasks`` backport), run against ``ConductorBackend``: see tests/upstream_tasks/.

Without the source distribution (no network) they are skipped, with the reason; under
``CONDUCTOR_REQUIRE_MATRIX=1`` (CI) that fails instead.
"""

import os
import unittest

import django
import pytest

from tests.upstream_tasks import source
from tests.upstream_tasks.skips import BACKPORT_SKIPS
from tests.upstream_tasks.skips import SKIPS as COMMON_SKIPS

# Django 5.2: Django's suite on the django_tasks backport (see source.BACKPORT)
SKIPS = COMMON_SKIPS | (BACKPORT_SKIPS if django.VERSION < (6, 0) else {})

try:
    MODULES = source.load()
except source.Unavailable as exc:
    if os.environ.get("CONDUCTOR_REQUIRE_MATRIX") == "1":
        raise
    REASON = str(exc)
    MODULES = []

    def test_upstream_suites():
        pytest.skip(f"Django's tasks test suite is not available: {REASON}")


def _cases(module):
    for name, obj in vars(module).items():
        if (isinstance(obj, type) and issubclass(obj, unittest.TestCase)
                and obj.__module__ == module.__name__ and name.endswith("TestCase")):
            yield name, obj


_unused = set(SKIPS)
for _module in MODULES:
    _short = _module.__name__.rpartition(".")[2]
    for _name, _case in _cases(_module):
        for _test in [t for t in vars(_case) if t.startswith("test")]:
            _key = f"{_short}.{_name}.{_test}"
            if _key in SKIPS:
                _unused.discard(_key)
                setattr(_case, _test, unittest.skip(SKIPS[_key])(getattr(_case, _test)))
        globals()[f"Upstream_{_short}_{_name}"] = _case


def test_every_skip_names_an_upstream_test():
    if not MODULES:
        pytest.skip("Django's tasks test suite does not run here")
    assert not _unused, f"skips.py names tests upstream does not have: {sorted(_unused)}"
