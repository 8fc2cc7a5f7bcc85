"""System checks of the ``CONDUCTOR`` setting (``manage.py check``)."""

from __future__ import annotations

import importlib.util
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import Error, Tags, register
from django.core.checks import Warning as CheckWarning
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections, router

from .conf import DEFAULTS
from .definitions.cron import second_field_trap
from .definitions.options import Retention
from .definitions.registry import all_tasks, import_errors
from .definitions.values import MAX_SECONDS, QUEUE_LENGTH, check_text
from .events import resolve_fields, resolve_model
from .models import Execution
from .runtime.custom_context import load_factory
from .runtime.logs import level_number
from .store.vendor import dialect

VALID = ", ".join(sorted(DEFAULTS))

#: The types each key of ``settings.CONDUCTOR`` accepts (checked by ``check_settings``).
NUMBER = (int, float)
TYPES: dict[str, tuple[type, ...]] = {
    "TASK_MODULES": (list, tuple),
    "ENGINE": (str,),
    "RETRY_BACKOFF": (list, tuple),
    "CANCEL_POLL_INTERVAL": NUMBER,
    "POLL_INTERVAL": NUMBER,
    "WORKER_DEAD_AFTER": NUMBER,
    "HEARTBEAT_INTERVAL": NUMBER,
    "RETENTION": (Retention, dict, type(None)),
    "CONTEXT": (str, type(None)),
    "DEFAULT_QUEUE": (str,),
    "CLEANUP_INTERVAL": NUMBER,
    "CLEANUP_BATCH_SIZE": (int,),
    "LONG_TRANSACTION_WARNING": (int, float, type(None)),
    "LOG_LINES": (int,),
    "LOG_LEVEL": (str, int),
    "PREPARED_STATEMENTS": (bool,),
    "LISTEN_DATABASE": (str, type(None)),
    "METRICS_TOKEN": (str, type(None)),
    "METRICS_MAX_QUEUES": (int,),
    "TRACE_BAGGAGE": (bool,),
}

ENGINES = ("database", "django_q")


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    value = getattr(settings, "CONDUCTOR", None)
    if value is None:
        return []
    if not isinstance(value, dict):
        return [Error(
            f"CONDUCTOR must be a dict, not {type(value).__name__}.",
            id="conductor_django.E003",
        )]
    errors = []
    for key in sorted(set(value) - set(DEFAULTS)):
        errors.append(Error(
            f"Unknown key {key!r} in CONDUCTOR.",
            hint=f"Valid keys: {VALID}.",
            id="conductor_django.E001",
        ))
    for key, types in TYPES.items():
        if key in value and (not isinstance(value[key], types) or isinstance(value[key], bool)
                             and bool not in types):
            names = " or ".join(t.__name__ for t in types)
            errors.append(Error(
                f"CONDUCTOR[{key!r}] must be {names}, not {type(value[key]).__name__}.",
                id="conductor_django.E002",
            ))
    numbers = ("CANCEL_POLL_INTERVAL", "POLL_INTERVAL", "WORKER_DEAD_AFTER", "HEARTBEAT_INTERVAL",
               "CLEANUP_INTERVAL", "LONG_TRANSACTION_WARNING")
    for key in numbers:
        v = value.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool) and not (
                0 < v <= MAX_SECONDS):  # NaN, inf: an idle worker would spin or hang
            errors.append(Error(f"CONDUCTOR[{key!r}] must be positive (and finite), got {v!r}.",
                                id="conductor_django.E002"))
    if isinstance(value.get("ENGINE"), str) and value["ENGINE"] not in ENGINES:
        errors.append(Error(
            f"CONDUCTOR['ENGINE'] is {value['ENGINE']!r}.",
            hint=f"Valid engines: {', '.join(ENGINES)}.",
            id="conductor_django.E004",
        ))
    # --- engines ---
    if value.get("ENGINE") == "django_q":
        errors += _check_django_q()
    errors += _check_backoff(value.get("RETRY_BACKOFF"))
    errors += _check_value_settings(value)
    return errors


