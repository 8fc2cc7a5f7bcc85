"""Settings of the test suite; the database comes from the environment.

``CONDUCTOR_TEST_DB=sqlite`` (default), ``postgres``, ``pgbouncer`` (PostgreSQL through
PgBouncer in transaction pooling mode, ``scripts/pgbouncer.sh``; LISTEN through a direct
connection, the ``listen`` alias) or ``mysql`` (MariaDB/MySQL).
Worker subprocesses started by the tests get ``CONDUCTOR_TEST_DB_NAME`` so they open
the test database itself.
"""

import os
import tempfile
from typing import Any

import django

BACKEND = os.environ.get("CONDUCTOR_TEST_DB", "sqlite")
RUNNING_NAME = os.environ.get("CONDUCTOR_TEST_DB_NAME")

DATABASES: dict[str, dict[str, Any]]
if BACKEND in ("postgres", "pgbouncer"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": RUNNING_NAME or os.environ.get("CONDUCTOR_PG_NAME", "conductor"),
            "USER": os.environ.get("CONDUCTOR_PG_USER", "postgres"),
            "PASSWORD": os.environ.get("CONDUCTOR_PG_PASSWORD", ""),
            "HOST": os.environ.get("CONDUCTOR_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("CONDUCTOR_PG_PORT", "5432"),
            "TEST": {"NAME": os.environ.get("CONDUCTOR_PG_TEST_NAME", "test_conductor")},
        }
    }
    if BACKEND == "pgbouncer":
        # The API, the admin and the workers go through the pooler; what needs a session
        # of its own (LISTEN) goes straight to PostgreSQL. DISABLE_SERVER_SIDE_CURSORS is
        # what Django asks of a transaction-pooled database, and what tells
        # conductor_django that the database is one.
        DATABASES["listen"] = {**DATABASES["default"], "TEST": {"MIRROR": "default"}}
        DATABASES["default"]["PORT"] = os.environ.get("CONDUCTOR_PGBOUNCER_PORT", "6432")
        DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
elif BACKEND == "sqlite":
    _test_file = os.path.join(tempfile.gettempdir(), f"conductor-test-{os.getpid()}.sqlite3")
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": RUNNING_NAME or os.path.join(tempfile.gettempdir(), "conductor-dev.sqlite3"),
            "OPTIONS": {
                # Lowered by the database-fault test so that a held lock fails writes.
                "timeout": float(os.environ.get("CONDUCTOR_TEST_SQLITE_TIMEOUT", "30")),
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            "TEST": {"NAME": _test_file},
        }
    }
    if os.environ.get("CONDUCTOR_TEST_SQLITE_DEFAULTS"):
        # What `startproject` writes (no OPTIONS: rollback journal, deferred transactions,
        # 5 s timeout), for the chaos test that SQLite never says "database is locked".
        DATABASES["default"].pop("OPTIONS")
elif BACKEND == "mysql":  # MySQL 8 or MariaDB >= 10.6 (mysqlclient)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.mysql",
            "NAME": RUNNING_NAME or os.environ.get("CONDUCTOR_MYSQL_NAME", "test"),
            "USER": os.environ.get("CONDUCTOR_MYSQL_USER", "root"),
            "PASSWORD": os.environ.get("CONDUCTOR_MYSQL_PASSWORD", ""),
            "HOST": os.environ.get("CONDUCTOR_MYSQL_HOST", "127.0.0.1"),
            "PORT": os.environ.get("CONDUCTOR_MYSQL_PORT", "3306"),
            "OPTIONS": {"charset": "utf8mb4", "isolation_level": "read committed"},
            "TEST": {
                "NAME": os.environ.get("CONDUCTOR_MYSQL_TEST_NAME", "test_conductor"),
                "CHARSET": "utf8mb4",
                "COLLATION": "utf8mb4_bin",
            },
        }
    }
    # django_q's Task model has a partial index (conductor's own raise no W036/W037 on
    # MySQL: migration 0010_mysql builds them; tests/test_mysql.py checks that)
    SILENCED_SYSTEM_CHECKS = ["models.W037"]
else:
    raise RuntimeError("CONDUCTOR_TEST_DB must be sqlite, postgres, pgbouncer or mysql, not "
                       f"{BACKEND!r}")

