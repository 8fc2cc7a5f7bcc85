"""The operator's second chance (SPEC §14.5) with real ``conductor_worker`` subprocesses:
retry from a step, fork, cancelling whole trees, attempt history and ``ctx.patched``."""

import pytest

import conductor_django as conductor
from conductor_django.models import Attempt, Execution, Step
from conductor_django.state.attempts import history
from tests.conftest import poll
from tests.testapp import operator_tasks, versions_v1  # noqa: F401  (registers the tasks)
from tests.testapp.models import Mark

TASKS = {"CONDUCTOR_TEST_TASK_MODULES": "tests.testapp.operator_tasks"}


def status_is(eid, *statuses):
    return lambda: Execution.objects.get(pk=eid).status in statuses


def ran(key):
    """How many times each step of five-steps ran (side effects outside transactions)."""
    return [Mark.count(f"{key}:s{n}") for n in range(1, 6)]


def steps_of(eid):
    return list(Step.objects.filter(execution_id=eid).order_by("id")
                .values_list("name", flat=True))


@pytest.mark.django_db(transaction=True)
def test_retry_from_step_4_runs_steps_4_and_5_only(start_worker):
    eid = conductor.invoke("five-steps", {"key": "r"})
    start_worker(env=TASKS)
    poll(status_is(eid, "failed"), message="fails at step 4")
    assert ran("r") == [1, 1, 1, 1, 0]
    assert steps_of(eid) == ["s1", "s2", "s3"]
    Mark.add("r:fixed")  # the bug fix is deployed
    with pytest.raises(ValueError, match="'nope'"):
        conductor.retry(eid, from_step="nope")
    assert Execution.objects.get(pk=eid).status == "failed"  # nothing written
    assert conductor.retry(eid, from_step="s3") is True  # s3 is discarded too
    poll(status_is(eid, "completed"), message="completes after the retry")
    assert ran("r") == [1, 1, 2, 2, 1]  # s1, s2 never re-ran
    assert conductor.get(eid).result == [1, 2, 3, 4, 5]
    views = history(Execution.objects.get(pk=eid))
    assert [(v.number, v.ended) for v in views] == [(1, "failed"), (1, "retried"),
                                                   (2, "completed")]
    assert "step 4 is broken" in views[0].error and views[0].worker is not None
    assert views[1].from_step == "s3" and views[2].worker is not None


@pytest.mark.django_db(transaction=True)
def test_a_plain_retry_after_the_fix_runs_steps_4_and_5_only(start_worker):
    eid = conductor.invoke("five-steps", {"key": "p"})
    start_worker(env=TASKS)
    poll(status_is(eid, "failed"), message="fails at step 4")
    Mark.add("p:fixed")
    assert conductor.retry(eid) is True  # s4 never finished: it resumes there
    poll(status_is(eid, "completed"), message="completes after the retry")
    assert ran("p") == [1, 1, 1, 2, 1]  # steps 1-3 never re-ran
    assert conductor.get(eid).result == [1, 2, 3, 4, 5]


@pytest.mark.django_db(transaction=True)
def test_retry_from_step_4_model_method_and_fork(start_worker):
    eid = conductor.invoke("five-steps", {"key": "f"})
    worker = start_worker(env=TASKS)
    poll(status_is(eid, "failed"), message="fails at step 4")
    Mark.add("f:fixed")
    original = Execution.objects.get(pk=eid)
    before = (original.status, original.attempts, original.last_error, steps_of(eid))
    new_id = conductor.fork(eid, "s2")
    poll(status_is(new_id, "completed"), message="the fork completes")
    original.refresh_from_db()
    assert (original.status, original.attempts, original.last_error,
            steps_of(eid)) == before  # left as it was
    fork = Execution.objects.get(pk=new_id)
    assert fork.forked_from_id == original.pk and list(original.forks.all()) == [fork]
    assert fork.payload == original.payload and fork.result == [1, 2, 3, 4, 5]
    assert ran("f") == [1, 2, 2, 2, 1]  # s1 copied, never re-ran
    # the model method: s4 was never recorded; from s3, s3..s5 run again
    with pytest.raises(ValueError, match="'s4'"):
        original.retry(from_step="s4")
    assert original.retry(from_step="s3", by="alice") is True
    poll(status_is(eid, "completed"), message="retried")
    assert ran("f") == [1, 2, 3, 3, 2]
    assert Attempt.objects.of(eid).get(ended="retried").retried_by == "alice"
    worker.signal(15)


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_grandparent_cancels_a_running_grandchild(start_worker):
    root = conductor.invoke("tree-node", {"key": "t", "depth": 2})
    start_worker("--concurrency", "4", env=TASKS)
    poll(lambda: Mark.count("t:0:started") == 1, message="the grandchild runs")
    child = Execution.objects.get(parent_id=root)
    grandchild = Execution.objects.get(parent_id=child.pk)
    poll(status_is(grandchild.pk, "running"))
    assert Execution.objects.descendants(root) == [child.pk, grandchild.pk]
    assert conductor.cancel(root, "Tree cut") is True
    poll(status_is(grandchild.pk, "cancelled"), message="the grandchild stops")
    for eid in (root, child.pk, grandchild.pk):
        poll(status_is(eid, "cancelled", "failed"))
        assert Execution.objects.get(pk=eid).last_error == "Tree cut"
    assert Execution.objects.get(pk=child.pk).status == "failed"  # it was waiting
    assert Attempt.objects.of(grandchild.pk).get().ended == "cancelled"


@pytest.mark.django_db(transaction=True)
def test_a_deploy_with_patched_keeps_old_executions_on_the_old_path(start_worker):
    # Two executions suspend under v1: one before the patched point, one after it.
    early = conductor.invoke("versioned", {"key": "e", "early": True, "nap": 1.5})
    late = conductor.invoke("versioned", {"key": "l", "nap": 1.5})
    old = start_worker(env={"CONDUCTOR_TEST_TASK_MODULES": "tests.testapp.versions_v1"})
    poll(lambda: status_is(early, "suspended")() and status_is(late, "suspended")(),
         message="both sleep under v1")
    assert steps_of(late) == ["a", "charge", "nap-late"] and steps_of(early) == ["a",
                                                                                "nap-early"]
    old.signal(15)
    old.wait(timeout=20)
    start_worker(env={"CONDUCTOR_TEST_TASK_MODULES": "tests.testapp.versions_v2"})  # deploy
    poll(lambda: status_is(early, "completed")() and status_is(late, "completed")(),
         timeout=30, message="both finish under v2")
    assert conductor.get(late).result == "old"  # it had passed the point: old path
    assert Mark.count("l:charge:v1") == 1 and Mark.count("l:charge:v2") == 0
    assert conductor.get(early).result == "new"  # it reached the point under v2
    assert Mark.count("e:charge:v2") == 1 and Mark.count("e:charge:v1") == 0
    # memoized: the early one resumed once more after nap-late and kept the new path
    assert "conductor.patched:charge-v2" in steps_of(early)
