"""The "web process" of the SQLite locking chaos test: calls conductor's API many times
while a worker runs on the same database, and prints what failed as one JSON line.

``python -m tests.chaos_caller <event log> <calls>``, with the settings and database of
the test in the environment (tests/test_chaos_sqlite.py starts it).
"""

from __future__ import annotations

import json
import sys
import traceback
from collections import Counter
from typing import Any


def main(log: str, calls: int) -> dict[str, Any]:
    import django

    django.setup()
    import conductor_django as conductor

    errors: Counter[str] = Counter()
    examples: list[str] = []
    invoked: list[str] = []
    done = 0
    for i in range(calls):
        op = i % 5
        try:
            if op == 0:
                invoked.append(conductor.invoke("chaos-steps",
                                                {"log": log, "steps": 2, "pause": 0.01}))
            elif op == 1:
                conductor.schedule("chaos-noop", f"c-{i}", "0 0 1 1 *", payload={"i": i})
            elif op == 2:
                invoked.append(conductor.invoke("chaos-scheduler", {"log": log}))
            elif op == 3:
                conductor.cancel(invoked[-1], f"reason-{i}")
            else:
                conductor.unschedule("chaos-noop", f"c-{i - 3}")
            done += 1
        except Exception as exc:  # noqa: BLE001 - counted and reported, that is the test
            kind = "locked" if "database is locked" in str(exc) else type(exc).__name__
            errors[kind] += 1
            if len(examples) < 5:
                examples.append(f"call {i} (op {op}): "
                                + "".join(traceback.format_exception_only(exc)).strip())
    return {"calls": calls, "ok": done, "errors": dict(errors), "examples": examples,
            "invoked": len(invoked)}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