def _check_django_q() -> list[Error]:
    """The django_q engine needs the django-q2 package (an extra) and its app."""
    if importlib.util.find_spec("django_q") is None:
        return [Error(
            'CONDUCTOR["ENGINE"] is "django_q" but the django-q2 package is not installed.',
            hint='pip install "conductor-django[django_q]", then add "django_q" to '
            "INSTALLED_APPS and configure Q_CLUSTER.",
            id="conductor_django.E009",
        )]
    if not apps.is_installed("django_q"):
        return [Error(
            'CONDUCTOR["ENGINE"] is "django_q" but "django_q" is not in INSTALLED_APPS.',
            hint='Add "django_q" to INSTALLED_APPS and configure Q_CLUSTER.',
            id="conductor_django.E009",
        )]
    return []


def _check_backoff(backoff: Any) -> list[Error]:
    """``RETRY_BACKOFF``: a non-empty list of delays in seconds, none negative."""
    if not isinstance(backoff, list | tuple):
        return []  # absent, or a wrong type (reported above)
    if not backoff:
        return [Error(
            "CONDUCTOR['RETRY_BACKOFF'] is empty.",
            hint="List the seconds before each retry, e.g. [15, 30, 60]; the last "
            "value repeats. [0] retries at once.",
            id="conductor_django.E002",
        )]
    bad = [v for v in backoff
           if not isinstance(v, int | float) or isinstance(v, bool) or not 0 <= v <= MAX_SECONDS]
    if bad:
        return [Error(
            f"CONDUCTOR['RETRY_BACKOFF'] must hold numbers of seconds >= 0, got {bad[0]!r}.",
            hint="e.g. [15, 30, 60]; the last value repeats.",
            id="conductor_django.E002",
        )]
    return []


# --- retention, logs, custom context, task modules and model triggers -----------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_value_settings(value: dict[str, Any]) -> list[Error]:
    errors = []
    modules = value.get("TASK_MODULES")
    if isinstance(modules, list | tuple):
        for module in modules:
            if not isinstance(module, str) or not module:
                errors.append(Error(
                    f"CONDUCTOR['TASK_MODULES'] must hold module paths (str), got {module!r}.",
                    id="conductor_django.E002",
                ))
    if isinstance(value.get("DEFAULT_QUEUE"), str):
        try:  # what invoke(queue=...) accepts: a queue no execution could use is an error
            check_text(value["DEFAULT_QUEUE"], "CONDUCTOR['DEFAULT_QUEUE']", QUEUE_LENGTH)
        except ValueError as exc:
            errors.append(Error(f"{exc}.", hint="A queue name is a non-empty str of at most "
                                f"{QUEUE_LENGTH} characters, e.g. 'default'.",
                                id="conductor_django.E002"))
    if _is_int(value.get("METRICS_MAX_QUEUES")) and value["METRICS_MAX_QUEUES"] < 1:
        errors.append(Error(
            f"CONDUCTOR['METRICS_MAX_QUEUES'] must be at least 1, got "
            f"{value['METRICS_MAX_QUEUES']!r}.", id="conductor_django.E002",
        ))
    if _is_int(value.get("CLEANUP_BATCH_SIZE")) and value["CLEANUP_BATCH_SIZE"] < 1:
        errors.append(Error(
            f"CONDUCTOR['CLEANUP_BATCH_SIZE'] must be at least 1, got "
            f"{value['CLEANUP_BATCH_SIZE']!r}.", id="conductor_django.E002",
        ))
    if _is_int(value.get("LOG_LINES")) and value["LOG_LINES"] < 0:
        errors.append(Error(
            f"CONDUCTOR['LOG_LINES'] must not be negative, got {value['LOG_LINES']!r}.",
            hint="0 stores no log lines.", id="conductor_django.E002",
        ))
    if "LOG_LEVEL" in value and isinstance(value["LOG_LEVEL"], str | int) \
            and level_number(value["LOG_LEVEL"]) is None:
        errors.append(Error(
            f"CONDUCTOR['LOG_LEVEL'] is not a logging level: {value['LOG_LEVEL']!r}.",
            hint="Use a level name such as 'DEBUG', 'INFO', 'WARNING' or a number.",
            id="conductor_django.E002",
        ))
    if isinstance(value.get("RETENTION"), dict):
        try:
            Retention.coerce(value["RETENTION"])
        except (TypeError, ValueError) as exc:
            errors.append(Error(
                f"CONDUCTOR['RETENTION'] is invalid: {exc}.",
                hint="Use Retention(completed=..., failed=...) or a dict with those keys; "
                "values are seconds, timedeltas or None (keep forever).",
                id="conductor_django.E005",
            ))
    if isinstance(value.get("CONTEXT"), str):
        try:
            load_factory(value["CONTEXT"])
        except ImproperlyConfigured as exc:
            errors.append(Error(str(exc) + ".", hint="CONTEXT is the dotted path of a "
                                "callable returning a dict.", id="conductor_django.E006"))
    return errors


