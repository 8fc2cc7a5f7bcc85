#!/usr/bin/env bash
# The whole test command (`make test`): lint, the migrations check, then the suite on
# every cell of the matrix that this machine can run, two cells at a time:
#
#   dj52-sqlite    Django 5.2, Python 3.11 (.venv),      SQLite      always
#   dj52-postgres  Django 5.2, Python 3.11 (.venv),      PostgreSQL  when reachable
#   dj61-sqlite    Django 6.1, Python 3.13 (.venv-dj61), SQLite      when Python 3.13 exists
#   dj61-postgres  Django 6.1, Python 3.13 (.venv-dj61), PostgreSQL  when both exist
#   dj61-mysql     Django 6.1, Python 3.13 (.venv-dj61), MariaDB     when both exist
#                  (or MySQL 8; CONDUCTOR_MYSQL_HOST/PORT/USER/PASSWORD)
#   dj52-pgbouncer Django 5.2, Python 3.11 (.venv),      PostgreSQL through PgBouncer in
#                  transaction pooling mode (scripts/pgbouncer.sh starts it on
#                  127.0.0.1:6432), LISTEN on a direct connection; when PostgreSQL is
#                  reachable and PgBouncer installed (or installable)
#
# CONDUCTOR_REQUIRE_MATRIX=1 (CI) turns "skipped: not reachable" into a failure.
# Extra arguments go to every pytest run (e.g. `make test ARGS="-k cancel"`).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
PY61="${PY61:-.venv-dj61/bin/python}"
REQUIRE="${CONDUCTOR_REQUIRE_MATRIX:-0}"
LOGS="${CONDUCTOR_TEST_LOGS:-build/test-logs}"
mkdir -p "$LOGS"

echo "== ruff"
"$PY" -m ruff check . || exit 1

echo "== mypy"
"$PY" -m mypy conductor_django || exit 1

echo "== import contracts"
"$(dirname "$PY")/lint-imports" --no-cache || exit 1

echo "== makemigrations --check"
DJANGO_SETTINGS_MODULE=tests.settings "$PY" -m django makemigrations --check --dry-run || exit 1

reachable() {  # reachable postgres|mysql [python]
  "${2:-$PY}" - "$1" <<'PY'
import os, sys
kind = sys.argv[1]
try:
    if kind == "postgres":
        import psycopg
        psycopg.connect(host=os.environ.get("CONDUCTOR_PG_HOST", "127.0.0.1"),
                        port=os.environ.get("CONDUCTOR_PG_PORT", "5432"),
                        user=os.environ.get("CONDUCTOR_PG_USER", "postgres"),
                        password=os.environ.get("CONDUCTOR_PG_PASSWORD", ""),
                        dbname="postgres", connect_timeout=3).close()
    else:
        import MySQLdb
        MySQLdb.connect(host=os.environ.get("CONDUCTOR_MYSQL_HOST", "127.0.0.1"),
                        port=int(os.environ.get("CONDUCTOR_MYSQL_PORT", "3306")),
                        user=os.environ.get("CONDUCTOR_MYSQL_USER", "root"),
                        password=os.environ.get("CONDUCTOR_MYSQL_PASSWORD", ""),
                        connect_timeout=3).close()
except Exception as exc:
    print(f"{kind} not reachable: {exc}", file=sys.stderr)
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
browser=0
command -v chromium >/dev/null && command -v chromedriver >/dev/null && browser=1

# --- the cells this machine runs -------------------------------------------------------
# Two run at a time, each next cell taking the first free slot, in this order: the two
# slowest first, one in each slot, so that they never run one after the other in the same
# slot while the other slot has run out of work - MariaDB (no LISTEN/NOTIFY: every start
# and cancel waits for a poll) and dj52-sqlite (it also drives the browser and installs
# the wheel) - then the shorter cells fill whichever slot frees first (dj61-sqlite
# drives the browser too, for Django 6.1's admin templates).
# Each cell's duration is in $LOGS/NAME.seconds after a run (and in the summary below).
ORDER=(dj61-mysql dj52-sqlite dj52-postgres dj61-sqlite dj61-postgres dj52-pgbouncer)
declare -A can
can[dj52-sqlite]=1
if reachable postgres; then
  can[dj52-postgres]=1
  if bash scripts/pgbouncer.sh; then can[dj52-pgbouncer]=1; fi
fi
if [ -x "$PY61" ]; then
  can[dj61-sqlite]=1
  if reachable postgres; then can[dj61-postgres]=1; fi
  # mysqlclient is installed in .venv-dj61 only (the mysql extra)
  if reachable mysql "$PY61"; then can[dj61-mysql]=1; fi
fi
cells=()
missing=()
for name in "${ORDER[@]}"; do
  if [ -n "${can[$name]:-}" ]; then cells+=("$name"); else missing+=("$name"); fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== cells that cannot run here: ${missing[*]}"
  if [ "$REQUIRE" = "1" ]; then
    echo "CONDUCTOR_REQUIRE_MATRIX=1: every cell must run" >&2
    exit 1
  fi
fi

run_cell() {  # run_cell NAME: the suite of one cell, its output in $LOGS/NAME.log
  local name=$1 python db
  shift
  case "$name" in dj52-*) python=$PY ;; *) python=$PY61 ;; esac
  db=${name#*-}
  local env=(CONDUCTOR_TEST_DB="$db" CONDUCTOR_PG_TEST_NAME="test_conductor_${name//-/_}"
             CONDUCTOR_MYSQL_TEST_NAME="test_conductor_${name//-/_}")
  # One cell per Django version drives the browser: the admin's pages do not depend on
  # the database, but they do on Django's admin templates (6.1 moved the object tools).
  case "$name" in
    dj52-sqlite|dj61-sqlite)
      [ "$browser" = "1" ] && env+=(CONDUCTOR_REQUIRE_BROWSER=1) ;;
    *) env+=(CONDUCTOR_SKIP_BROWSER=1) ;;
  esac
  local began=$SECONDS rc=0
  env "${env[@]}" "$python" -m pytest -p no:cacheprovider "$@" >"$LOGS/$name.log" 2>&1 || rc=$?
  echo $(( SECONDS - began )) >"$LOGS/$name.seconds"
  return $rc
}

echo "== pytest on ${cells[*]} (two at a time; logs in $LOGS/)"
declare -A status
pids=()
names=()
for name in "${cells[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge 2 ]; do sleep 1; done
  echo "   started $name"
  run_cell "$name" "$@" &
  pids+=($!)
  names+=("$name")
done
failed=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}"
  status[${names[$i]}]=$?
done
for name in "${names[@]}"; do
  echo
  echo "== $name: exit ${status[$name]} after $(cat "$LOGS/$name.seconds" 2>/dev/null || echo '?') s"
  if [ "${status[$name]}" != "0" ]; then
    failed=1
    tail -n 80 "$LOGS/$name.log"
  else
    tail -n 3 "$LOGS/$name.log"
  fi
done
exit $failed
