"""The benchmark's saved runs: the change against the previous run flags regressions."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"
spec = importlib.util.spec_from_file_location("bench_history", BENCH / "history.py")
history = importlib.util.module_from_spec(spec)
spec.loader.exec_module(history)


def row(key, value, higher=True):
    return {"key": key, "label": key, "value": value, "unit": "", "higher_is_better": higher,
            "text": str(value)}


def test_compare_flags_rows_worse_by_more_than_ten_percent():
    before = [row("drain", 1000), row("latency", 2.0, higher=False), row("bulk", 100)]
    now = [row("drain", 890), row("latency", 2.3, higher=False), row("bulk", 95),
           row("cancel", 1.0, higher=False)]
    lines, regressed = history.compare(now, before)
    assert regressed == ["drain", "latency"]  # -11 % rate, +15 % latency; bulk -5 % is noise
    assert any("| cancel | - | 1.0 | new |" == line for line in lines)
    assert history.change(1.8, 2.0, higher_is_better=False) > 0  # a lower latency is better


def test_save_and_find_the_previous_run(tmp_path):
    first = history.save({"db": "sqlite", "n": 10}, [row("drain", 1)], tmp_path)
    other_n = history.save({"db": "sqlite", "n": 20}, [row("drain", 1)], tmp_path)
    second = history.save({"db": "sqlite", "n": 10}, [row("drain", 2)], tmp_path)
    assert len({first, other_n, second}) == 3
    assert history.previous(tmp_path, "sqlite", 10, exclude=second) == first
    assert history.previous(tmp_path, "postgres", 10) is None
