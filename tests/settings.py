"""Settings of the test suite; the database comes from the environment.

``CONDUCTOR_TEST_DB=sqlite`` (default) or ``postgres``. Worker subprocesses started
by the tests get ``CONDUCTOR_TEST_DB_NAME`` so they open the test database itself.
"""

import os
import tempfile

BACKEND = os.environ.get("CONDUCTOR_TEST_DB", "sqlite")
RUNNING_NAME = os.environ.get("CONDUCTOR_TEST_DB_NAME")

if BACKEND == "postgres":
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
elif BACKEND == "sqlite":
    _test_file = os.path.join(tempfile.gettempdir(), f"conductor-test-{os.getpid()}.sqlite3")
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": RUNNING_NAME or os.path.join(tempfile.gettempdir(), "conductor-dev.sqlite3"),
            "OPTIONS": {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            "TEST": {"NAME": _test_file},
        }
    }
else:
    raise RuntimeError(f"CONDUCTOR_TEST_DB must be sqlite or postgres, not {BACKEND!r}")

SECRET_KEY = "conductor-tests-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
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
    "POLL_INTERVAL": 0.1,
    "CANCEL_POLL_INTERVAL": 0.2,
    "HEARTBEAT_INTERVAL": 0.5,
    "WORKER_DEAD_AFTER": float(os.environ.get("CONDUCTOR_TEST_DEAD_AFTER", "30")),
    "RETRY_BACKOFF": [0],
    # Extra task modules for one test's workers (static cron schedules, for instance).
    "TASK_MODULES": [m for m in os.environ.get("CONDUCTOR_TEST_TASK_MODULES", "").split(",") if m],
}
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
