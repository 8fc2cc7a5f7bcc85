#!/usr/bin/env bash
# The whole test command: lint, migrations check, the suite on SQLite, then on
# PostgreSQL when it is reachable (required when CONDUCTOR_REQUIRE_PG=1, as on CI).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"

echo "== ruff"
"$PY" -m ruff check .

echo "== mypy"
"$PY" -m mypy conductor_django

echo "== import contracts"
"$(dirname "$PY")/lint-imports" --no-cache

echo "== makemigrations --check"
DJANGO_SETTINGS_MODULE=tests.settings "$PY" -m django makemigrations --check --dry-run

pg_reachable() {
  "$PY" - <<'PY'
import os, sys
import psycopg
try:
    psycopg.connect(host=os.environ.get("CONDUCTOR_PG_HOST", "127.0.0.1"),
                    port=os.environ.get("CONDUCTOR_PG_PORT", "5432"),
                    user=os.environ.get("CONDUCTOR_PG_USER", "postgres"),
                    password=os.environ.get("CONDUCTOR_PG_PASSWORD", ""),
                    dbname="postgres", connect_timeout=3).close()
except Exception as exc:
    print(f"PostgreSQL not reachable: {exc}", file=sys.stderr)
    sys.exit(1)
PY
}

# The admin browser test drives Debian's chromium through chromium-driver: install them
# when missing (quietly, once); without them (and without root) that test is skipped.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "== installing chromium + chromium-driver for the admin browser test"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends chromium chromium-driver fonts-dejavu-core; } >/dev/null 2>&1 \
      || echo "could not install chromium (the browser test will fail)" >&2
  else
    echo "== chromium/chromedriver missing and no root to install them: browser test skipped"
  fi
fi
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  export CONDUCTOR_REQUIRE_BROWSER=1
fi

echo "== pytest on SQLite"
CONDUCTOR_TEST_DB=sqlite "$PY" -m pytest "$@"

if pg_reachable; then
  echo "== pytest on PostgreSQL"
  CONDUCTOR_TEST_DB=postgres "$PY" -m pytest "$@"
elif [ "${CONDUCTOR_REQUIRE_PG:-0}" = "1" ]; then
  echo "PostgreSQL is required here (CONDUCTOR_REQUIRE_PG=1) but not reachable" >&2
  exit 1
else
  echo "== PostgreSQL not reachable: skipped its run"
fi
