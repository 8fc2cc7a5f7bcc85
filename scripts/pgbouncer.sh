#!/usr/bin/env bash
# Start PgBouncer in transaction pooling mode in front of the local PostgreSQL, for the
# dj52-pgbouncer cell of the test matrix (and for trying conductor_django behind a
# pooler by hand). Idempotent: does nothing when something already answers on the port.
#
#   127.0.0.1:${CONDUCTOR_PGBOUNCER_PORT:-6432}  ->  ${CONDUCTOR_PG_HOST:-127.0.0.1}:${CONDUCTOR_PG_PORT:-5432}
#
# Every database name is passed through (`* = ...`), so Django's test runner can create
# and use its test database through it; no passwords (auth_type = trust, the server's
# own pg_hba decides). The configuration, log and pid file are in $DIR (/tmp by default:
# PgBouncer refuses to run as root, so it runs as the postgres user, who must write there).
# `scripts/pgbouncer.sh stop` stops the one this script started.
set -euo pipefail
PORT="${CONDUCTOR_PGBOUNCER_PORT:-6432}"
PGHOST_="${CONDUCTOR_PG_HOST:-127.0.0.1}"
PGPORT_="${CONDUCTOR_PG_PORT:-5432}"
DIR="${CONDUCTOR_PGBOUNCER_DIR:-/tmp/conductor-pgbouncer-$PORT}"
RUN_AS="${CONDUCTOR_PGBOUNCER_USER:-postgres}"

if [ "${1:-start}" = "stop" ]; then
  if [ -f "$DIR/pgbouncer.pid" ]; then kill "$(cat "$DIR/pgbouncer.pid")" 2>/dev/null || true; fi
  exit 0
fi

if pg_isready -h 127.0.0.1 -p "$PORT" -q 2>/dev/null; then
  exit 0  # already running (ours from an earlier run, or the machine's own)
fi
if ! command -v pgbouncer >/dev/null; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "installing pgbouncer"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends pgbouncer; } >/dev/null
  else
    echo "pgbouncer is not installed (and no root to install it)" >&2
    exit 1
  fi
fi

mkdir -p "$DIR"
cat >"$DIR/pgbouncer.ini" <<INI
[databases]
* = host=$PGHOST_ port=$PGPORT_

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PORT
unix_socket_dir =
auth_type = trust
auth_file = $DIR/userlist.txt
admin_users = postgres
pool_mode = transaction
max_client_conn = 2000
default_pool_size = 20
reserve_pool_size = 5
server_check_delay = 1
ignore_startup_parameters = extra_float_digits
logfile = $DIR/pgbouncer.log
pidfile = $DIR/pgbouncer.pid
INI
printf '"%s" ""\n' postgres "${CONDUCTOR_PG_USER:-postgres}" | sort -u >"$DIR/userlist.txt"
if [ "$(id -u)" = "0" ]; then
  chown -R "$RUN_AS" "$DIR"
  pgbouncer -d -u "$RUN_AS" "$DIR/pgbouncer.ini"
else
  pgbouncer -d "$DIR/pgbouncer.ini"
fi
for _ in $(seq 1 30); do
  pg_isready -h 127.0.0.1 -p "$PORT" -q && exit 0
  sleep 0.2
done
echo "PgBouncer did not start on 127.0.0.1:$PORT; its log:" >&2
tail -n 20 "$DIR/pgbouncer.log" >&2 || true
exit 1
