"""Tasks of the SQLite wake-up tests (tests/test_wakeup.py): they append to a file,
outside every transaction, so a run that happened twice is visible."""

import os
import time

from conductor_django import task


def append(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(f"{line} {os.getpid()}\n")


@task(name="wake-record")
def wake_record(event, ctx):
    append(event.payload["file"], str(event.payload["n"]))


@task(name="wake-loop", max_attempts=1)
def wake_loop(event, ctx):
    """Runs until cancelled (at most a minute), recording when it notices the cancel
    and the length of the reason it was given."""
    path = event.payload["file"]
    append(path, "started")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if ctx.signal.wait(0.05):
            append(path, f"noticed {len(ctx.signal.message or '')}")
            ctx.checkpoint()
    return "not cancelled"