@register()
def check_tasks(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Task modules that failed to import, and model triggers naming unknown models."""
    errors = []
    for module, trace in sorted(import_errors.items()):
        last = trace.strip().splitlines()[-1] if trace.strip() else "unknown error"
        errors.append(Error(
            f"Task module {module!r} could not be imported: {last}",
            hint="None of its tasks is registered. The traceback was logged (logger "
            "conductor_django) when Django started.",
            id="conductor_django.E007",
        ))
    for name, t in sorted(all_tasks().items()):
        if t.on_model is None:
            continue
        try:
            resolve_fields(resolve_model(t.on_model[0]), t.fields)
        except (LookupError, ValueError) as exc:
            errors.append(Error(
                f"Task {name!r} has on_model={t.on_model!r}: {exc}",
                id="conductor_django.E008",
            ))
    return errors


@register()
def check_cron_traps(app_configs: Any = None, **kwargs: Any) -> list[CheckWarning]:
    """``@task(cron=...)`` expressions that fire every second of a minute by a likely
    mistake (a seconds-first expression read with seconds last)."""
    found = []
    for name, t in sorted(all_tasks().items()):
        for cron in t.cron:
            trap = second_field_trap(cron.expr)
            if trap is not None:
                found.append(CheckWarning(
                    f"Task {name!r}, schedule {cron.schedule_name!r}: {trap}",
                    hint="If every second of those minutes is meant, silence this warning "
                    "with SILENCED_SYSTEM_CHECKS = ['conductor_django.W003'].",
                    id="conductor_django.W003",
                ))
    return found


@register()
def check_sqlite_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckWarning]:
    """SQLite for conductor's tables: recommend WAL and ``BEGIN IMMEDIATE``.

    Reads the settings only (no connection). conductor's own writes never fail with
    "database is locked" either way; these settings keep the project's own
    transactions (``invoke`` inside ``atomic()``, the admin) from failing that way
    while a worker writes, and let readers run beside the writer.
    """
    alias = router.db_for_write(Execution)
    return sqlite_advice(alias, settings.DATABASES.get(alias) or {})


def sqlite_advice(alias: str, config: dict[str, Any]) -> list[CheckWarning]:
    """The W001 warning for the database settings ``config`` of ``alias``, if any."""
    if "sqlite3" not in str(config.get("ENGINE", "")):
        return []
    options = config.get("OPTIONS") or {}
    init = str(options.get("init_command", "")).replace(" ", "").lower()
    missing = []
    if "journal_mode=wal" not in init:
        missing.append('"init_command": "PRAGMA journal_mode=WAL;"')
    if str(options.get("transaction_mode", "")).upper() != "IMMEDIATE":
        missing.append('"transaction_mode": "IMMEDIATE"')
    if not missing:
        return []
    return [CheckWarning(
        f"DATABASES[{alias!r}] is SQLite without {' and '.join(missing)}.",
        hint="With a worker running, a transaction of your own that reads and then writes "
        "(invoke() inside atomic(), a form that saves) can fail with 'database is locked'. "
        f"Add to DATABASES[{alias!r}]['OPTIONS']: {', '.join(missing)}.",
        id="conductor_django.W001",
    )]


@register()
def check_mysql_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckWarning]:
    """MySQL/MariaDB for conductor's tables: READ COMMITTED and utf8mb4 (settings only)."""
    alias = router.db_for_write(Execution)
    return mysql_advice(alias, settings.DATABASES.get(alias) or {})


@register(Tags.database)
def check_mysql_collation(app_configs: Any = None, databases: Any = None,
                          **kwargs: Any) -> list[CheckWarning]:
    """MySQL/MariaDB: the collation of ``dedupe_key``, read from the database (a database
    check: ``migrate`` and ``check --database`` run it)."""
    alias = router.db_for_write(Execution)
    if databases is None or alias not in databases:
        return []  # elsewhere than MySQL/MariaDB, text_collation reads nothing
    try:
        collation = dialect(connections[alias]).text_collation(
            connections[alias], Execution._meta.db_table, "dedupe_key")
    except DatabaseError:
        return []  # not reachable: Django's own checks say so
    return collation_advice(alias, collation)


def collation_advice(alias: str, collation: str | None) -> list[CheckWarning]:
    """The W002 warning for a case-insensitive (``_ci``) collation, if any."""
    if not collation or not collation.lower().endswith("_ci"):
        return []
    return [CheckWarning(
        f"Database {alias!r} compares conductor's keys with the collation {collation!r}, "
        "which ignores case: dedupe keys (and keys, task names) that differ only in case "
        "are one key there.",
        hint="Create the database with CHARACTER SET utf8mb4 COLLATE utf8mb4_bin (before "
        "migrate), or convert the tables: ALTER TABLE conductor_django_execution CONVERT "
        "TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin (and the other conductor_django "
        "tables). See the MySQL page of the docs.",
        id="conductor_django.W002",
    )]


def mysql_advice(alias: str, config: dict[str, Any]) -> list[CheckWarning]:
    """The W002 warning for the MySQL settings ``config`` of ``alias``, if any.

    Django's defaults (READ COMMITTED, utf8mb4) are right; this catches settings that
    override them. The collation is the database's own (docs/mysql.md)."""
    if "mysql" not in str(config.get("ENGINE", "")):
        return []
    options = config.get("OPTIONS") or {}
    wrong = []
    level = str(options.get("isolation_level", "read committed") or "").lower()
    if level != "read committed":
        wrong.append(f'"isolation_level": "read committed" (not {level or "the server default"!r})')
    charset = str(options.get("charset", "utf8mb4")).lower()
    if charset != "utf8mb4":
        wrong.append(f'"charset": "utf8mb4" (not {charset!r})')
    if not wrong:
        return []
    return [CheckWarning(
        f"DATABASES[{alias!r}] is MySQL/MariaDB without {' and '.join(wrong)}.",
        hint="conductor_django is tested with READ COMMITTED and utf8mb4 (and a database "
        "created with COLLATE utf8mb4_bin, so that dedupe keys compare exactly). Set in "
        f"DATABASES[{alias!r}]['OPTIONS']: {', '.join(w.split(' (')[0] for w in wrong)}.",
        id="conductor_django.W002",
    )]


@register()
def check_pooled_database(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """PostgreSQL behind a transaction pooler (``store.pooling``; settings only): the
    LISTEN connection must be a direct one, or the worker polls."""
    alias = router.db_for_write(Execution)
    return pooling_advice(alias, settings.DATABASES, getattr(settings, "CONDUCTOR", None))


def pooling_advice(alias: str, databases: dict[str, Any], conductor: Any) -> list[Any]:
    """E010 for a ``LISTEN_DATABASE`` that cannot listen, W004 for a pooled database
    without one."""
    listen = conductor.get("LISTEN_DATABASE") if isinstance(conductor, dict) else None
    config = databases.get(alias) or {}
    if listen is not None:
        if not isinstance(listen, str):
            return []  # E002 says so
        target = databases.get(listen)
        problem = None
        if target is None:
            problem = "is not an alias of DATABASES"
        elif "postgresql" not in str(target.get("ENGINE", "")):
            problem = "is not a PostgreSQL database (LISTEN/NOTIFY is PostgreSQL's)"
        elif target.get("DISABLE_SERVER_SIDE_CURSORS"):
            problem = ("goes through a transaction pooler too (DISABLE_SERVER_SIDE_CURSORS): "
                       "LISTEN needs a session of its own")
        if problem:
            return [Error(
                f"CONDUCTOR['LISTEN_DATABASE'] = {listen!r} {problem}.",
                hint=f"Name an alias with the same database as DATABASES[{alias!r}], "
                "connected directly to PostgreSQL (or through a session-mode pool).",
                id="conductor_django.E010",
            )]
        return []
    if "postgresql" in str(config.get("ENGINE", "")) and config.get(
            "DISABLE_SERVER_SIDE_CURSORS"):
        return [CheckWarning(
            f"DATABASES[{alias!r}] goes through a transaction pooler "
            "(DISABLE_SERVER_SIDE_CURSORS) and CONDUCTOR['LISTEN_DATABASE'] is not set: "
            "workers cannot LISTEN there, and find new work and cancel requests by polling "
            "(POLL_INTERVAL, CANCEL_POLL_INTERVAL).",
            hint="Add a DATABASES alias connecting to the same database directly and name it "
            "in CONDUCTOR['LISTEN_DATABASE'] (one connection per worker process).",
            id="conductor_django.W004",
        )]
    return []


@register(Tags.database)
def check_unmarked_pooler(app_configs: Any = None, databases: Any = None,
                          **kwargs: Any) -> list[CheckWarning]:
    """PostgreSQL: a server that answers on another port than the one connected to is
    behind a proxy or a pooler (PgBouncer passes the server's own ``inet_server_port``
    through); warn when the settings do not say it is a pooled database."""
    alias = router.db_for_write(Execution)
    if databases is None or alias not in databases:
        return []
    connection = connections[alias]
    if connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS"):
        return []
    try:
        served = dialect(connection).server_port(connection)
    except DatabaseError:
        return []  # not reachable: Django's own checks say so
    return proxy_advice(alias, connection.settings_dict.get("PORT"), served)


def proxy_advice(alias: str, port: Any, served: int | None) -> list[CheckWarning]:
    """W005 when the server's port ``served`` differs from the ``port`` connected to
    (``None``: not known, or not a server)."""
    if served is None or str(port or "5432") == str(served):
        return []  # a Unix socket, or PostgreSQL itself
    return [CheckWarning(
        f"DATABASES[{alias!r}] connects to port {port or 5432}, but PostgreSQL serves it "
        f"on port {served}: a proxy or a connection pooler is in between. Through a "
        "transaction pooler (PgBouncer's pool_mode = transaction) a worker's LISTEN hears "
        "nothing and prepared statements break.",
        hint=f"If it is a transaction pooler, set DATABASES[{alias!r}]"
        "['DISABLE_SERVER_SIDE_CURSORS'] = True and CONDUCTOR['LISTEN_DATABASE'] (see "
        "'Deploying on PostgreSQL' in the operations docs); if it is a session pooler or a "
        "port forward, silence this with SILENCED_SYSTEM_CHECKS = ['conductor_django.W005'].",
        id="conductor_django.W005",
    )]
