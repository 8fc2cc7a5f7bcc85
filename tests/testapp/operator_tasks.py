"""Tasks of the operator tests (tests/test_operator.py): retry from a step, fork, trees.

Every side effect is a ``Mark`` written in autocommit, outside any transaction of the
handler, so a step that ran is counted even if its attempt failed afterwards.
"""

from conductor_django import NonRetryableError, task
from tests.testapp.models import Mark


@task(name="five-steps", max_attempts=1)
def five_steps(event, ctx):
    """Steps s1..s5; s4 fails until the mark ``<key>:fixed`` exists (the "bug fix")."""
    key = event.payload["key"]
    done = []
    for n in range(1, 6):
        def run(n=n):
            Mark.add(f"{key}:s{n}")
            if n == 4 and not Mark.count(f"{key}:fixed"):
                raise NonRetryableError("step 4 is broken")
            return n
        done.append(ctx.step(f"s{n}", run))
    return done


@task(name="tree-node", max_attempts=1)
def tree_node(event, ctx):
    """Invokes a child down to ``depth`` 0; the leaf runs steps until cancelled."""
    key, depth = event.payload["key"], event.payload["depth"]
    Mark.add(f"{key}:{depth}:started")
    if depth > 0:
        return ctx.invoke("child", "tree-node", {"key": key, "depth": depth - 1})
    n = 0
    while n < 4000:
        n += 1
        ctx.step(f"tick-{n}", lambda: ctx.signal.wait(0.05) and None)
    return "not cancelled"