# A second database: atomic steps refuse to write to it (tests/test_exactly_once.py).
DATABASES["other"] = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}

SECRET_KEY = "conductor-tests-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = os.environ.get("CONDUCTOR_TEST_TIME_ZONE", "UTC")  # flow-control window tests
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.urls"
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",  # the admin's CSS in the browser test (live_server)
    "conductor_django",
    "tests.testapp",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
CONDUCTOR = {
    "POLL_INTERVAL": float(os.environ.get("CONDUCTOR_TEST_POLL", "0.1")),
    "CANCEL_POLL_INTERVAL": float(os.environ.get("CONDUCTOR_TEST_CANCEL_POLL", "0.2")),
    "HEARTBEAT_INTERVAL": float(os.environ.get("CONDUCTOR_TEST_HEARTBEAT", "0.5")),
    "WORKER_DEAD_AFTER": float(os.environ.get("CONDUCTOR_TEST_DEAD_AFTER", "30")),
    "RETRY_BACKOFF": [0],
    "TASK_MODULES": ["tests.testapp.flow_tasks", "tests.testapp.event_tasks",
                     "tests.testapp.exactly_once_tasks",
                     "tests.testapp.chaos_tasks", "tests.testapp.signal_tasks",
                     "tests.testapp.poison_tasks", "tests.testapp.key_tasks",
                     "tests.testapp.async_tasks", "tests.testapp.wakeup_tasks",
                     "tests.testapp.ops_tasks",
                     *filter(None, os.environ.get("CONDUCTOR_TEST_TASK_MODULES", "").split(","))],
    "CONTEXT": "tests.testapp.context.build",
    "CLEANUP_INTERVAL": float(os.environ.get("CONDUCTOR_TEST_CLEANUP_INTERVAL", "3600")),
    "LONG_TRANSACTION_WARNING": float(os.environ.get("CONDUCTOR_TEST_LONG_TRANSACTION", "300")),
}
if "listen" in DATABASES and not os.environ.get("CONDUCTOR_TEST_NO_LISTEN_DATABASE"):
    CONDUCTOR["LISTEN_DATABASE"] = "listen"
# --- Django Tasks backend (conductor_django.backends) ---------------------------------
TASKS = {
    "default": {
        "BACKEND": "conductor_django.backends.ConductorBackend",
        "QUEUES": ["default", "other"],
    },
}

# --- django_q engine (conductor_django.engines.django_q) --------------------------------
# Worker and qcluster subprocesses of the engine tests get these from the environment.
INSTALLED_APPS.append("django_q")
if os.environ.get("CONDUCTOR_TEST_ENGINE"):
    CONDUCTOR["ENGINE"] = os.environ["CONDUCTOR_TEST_ENGINE"]
_Q_TIMEOUT = int(os.environ.get("CONDUCTOR_TEST_Q_TIMEOUT", "120"))
Q_CLUSTER = {
    "name": os.environ.get("CONDUCTOR_TEST_Q_NAME", "conductor-tests"),
    "workers": int(os.environ.get("CONDUCTOR_TEST_Q_WORKERS", "3")),
    "timeout": _Q_TIMEOUT,
    "retry": _Q_TIMEOUT + 30,
    "max_attempts": 1,
    "ack_failures": True,
    "poll": 0.1,
    "guard_cycle": 0.2,
    "catch_up": False,
    "log_level": "INFO",
}
if os.environ.get("CONDUCTOR_TEST_BROKER", "orm") == "redis":
    Q_CLUSTER["redis"] = {
        "host": os.environ.get("CONDUCTOR_TEST_REDIS_HOST", "127.0.0.1"),
        "port": int(os.environ.get("CONDUCTOR_TEST_REDIS_PORT", "6379")),
        "db": int(os.environ.get("CONDUCTOR_TEST_REDIS_DB", "5")),
    }
else:
    Q_CLUSTER["orm"] = "default"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "conductor_django": {
            "handlers": ["console"],
            "level": os.environ.get("CONDUCTOR_LOG_LEVEL", "WARNING"),
        }
    },
}

if django.VERSION >= (6, 1):
    # Django 6.1 moves e-mail configuration to MAILERS (EMAIL_BACKEND is deprecated);
    # the test runner's in-memory outbox replaces this backend either way.
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
