"""bench/held_snapshot.py runs end to end (a small N, on a PostgreSQL database of its
own): its numbers go in docs/performance.md, so the script must keep working."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's VACUUM")
def test_the_held_snapshot_benchmark_drains_everything_and_sees_the_transaction(tmp_path):
    out = tmp_path / "result.json"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    # a database of its own: two cells of the matrix may run at once
    env["BENCH_PG_NAME"] = f"{connection.settings_dict['NAME']}_held"
    env["BENCH_WORKER_LOG"] = str(tmp_path / "worker.log")
    env["BENCH_LONG_TRANSACTION"] = "1"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "held_snapshot.py"), "--n", "300", "--rounds", "1",
         "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    plain, held = result["rounds"]
    assert not plain["held"] and held["held"] and held["warned"]
    assert held["dead_versions"] >= 0 and held["table_mb"] > 0
