"""Set-up shared by the benchmarks that fill PostgreSQL with a big execution table and
read it as a logged-in admin user (``admin_explain.py``, ``metrics_endpoint.py``).

Each uses a scratch database of its own on the PostgreSQL of the test settings
(``CONDUCTOR_PG_*``), named by ``CONDUCTOR_TEST_DB_NAME``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def use_postgres(default_name: str) -> None:
    """Point the test settings at the scratch PostgreSQL database ``default_name``."""
    sys.path.insert(0, str(ROOT))
    os.environ["CONDUCTOR_TEST_DB"] = "postgres"
    os.environ.setdefault("CONDUCTOR_TEST_DB_NAME", default_name)
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"


def prepare(keep: bool, fill: Callable[[Any], None]) -> Any:
    """Re-create and migrate the database and ``fill(cursor)`` it, unless ``keep``
    (reuse the filled one); returns a Django test client logged in as a superuser."""
    import psycopg

    name = os.environ["CONDUCTOR_TEST_DB_NAME"]
    conninfo = dict(host=os.environ.get("CONDUCTOR_PG_HOST", "127.0.0.1"),
                    port=os.environ.get("CONDUCTOR_PG_PORT", "5432"),
                    user=os.environ.get("CONDUCTOR_PG_USER", "postgres"),
                    password=os.environ.get("CONDUCTOR_PG_PASSWORD", ""))
    if not keep:
        with psycopg.connect(dbname="postgres", autocommit=True, **conninfo) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')

    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    if not keep:
        call_command("migrate", verbosity=0)
        started = time.monotonic()
        with connection.cursor() as cursor:
            fill(cursor)
        print(f"<!-- filled in {time.monotonic() - started:.1f} s -->")
        User.objects.create_superuser("bench", password="bench")
    client = Client()
    client.force_login(User.objects.get(username="bench"))
    return client
