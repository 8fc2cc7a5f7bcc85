#!/usr/bin/env python
"""``make demo``: migrate the example project, start a worker and the admin, cancel a task.

Starts the worker and the admin (on port 8000, or on a free port when 8000 is taken),
waits until the admin answers, prints its URL and credentials, then invokes
``long-report``, waits until it is running, cancels it and prints its final status and
``last_error``. Keeps the worker and the admin running until Ctrl-C and prints the URL
and credentials again (``--once``: stop after the cancellation). Exits 1 as soon as the
worker or the admin dies.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
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


class Died(Exception):
    """The worker or the admin exited while the demo runs."""


def until(predicate, timeout: float, what: str, procs: dict):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check_alive(procs)
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise SystemExit(f"demo: timed out waiting for {what}")


def check_alive(procs: dict) -> None:
    for name, proc in procs.items():
        if proc.poll() is not None:
            raise Died(f"the {name} exited with status {proc.returncode}")


def free_port(wanted: int) -> tuple[int, bool]:
    """``wanted`` if nothing listens on it, else a free port chosen by the system.

    ``SO_REUSEADDR``, as ``runserver`` binds: a port left in TIME-WAIT by a demo stopped
    a moment ago is free for it (only a listening socket makes it busy)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", wanted))  # 0: any free port
            return sock.getsockname()[1], True
        except OSError:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1], False


def admin_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "login/", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def banner(url: str) -> str:
    return f"Admin: {url}  user {USERNAME!r} password {PASSWORD!r}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--once", action="store_true", help="exit after the cancellation")
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", "8000")))
    args = parser.parse_args()

    call_command("migrate", interactive=False, verbosity=0)
    users = get_user_model().objects
    if not users.filter(username=USERNAME).exists():
        users.create_superuser(USERNAME, "admin@example.com", PASSWORD)

    port, free = free_port(args.port)
    if not free:
        print(f"demo: port {args.port} is already in use; the admin uses port {port}",
              flush=True)
    url = f"http://127.0.0.1:{port}/admin/"
    manage = [sys.executable, str(HERE / "manage.py")]
    procs = {"worker": subprocess.Popen([*manage, "conductor_worker", "--concurrency", "4"],
                                        cwd=HERE)}
    procs["admin"] = subprocess.Popen([*manage, "runserver", "--noreload", f"127.0.0.1:{port}"],
                                      cwd=HERE)
    print(f"demo: worker pid {procs['worker'].pid}, admin pid {procs['admin'].pid}", flush=True)
    try:
        until(lambda: admin_answers(url), 60, "the admin to answer", procs)
        print(f"\n{banner(url)}\n", flush=True)
        # The README's quickstart.
        welcome = conductor.invoke("send-welcome-email", {"user": "ada@example.com"})
        until(lambda: conductor.get(welcome).status in Execution.FINAL, 30,
              "send-welcome-email", procs)
        result = conductor.wait(welcome, timeout=1)
        print(f"send-welcome-email -> {result}", flush=True)
        assert conductor.cancel(welcome) is False  # it already finished

        eid = conductor.invoke("long-report", {"sections": 60})
        print(f"invoked long-report {eid}; waiting for it to run a few steps", flush=True)
        until(lambda: Step.objects.filter(execution_id=eid).count() >= 3, 60, "steps", procs)
        print(f"status {conductor.get(eid).status}; cancelling it now", flush=True)
        conductor.cancel(eid, "Cancelled by user (demo)")
        row = until(lambda: (r := conductor.get(eid)).status in Execution.FINAL and r, 30,
                    "the cancellation", procs)
        steps = Step.objects.filter(execution_id=eid).count()
        print(f"\nexecution {eid}\n  status:     {row.status}\n  last_error: {row.last_error}"
              f"\n  steps done: {steps} of 60 (the cancelled section is not stored: a Retry"
              f" runs it again)\n", flush=True)
        if row.status != "cancelled":
            return 1
        print(banner(url), flush=True)
        if not args.once:
            print("Worker and admin are running; press Ctrl-C to stop.", flush=True)
            while True:
                check_alive(procs)
                time.sleep(0.5)
        return 0
    except Died as exc:
        print(f"demo: {exc}; stopping.", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
