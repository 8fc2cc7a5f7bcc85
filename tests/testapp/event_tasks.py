"""Tasks of the events, model-trigger, retention, log and context tests.

Listed in ``CONDUCTOR["TASK_MODULES"]`` of the test settings.
"""

import logging
import threading
from datetime import timedelta

from conductor_django import Retention, task

from .models import Mark

plain_logger = logging.getLogger("tests.plain")


@task(name="greet-user", events=["user.created"])
def greet_user(event, ctx):
    Mark.add("greet", f"{event.name}:{event.payload}")
    return {"event": event.name, "payload": event.payload}


@task(name="audit-user", events=["user.created", "user.deleted"], invocable=False)
def audit_user(event, ctx):
    Mark.add("audit", event.name)
    return event.name


@task(name="article-created", on_model=("testapp.Article", "create"), fields=["title", "price"])
def article_created(event, ctx):
    ctx.logger.info("article %s created: %s", event.payload["pk"], event.payload["new"]["title"])
    ctx.logger.warning("price is %s", event.payload["new"]["price"])
    return {"name": event.name, "payload": event.payload}


@task(name="article-title-changed", on_model=("testapp.Article", "update"), fields=["title"])
def article_title_changed(event, ctx):
    return {"name": event.name, "payload": event.payload}


@task(name="article-deleted", on_model=("testapp.Article", "delete"))
def article_deleted(event, ctx):
    return {"name": event.name, "payload": event.payload}


@task(name="log-lines", max_attempts=2)
def log_lines(event, ctx):
    """Logs ``n`` tagged lines (waiting a little between them) from several sources."""
    tag, n = event.payload["tag"], event.payload.get("n", 3)
    for i in range(n):
        ctx.logger.info("%s line %d", tag, i)
        if event.payload.get("pause"):
            ctx.signal.wait(event.payload["pause"])
    ctx.logger.debug("%s debug line", tag)
    plain_logger.warning("%s plain warning", tag)
    plain_logger.info("%s plain info", tag)  # below the logger's level: not stored
    if event.payload.get("thread"):
        def background():
            ctx.logger.info("%s from a thread", tag)
            plain_logger.warning("%s plain from a thread", tag)  # not this thread: not stored

        t = threading.Thread(target=background)
        t.start()
        t.join()
    if event.payload.get("fail_until", 0) >= ctx.attempt:
        raise RuntimeError(f"{tag} fails on attempt {ctx.attempt}")
    return n


@task(name="kept-an-hour", retention=Retention(completed=timedelta(hours=1)))
def kept_an_hour(event, ctx):
    return None


@task(name="uses-context")
def uses_context(event, ctx):
    return {"build": ctx.services.build_number, "pid": ctx.services.pid,
            "greeting": ctx.services.greet(event.payload)}


@task(name="cancels-itself", max_attempts=1)
def cancels_itself(event, ctx):
    import conductor_django

    ctx.logger.info("about to cancel")
    conductor_django.cancel(ctx.execution_id, "changed my mind")
    ctx.checkpoint()
    ctx.logger.info("never logged")


@task(name="overruns", timeout=0.01, max_attempts=1)
def overruns(event, ctx):
    import time

    time.sleep(0.05)  # longer than the timeout, with no step boundary
    ctx.checkpoint()
