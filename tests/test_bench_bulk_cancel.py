"""bench/bulk_cancel.py runs end to end (at a small N, on SQLite in a file of its own)."""

from tests.bench_scripts import run_bench_script


def test_the_bulk_cancel_benchmark_cancels_every_pending_execution(tmp_path):
    # more than the admin acts on inside its request: the background task does it
    result = run_bench_script("bulk_cancel.py", ["--db", "sqlite", "--n", "700"],
                              tmp_path / "result.json",
                              BENCH_SQLITE_PATH=str(tmp_path / "bench.sqlite3"))
    assert result["task_status"] == "completed"
    assert result["cancelled_with_reason"] == 700
    assert result["task_result"] == {"changed": 700, "seen": 700}
    assert result["progress_last"][-1][1] == 700
