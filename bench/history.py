"""Saved runs of ``bench/run.py``: each run's table as JSON, and its change against the
previous run on the same database.

A run is saved as ``bench/results/<db>-<UTC time>.json`` (``--results-dir``); the
previous run is the newest saved file of the same database and N. A row whose value
moved the wrong way by more than ``THRESHOLD`` (a rate that fell, a latency or a memory
figure that rose) is flagged ``REGRESSED``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

#: A row that got worse by more than this share is flagged.
THRESHOLD = 0.10


def save(result: dict[str, Any], rows: list[dict[str, Any]], directory: Path) -> Path:
    """Write ``result`` with its table ``rows``; returns the file written."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = directory / f"{result['db']}-{stamp}.json"
    n = 1
    while path.exists():  # two runs in one second
        n += 1
        path = directory / f"{result['db']}-{stamp}-{n}.json"
    path.write_text(json.dumps({**result, "rows": rows, "saved_at": stamp}, indent=2) + "\n")
    return path


def previous(directory: Path, db: str, n: int, exclude: Path | None = None) -> Path | None:
    """The newest saved run of ``db`` with the same N (``None`` if there is none)."""
    found = []
    for path in directory.glob(f"{db}-*.json"):
        if exclude is not None and path.resolve() == exclude.resolve():
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data.get("db") == db and data.get("n") == n and data.get("rows"):
            found.append((data.get("saved_at", ""), path.name, path))
    return max(found)[2] if found else None


def change(value: float, before: float, higher_is_better: bool) -> float:
    """How much better (positive) or worse (negative) ``value`` is than ``before``, as a
    share of ``before``."""
    if not before:
        return 0.0
    moved = (value - before) / before
    return moved if higher_is_better else -moved


def compare(rows: list[dict[str, Any]], before_rows: list[dict[str, Any]],
            threshold: float = THRESHOLD) -> tuple[list[str], list[str]]:
    """The comparison table's lines, and the labels of the rows that regressed."""
    old = {r["key"]: r for r in before_rows}
    lines = ["| metric | previous | now | change |", "|---|---|---|---|"]
    regressed = []
    for row in rows:
        was = old.get(row["key"])
        if was is None:
            lines.append(f"| {row['label']} | - | {row['text']} | new |")
            continue
        better = change(row["value"], was["value"], row["higher_is_better"])
        flag = ""
        if better < -threshold:
            flag = " REGRESSED"
            regressed.append(row["label"])
        lines.append(f"| {row['label']} | {was['text']} | {row['text']} | "
                     f"{better:+.0%} ({'better' if better >= 0 else 'worse'}){flag} |")
    return lines, regressed
