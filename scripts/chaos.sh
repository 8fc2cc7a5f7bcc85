#!/usr/bin/env bash
# make chaos: the chaos tests (pytest marker "chaos") at full scale on SQLite, then on
# PostgreSQL, and one summary line per scenario at the end. CONDUCTOR_CHAOS_SCALE=small
# or CONDUCTOR_CHAOS_<KEY>=N (tests/chaos_support.py) make it shorter; pytest arguments
# pass through (e.g. -k sigstop).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
export CONDUCTOR_CHAOS_SCALE="${CONDUCTOR_CHAOS_SCALE:-full}"
summary="$(mktemp)"
trap 'rm -f "$summary"' EXIT
status=0
for db in sqlite postgres; do
  echo "== chaos tests on $db ($CONDUCTOR_CHAOS_SCALE scale)"
  start=$(date +%s)
  CONDUCTOR_TEST_DB=$db CONDUCTOR_CHAOS_SUMMARY="$summary" \
    "$PY" -m pytest -m chaos -q -p no:cacheprovider --tb=short "$@" || status=1
  echo "== $db: $(( $(date +%s) - start )) s"
done
echo "== chaos summary"
cat "$summary"
exit $status
