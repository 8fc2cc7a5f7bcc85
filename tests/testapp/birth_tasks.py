"""Tasks of the birth tests (tests/test_birth.py): a budget other than the default."""

from conductor_django import task

BUDGET = 5


@task(name="birth-budget", max_attempts=BUDGET, events=["birth.happened"])
def birth_budget(event, ctx):
    return ctx.step("one", lambda: 1)


@task(name="birth-parent", max_attempts=1)
def birth_parent(event, ctx):
    return ctx.invoke("child", "birth-budget", {"from": "parent"})
