"""A task module that fails to import (the E007 check tests list it in TASK_MODULES)."""

from conductor_django import task


@task(name="never-registered")
def never_registered(event, ctx):
    return None


raise RuntimeError("broken_tasks fails on purpose")
