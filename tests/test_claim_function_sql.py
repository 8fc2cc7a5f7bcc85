"""PostgreSQL's claim function: ``store/sql/claim_function.sql`` is its readable truth.

Migrations are frozen: the newest one that installs ``conductor_django_claim`` must
install exactly the file's text (the file's leading comment header aside, and trailing
whitespace), and on PostgreSQL the function in the test database is that text's body.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest
from django.db import connection

import conductor_django
from conductor_django import migrations as migrations_package

SQL_FILE = Path(conductor_django.__file__).parent / "store" / "sql" / "claim_function.sql"
INSTALLS = "CREATE OR REPLACE FUNCTION conductor_django_claim("


def _lines(text: str) -> list[str]:
    """``text`` line by line, without trailing whitespace or blank lines at either end."""
    return [line.rstrip() for line in text.strip("\n").splitlines()]


def _file_text() -> str:
    """The file without its header (the comment lines it begins with)."""
    lines = SQL_FILE.read_text().splitlines(keepends=True)
    while lines and lines[0].startswith("--"):
        lines.pop(0)
    return "".join(lines)


def _installers() -> list[tuple[str, str]]:
    """``(migration name, FORWARD)`` of every migration that installs the function."""
    found = []
    for info in pkgutil.iter_modules(migrations_package.__path__):
        module = importlib.import_module(f"{migrations_package.__name__}.{info.name}")
        forward = getattr(module, "FORWARD", None)
        if isinstance(forward, str) and INSTALLS in forward:
            found.append((info.name, forward))
    return sorted(found)


def test_the_newest_migration_installs_exactly_the_sql_file():
    installers = _installers()
    assert [name for name, _ in installers][:2] == ["0017_claim_function",
                                                    "0018_claim_byte_order"]
    name, forward = installers[-1]
    assert _lines(_file_text()) == _lines(forward), (
        f"{SQL_FILE.name} differs from migration {name}: a change of the function needs a "
        "new migration that installs the file's text (see the file's header)")


def test_the_file_is_the_function_and_nothing_else():
    text = _file_text()
    assert text.lstrip().startswith(INSTALLS)
    assert text.rstrip().endswith("$$;")
    assert text.count(INSTALLS) == 1


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "postgresql", reason="a PostgreSQL function")
def test_the_database_runs_the_files_body():
    body = _file_text().split("AS $$", 1)[1].rsplit("$$;", 1)[0]
    with connection.cursor() as cursor:
        cursor.execute("SELECT prosrc FROM pg_proc WHERE proname = 'conductor_django_claim'")
        [(installed,)] = cursor.fetchall()
    assert _lines(installed) == _lines(body)
