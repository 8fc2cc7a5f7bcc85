"""Prometheus metrics (docs/observability.md): the endpoint of ``conductor_django.urls``
and ``conductor_worker --metrics-port``, read with prometheus_client's own text parser
while a real worker runs executions."""

from __future__ import annotations

import socket
import urllib.request

import pytest

pytest.importorskip("prometheus_client")

from django.contrib.auth.models import User  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

import conductor_django as conductor  # noqa: E402
from conductor_django.models import Execution, Worker  # noqa: E402
from tests.conftest import poll  # noqa: E402
from tests.settings import CONDUCTOR  # noqa: E402

URL = "/conductor/metrics"


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a scrape: (name, labels) -> value, parsed by prometheus_client."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scrape: dict, name: str, **labels: str) -> float | None:
    return scrape.get((name, frozenset(labels.items())))


def staff_client() -> Client:
    client = Client()
    client.force_login(User.objects.create_user("ops", is_staff=True))
    return client


def scrape(client: Client) -> dict:
    response = client.get(URL)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return samples(response.content.decode())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.django_db
def test_access_staff_token_or_nobody():
    assert Client().get(URL).status_code == 401  # anonymous
    user = Client()
    user.force_login(User.objects.create_user("someone"))
    assert user.get(URL).status_code == 403  # logged in, not staff
    assert staff_client().get(URL).status_code == 200
    bearer = {"HTTP_AUTHORIZATION": "Bearer s3cret"}
    assert Client().get(URL, **bearer).status_code == 401  # no token configured
    with override_settings(CONDUCTOR={**CONDUCTOR, "METRICS_TOKEN": "s3cret"}):
        assert Client().get(URL, **bearer).status_code == 200
        assert Client().get(URL, HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
        assert Client().get(URL, HTTP_AUTHORIZATION="Basic s3cret").status_code == 401
    assert Client().post(URL, **bearer).status_code in (401, 405)


@pytest.mark.django_db
def test_the_gauges_read_the_database():
    for n in range(3):
        conductor.invoke("echo", {"n": n})
    conductor.invoke("echo", {"n": 9}, queue="slow", delay=3600)  # not runnable yet
    scraped = scrape(staff_client())
    assert value(scraped, "conductor_executions", task="echo", queue="default",
                 status="pending") == 3
    assert value(scraped, "conductor_executions", task="echo", queue="slow",
                 status="pending") == 1
    assert value(scraped, "conductor_queue_runnable", queue="default") == 3
    assert value(scraped, "conductor_queue_runnable", queue="slow") == 0
    assert value(scraped, "conductor_queue_lag_seconds", queue="slow") == 0
    assert 0 <= value(scraped, "conductor_queue_lag_seconds", queue="default") < 60
    assert value(scraped, "conductor_workers", role="worker") == 0


@pytest.mark.django_db(transaction=True)
def test_the_numbers_move_as_a_real_worker_runs_executions(start_worker):
    client = staff_client()
    for n in range(3):
        conductor.invoke("echo", {"n": n})
    conductor.invoke("always-fails")  # two attempts: retrying, then failed
    waiting = conductor.invoke("wait-for-signal", {"key": "m1", "seconds": 60})
    before = scrape(client)
    assert value(before, "conductor_queue_runnable", queue="default") == 5
    assert value(before, "conductor_executions", task="echo", queue="default",
                 status="pending") == 3

    port = free_port()
    start_worker("--concurrency", "2", "--metrics-port", str(port))

    def running():
        now = scrape(client)
        done = value(now, "conductor_executions_recently_finished", task="echo",
                     queue="default", status="completed")
        failed = value(now, "conductor_executions_recently_finished", task="always-fails",
                       queue="default", status="failed")
        return now if done == 3 and failed == 1 and value(
            now, "conductor_queue_running", queue="default") == 1 else None

    during = poll(running, timeout=60, interval=0.2,
                  message="echo done, always-fails failed, the waiter running")
    assert value(during, "conductor_workers", role="worker") == 1
    assert value(during, "conductor_executions", task="wait-for-signal", queue="default",
                 status="running") == 1
    assert value(during, "conductor_queue_runnable", queue="default") == 0
    assert value(during, "conductor_executions", task="echo", queue="default",
                 status="pending") is None

    conductor.cancel(waiting, "enough")
    poll(lambda: not Execution.objects.unfinished().exists(), timeout=60,
         message="every execution finished")
    after = scrape(client)
    assert value(after, "conductor_executions_recently_finished", task="wait-for-signal",
                 queue="default", status="cancelled") == 1
    assert value(after, "conductor_queue_running", queue="default") is None

    # the worker's own counters, from its --metrics-port
    def worker_scrape():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            got = samples(r.read().decode())
        cancels = value(got, "conductor_cancels_total", task="wait-for-signal", queue="default")
        return got if cancels == 1 else None

    own = poll(worker_scrape, timeout=30, interval=0.2, message="the worker counted the cancel")
    assert value(own, "conductor_executions_started_total", task="echo", queue="default") == 3
    assert value(own, "conductor_executions_finished_total", task="echo", queue="default",
                 outcome="completed") == 3
    assert value(own, "conductor_executions_finished_total", task="always-fails",
                 queue="default", outcome="retrying") == 1
    assert value(own, "conductor_executions_finished_total", task="always-fails",
                 queue="default", outcome="failed") == 1
    assert value(own, "conductor_retries_total", task="always-fails", queue="default") == 1
    assert value(own, "conductor_execution_duration_seconds_count", task="echo") == 3
    assert value(own, "conductor_execution_duration_seconds_count", task="wait-for-signal") == 1
    assert value(own, "process_cpu_seconds_total") is not None  # the process's own metrics
    assert Worker.objects.count() == 1


@pytest.mark.django_db
def test_a_batch_counts_each_item_in_the_process_that_ran_it():
    from prometheus_client import REGISTRY

    from conductor_django.testing import drain

    def count(name, **labels):
        return REGISTRY.get_sample_value(name, {"task": "batched", **labels}) or 0

    started = count("conductor_executions_started_total", queue="default")
    done = count("conductor_executions_finished_total", queue="default", outcome="completed")
    runs = count("conductor_execution_duration_seconds_count")
    for n in range(3):
        conductor.invoke("batched", n)
    drain()
    assert count("conductor_executions_started_total", queue="default") == started + 3
    assert count("conductor_executions_finished_total", queue="default",
                 outcome="completed") == done + 3
    assert count("conductor_execution_duration_seconds_count") == runs + 3
    # the endpoint serves them too (the default registry of the serving process)
    scraped = scrape(staff_client())
    assert value(scraped, "conductor_executions_started_total", task="batched",
                 queue="default") == started + 3


@pytest.mark.django_db
def test_an_operators_cancel_is_not_counted_as_failed():
    from django.utils import timezone

    from tests.test_admin import make

    waiting = make("suspended", task_name="approve", attempts=1, started_at=timezone.now(),
                   run_at=None)
    pending = make("pending", task_name="approve")
    make("failed", task_name="approve", last_error="boom")
    assert conductor.cancel(waiting.pk) and conductor.cancel(pending.pk)
    now = scrape(staff_client())
    assert value(now, "conductor_executions_recently_finished", task="approve",
                 queue="default", status="failed") == 1
    assert value(now, "conductor_executions_recently_finished", task="approve",
                 queue="default", status="cancelled_before_finishing") == 2
