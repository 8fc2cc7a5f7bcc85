"""emit(), task(events=...) and model triggers task(on_model=..., fields=...)."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_save
from django.urls import reverse
from django.utils import timezone

import conductor_django as conductor
from conductor_django.definitions.registry import build_task, register, unregister
from conductor_django.models import Execution, ExecutionLog
from conductor_django.testing import drain
from tests.conftest import poll
from tests.testapp.models import Article, FeaturedArticle, Mark


def rows(**filters):
    return list(Execution.objects.filter(**filters).order_by("task_name"))


# --- emit ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_emit_starts_one_execution_per_subscribed_task():
    ids = conductor.emit("user.created", {"id": 7})
    assert len(ids) == 2
    started = rows(pk__in=ids)
    assert [(e.task_name, e.event_name, e.payload, e.status) for e in started] == [
        ("audit-user", "user.created", {"id": 7}, "pending"),
        ("greet-user", "user.created", {"id": 7}, "pending"),
    ]
    assert drain() == 2
    results = {e.task_name: e.result for e in rows(pk__in=ids)}
    assert results == {
        "audit-user": "user.created",  # invocable=False does not stop events
        "greet-user": {"event": "user.created", "payload": {"id": 7}},
    }


@pytest.mark.django_db
def test_emit_reaches_only_the_subscribers_of_that_event():
    (eid,) = conductor.emit("user.deleted", {"id": 1})
    assert conductor.get(eid).task_name == "audit-user"
    assert conductor.emit("nobody.listens", {"id": 1}) == []
    assert Execution.objects.count() == 1


@pytest.mark.django_db
def test_emit_options_apply_to_every_execution():
    before = timezone.now()
    ids = conductor.emit("user.created", None, priority=5, delay=timedelta(minutes=5),
                         queue="events")
    started = rows(pk__in=ids)
    assert {(e.priority, e.queue) for e in started} == {(5, "events")}
    assert len({e.run_at for e in started}) == 1  # one moment for all of them
    assert started[0].run_at >= before + timedelta(minutes=5)
    assert drain() == 0  # delayed


@pytest.mark.django_db
def test_emit_bad_input_writes_nothing_and_keeps_the_transaction_usable():
    with transaction.atomic():
        with pytest.raises(TypeError, match="set"):
            conductor.emit("user.created", {"ids": {1, 2}})
        with pytest.raises(ValueError, match="event name"):
            conductor.emit("", {})
        with pytest.raises(TypeError, match="unknown options"):
            conductor.emit("user.created", {}, attempts=3)
        with pytest.raises(ValueError, match="delay"):
            conductor.emit("user.created", {}, delay=-1)
        assert Execution.objects.count() == 0
        assert len(conductor.emit("user.created", {"ok": True})) == 2
    assert Execution.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_emit_is_part_of_the_callers_transaction():
    with pytest.raises(RuntimeError), transaction.atomic():
        conductor.emit("user.created", {"id": 1})
        assert Execution.objects.count() == 2
        raise RuntimeError("roll back")
    assert Execution.objects.count() == 0
    with transaction.atomic():
        ids = conductor.emit("user.created", {"id": 2})
    assert Execution.objects.filter(pk__in=ids).count() == 2


def test_task_arguments_are_checked_at_definition_time():
    def f(event, ctx):
        return None

    with pytest.raises(TypeError, match="list of str"):
        build_task(f, name="t", events="user.created")
    with pytest.raises(ValueError, match="non-empty"):
        build_task(f, name="t", events=[""])
    with pytest.raises(TypeError, match="pair"):
        build_task(f, name="t", on_model="testapp.Article")
    with pytest.raises(ValueError, match="app_label.Model"):
        build_task(f, name="t", on_model=("Article", "create"))
    with pytest.raises(ValueError, match="create, update, delete"):
        build_task(f, name="t", on_model=("testapp.Article", "save"))
    with pytest.raises(ValueError, match="need on_model"):
        build_task(f, name="t", fields=["title"])
    with pytest.raises(TypeError, match="Retention"):
        build_task(f, name="t", retention={"completed": 60})
    t = build_task(f, name="t", events=["a", "b", "a"], on_model=["testapp.Article", "update"],
                   fields=("title",))
    assert (t.events, t.on_model, t.fields) == (("a", "b"), ("testapp.Article", "update"),
                                                ("title",))


# --- model triggers (in the test transaction: on_commit callbacks captured) -------------


@pytest.mark.django_db
def test_create_starts_an_execution_when_the_transaction_commits(
        django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        article = Article.objects.create(title="Hello", body="not listed", price=Decimal("9.50"))
        assert not Execution.objects.exists()  # nothing before the commit
    assert len(callbacks) == 1
    (ex,) = rows()
    assert ex.task_name == "article-created"
    assert ex.event_name == "testapp.article.create"
    assert ex.payload == {"pk": article.pk, "old": None,
                          "new": {"title": "Hello", "price": "9.50"}}
    assert drain() == 1
    ex.refresh_from_db()
    assert ex.result == {"name": "testapp.article.create", "payload": ex.payload}


@pytest.mark.django_db
def test_update_starts_only_when_a_listed_field_changes(django_capture_on_commit_callbacks):
    article = Article.objects.create(title="A")  # its on_commit callback never runs here
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        article.body = "changed, but not listed"
        article.save()
        article.save()  # no change at all
    assert callbacks == []
    with django_capture_on_commit_callbacks(execute=True):
        article.title = "B"
        article.save()
    (ex,) = rows()
    assert (ex.task_name, ex.event_name) == ("article-title-changed", "testapp.article.update")
    assert ex.payload == {"pk": article.pk, "old": {"title": "A"}, "new": {"title": "B"}}


@pytest.mark.django_db
def test_update_fields_that_leave_out_the_listed_fields_start_nothing(
        django_capture_on_commit_callbacks):
    article = Article.objects.create(title="A")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        article.title = "not saved"
        article.body = "saved"
        article.save(update_fields=["body"])
    assert callbacks == []
    with django_capture_on_commit_callbacks(execute=True):
        article.save(update_fields=["title"])
    (ex,) = rows()
    assert ex.payload["old"] == {"title": "A"} and ex.payload["new"] == {"title": "not saved"}


@pytest.mark.django_db
def test_delete_passes_the_old_values_of_every_field(django_capture_on_commit_callbacks):
    article = Article.objects.create(title="Bye", body="text", price=Decimal("1.25"))
    pk = article.pk
    with django_capture_on_commit_callbacks(execute=True):
        article.delete()
    (ex,) = rows()
    assert (ex.task_name, ex.event_name) == ("article-deleted", "testapp.article.delete")
    assert ex.payload == {"pk": pk, "new": None,
                          "old": {"title": "Bye", "body": "text", "price": "1.25"}}


@pytest.mark.django_db
def test_bulk_operations(django_capture_on_commit_callbacks):
    """bulk_create, update() and bulk_update() send no signals; QuerySet.delete() does."""
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        Article.objects.bulk_create([Article(title="x"), Article(title="y")])
        Article.objects.update(title="z")
        items = list(Article.objects.all())
        for item in items:
            item.title = "w"
        Article.objects.bulk_update(items, ["title"])
    assert callbacks == [] and not Execution.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        Article.objects.all().delete()
    assert sorted(e.payload["old"]["title"] for e in rows(task_name="article-deleted")) == \
        ["w", "w"]
    assert Execution.objects.count() == 2


@pytest.mark.django_db
def test_proxy_models_start_the_triggers_of_their_model(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        FeaturedArticle.objects.create(title="Proxy")
    (ex,) = rows()
    assert (ex.task_name, ex.event_name) == ("article-created", "testapp.article.create")


@pytest.mark.django_db
def test_raw_saves_start_nothing(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        Article(title="from a fixture").save_base(raw=True)
    assert callbacks == []


@pytest.mark.django_db
def test_receivers_are_connected_only_to_models_with_triggers():
    assert post_save.has_listeners(Article) and post_delete.has_listeners(Article)
    assert pre_save.has_listeners(Article)
    before = (pre_save.has_listeners(Mark), post_save.has_listeners(Mark),
              post_delete.has_listeners(Mark))
    assert before == (False, False, False)  # Mark keeps Django's fast deletes

    def f(event, ctx):
        return None

    register(build_task(f, name="mark-updated", on_model=("testapp.Mark", "update")))
    try:
        assert pre_save.has_listeners(Mark) and post_save.has_listeners(Mark)
        assert not post_delete.has_listeners(Mark)
    finally:
        unregister("mark-updated")
    assert (pre_save.has_listeners(Mark), post_save.has_listeners(Mark),
            post_delete.has_listeners(Mark)) == before


@pytest.mark.django_db(transaction=True)
def test_rolled_back_saves_start_nothing():
    with transaction.atomic():
        Article.objects.create(title="outer")
        try:
            with transaction.atomic():
                Article.objects.create(title="inner")
                raise RuntimeError("roll back the savepoint")
        except RuntimeError:
            pass
        assert not Execution.objects.exists()
    with pytest.raises(RuntimeError), transaction.atomic():
        Article.objects.create(title="rolled back")
        raise RuntimeError("roll back")
    assert [e.payload["new"]["title"] for e in rows()] == ["outer"]


@pytest.mark.django_db(transaction=True)
def test_a_save_runs_on_a_real_worker_and_shows_its_log_lines_in_the_admin(
        start_worker, admin_client):
    worker = start_worker("--concurrency", "2")
    article = Article.objects.create(title="<b>Escaped</b>", price=Decimal("3.00"))
    ex = poll(lambda: Execution.objects.filter(task_name="article-created",
                                               status="completed").first(),
              timeout=30, message=f"the trigger's execution to finish\n{worker.output()}")
    assert ex.payload["pk"] == article.pk
    lines = list(ExecutionLog.objects.filter(execution=ex).values_list("level", "message"))
    assert lines == [(20, f"article {article.pk} created: <b>Escaped</b>"),
                     (30, "price is 3.00")]
    page = admin_client.get(reverse("admin:conductor_django_execution_change", args=[ex.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert f"article {article.pk} created: &lt;b&gt;Escaped&lt;/b&gt;" in html
    assert "<b>Escaped</b>" not in html
    assert "price is 3.00" in html and "WARNING" in html
