"""Settings of the benchmark project: the database comes from BENCH_DB (postgres|mysql|sqlite)."""

import os

BACKEND = os.environ.get("BENCH_DB", "postgres")
if BACKEND == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("BENCH_PG_NAME", "conductor_bench"),
            "USER": os.environ.get("BENCH_PG_USER", "postgres"),
            "PASSWORD": os.environ.get("BENCH_PG_PASSWORD", ""),
            "HOST": os.environ.get("BENCH_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("BENCH_PG_PORT", "5432"),
            "CONN_MAX_AGE": None,
        }
    }
elif BACKEND == "mysql":  # MariaDB or MySQL 8: Django's defaults (READ COMMITTED, utf8mb4)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.mysql",
            "NAME": os.environ.get("BENCH_MYSQL_NAME", "conductor_bench"),
            "USER": os.environ.get("BENCH_MYSQL_USER", "root"),
            "PASSWORD": os.environ.get("BENCH_MYSQL_PASSWORD", ""),
            "HOST": os.environ.get("BENCH_MYSQL_HOST", "127.0.0.1"),
            "PORT": os.environ.get("BENCH_MYSQL_PORT", "3306"),
            "CONN_MAX_AGE": None,
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("BENCH_SQLITE_PATH", "/tmp/conductor-bench.sqlite3"),
            "OPTIONS": {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }

SECRET_KEY = "bench-not-secret"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "conductor_django", "benchproject"]
CONDUCTOR = {
    "POLL_INTERVAL": float(os.environ.get("BENCH_POLL", "0.1")),
    "CANCEL_POLL_INTERVAL": float(os.environ.get("BENCH_CANCEL_POLL", "0.1")),
    "LONG_TRANSACTION_WARNING": float(os.environ.get("BENCH_LONG_TRANSACTION", "300")),
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}

if os.environ.get("BENCH_ADMIN"):  # bench/bulk_cancel.py drives the admin
    INSTALLED_APPS = ["django.contrib.admin", "django.contrib.auth",
                      "django.contrib.contenttypes", "django.contrib.sessions",
                      "django.contrib.messages", "conductor_django", "benchproject"]
    MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware",
                  "django.middleware.csrf.CsrfViewMiddleware",
                  "django.contrib.auth.middleware.AuthenticationMiddleware",
                  "django.contrib.messages.middleware.MessageMiddleware"]
    TEMPLATES = [{
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": [
            "django.template.context_processors.request",
            "django.contrib.auth.context_processors.auth",
            "django.contrib.messages.context_processors.messages",
        ]},
    }]
    ROOT_URLCONF = "benchproject.urls"
    ALLOWED_HOSTS = ["testserver"]
