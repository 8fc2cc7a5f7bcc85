"""bench/bulk_cancel.py runs end to end (at a small N, on SQLite in a file of its own):
its numbers go in docs/performance.md, so the script must keep working."""

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_the_bulk_cancel_benchmark_cancels_every_pending_execution(tmp_path):
    out = tmp_path / "result.json"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["BENCH_SQLITE_PATH"] = str(tmp_path / "bench.sqlite3")
    # more than the admin acts on inside its request: the background task does it
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bulk_cancel.py"), "--db", "sqlite", "--n", "700",
         "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["task_status"] == "completed"
    assert result["cancelled_with_reason"] == 700
    assert result["task_result"] == {"changed": 700, "seen": 700}
    assert result["progress_last"][-1][1] == 700
