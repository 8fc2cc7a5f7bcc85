"""Functions decorated with Django's task decorator: ``django.tasks`` on Django 6, the
``django_tasks`` backport on Django 5.2.

Deliberately not named ``tasks.py``: workers find them by their module path alone.
"""

import asyncio

from tests.tasks_api import task

from .models import Mark


@task()
def add(a, b):
    Mark.add("dtask:add", f"{a}+{b}")
    return a + b


@task(priority=10, queue_name="other")
def on_other_queue(key):
    Mark.add(key, "other")
    return {"queue": "other"}


@task(takes_context=True)
def with_context(context, key):
    Mark.add(key, context.task_result.id)
    return {"id": context.task_result.id, "attempt": context.attempt,
            "status": str(context.task_result.status)}


@task()
def explode(message):
    raise ValueError(message)


@task()
def wait_for_mark(key, seconds=20):
    """Runs until the test adds the mark ``<key>:go`` (or ``seconds`` pass)."""
    import time

    Mark.add(f"{key}:started")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not Mark.count(f"{key}:go"):
        time.sleep(0.05)
    return "done"


@task(max_attempts=3)
def flaky(key):
    """Fails on its first two attempts (conductor's own option: max_attempts=3)."""
    Mark.add(f"{key}:attempt")
    if Mark.count(f"{key}:attempt") < 3:
        raise RuntimeError(f"attempt {Mark.count(f'{key}:attempt')} failed")
    return "third time lucky"


@task()
def system_exit():
    raise SystemExit("This Task failed due to SystemExit")


@task()
def keyboard_interrupt():
    raise KeyboardInterrupt("This Task failed due to KeyboardInterrupt")


@task()
def unserialisable_return():
    return lambda: True  # neither JSON nor picklable


@task()
async def async_add(a, b):
    await asyncio.sleep(0)
    return a + b
