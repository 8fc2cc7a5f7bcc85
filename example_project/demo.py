#!/usr/bin/env python
"""``make demo``: migrate the example project, start a worker and the admin, cancel a task.

Prints the admin URL and credentials, then invokes ``long-report``, waits until it is
running, cancels it and prints its final status and ``last_error``. Keeps the worker
and the admin running until Ctrl-C (``--once``: stop after the cancellation).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402

import conductor_django as conductor  # noqa: E402
from conductor_django.models import Execution, Step  # noqa: E402

USERNAME, PASSWORD = "admin", "admin"


def until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise SystemExit(f"demo: timed out waiting for {what}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--once", action="store_true", help="exit after the cancellation")
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", "8000")))
    args = parser.parse_args()

    call_command("migrate", interactive=False, verbosity=0)
    users = get_user_model().objects
    if not users.filter(username=USERNAME).exists():
        users.create_superuser(USERNAME, "admin@example.com", PASSWORD)

    manage = [sys.executable, str(HERE / "manage.py")]
    procs = [subprocess.Popen([*manage, "conductor_worker", "--concurrency", "4"], cwd=HERE)]
    if not args.once:
        procs.append(subprocess.Popen(
            [*manage, "runserver", "--noreload", f"127.0.0.1:{args.port}"], cwd=HERE))
    try:
        print(f"\nAdmin: http://127.0.0.1:{args.port}/admin/  user {USERNAME!r} "
              f"password {PASSWORD!r}\n", flush=True)
        # The README's quickstart.
        welcome = conductor.invoke("send-welcome-email", {"user": "ada@example.com"})
        print(f"send-welcome-email -> {conductor.wait(welcome, timeout=30)}", flush=True)
        assert conductor.cancel(welcome) is False  # it already finished

        eid = conductor.invoke("long-report", {"sections": 60})
        print(f"invoked long-report {eid}; waiting for it to run a few steps", flush=True)
        until(lambda: Step.objects.filter(execution_id=eid).count() >= 3, 60, "steps")
        print(f"status {conductor.get(eid).status}; cancelling it now", flush=True)
        conductor.cancel(eid, "Cancelled by user (demo)")
        row = until(lambda: (r := conductor.get(eid)).status in Execution.FINAL and r, 30,
                    "the cancellation")
        steps = Step.objects.filter(execution_id=eid).count()
        print(f"\nexecution {eid}\n  status:     {row.status}\n  last_error: {row.last_error}"
              f"\n  steps done: {steps} of 60\n", flush=True)
        if row.status != "cancelled":
            return 1
        if not args.once:
            print("Worker and admin are running; press Ctrl-C to stop.", flush=True)
            procs[-1].wait()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
