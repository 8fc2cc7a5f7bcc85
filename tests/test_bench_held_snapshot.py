"""bench/held_snapshot.py runs end to end (a small N, on a PostgreSQL database of its own)."""

import pytest
from django.db import connection

from tests.bench_scripts import run_bench_script


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's VACUUM")
def test_the_held_snapshot_benchmark_drains_everything_and_sees_the_transaction(tmp_path):
    result = run_bench_script(
        "held_snapshot.py", ["--n", "300", "--rounds", "1"], tmp_path / "result.json",
        # a database of its own: two cells of the matrix may run at once
        BENCH_PG_NAME=f"{connection.settings_dict['NAME']}_held",
        BENCH_WORKER_LOG=str(tmp_path / "worker.log"), BENCH_LONG_TRANSACTION="1")
    plain, held = result["rounds"]
    assert not plain["held"] and held["held"] and held["warned"]
    assert held["dead_versions"] >= 0 and held["table_mb"] > 0
