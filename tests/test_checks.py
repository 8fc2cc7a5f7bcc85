"""System checks of the CONDUCTOR settings and of the tasks (``manage.py check``)."""

import os
import subprocess
import sys
from datetime import timedelta

import pytest

from conductor_django import Cron, Retention
from conductor_django.checks import check_cron_traps, check_settings, check_tasks
from conductor_django.definitions.registry import (
    all_tasks,
    autodiscover,
    build_task,
    import_errors,
    register,
    unregister,
)
from tests.conftest import ROOT


def ids(errors):
    return [e.id for e in errors]


@pytest.fixture
def conductor_settings(settings):
    def change(**values):
        settings.CONDUCTOR = {**settings.CONDUCTOR, **values}

    return change


def test_the_test_settings_pass():
    assert check_settings() == []
    assert check_tasks() == []


def test_unknown_key_names_it_and_lists_the_valid_ones(conductor_settings):
    conductor_settings(LOG_LINE=10)
    (error,) = check_settings()
    assert error.id == "conductor_django.E001"
    assert "'LOG_LINE'" in error.msg
    assert "LOG_LINES" in error.hint and "CLEANUP_INTERVAL" in error.hint


@pytest.mark.parametrize("key, value, text", [
    ("LOG_LINES", "100", "must be int"),
    ("LOG_LINES", True, "must be int"),
    ("LOG_LINES", -1, "must not be negative"),
    ("LOG_LEVEL", "LOUD", "not a logging level"),
    ("LOG_LEVEL", 1.5, "must be str or int"),
    ("CLEANUP_INTERVAL", 0, "must be positive"),
    ("CLEANUP_INTERVAL", "hourly", "must be int or float"),
    ("CLEANUP_BATCH_SIZE", 0, "at least 1"),
    ("TASK_MODULES", ["ok.module", 3], "module paths"),
    ("RETENTION", [7], "must be Retention or dict or NoneType"),
    ("CONTEXT", 3, "must be str or NoneType"),
])
def test_bad_values(conductor_settings, key, value, text):
    conductor_settings(**{key: value})
    (error,) = check_settings()
    assert error.id == "conductor_django.E002"
    assert text in error.msg and repr(key) in error.msg


@pytest.mark.parametrize("value", [
    None, Retention(completed=timedelta(days=7)), {"completed": 3600, "failed": None},
])
def test_good_retention(conductor_settings, value):
    conductor_settings(RETENTION=value, LOG_LEVEL="debug", LOG_LINES=0)
    assert check_settings() == []


@pytest.mark.parametrize("value, text", [
    ({"completed": -1}, "must not be negative"),
    ({"kept": 3600}, "unknown retention keys"),
    ({"failed": "30d"}, "Retention.failed"),
])
def test_bad_retention(conductor_settings, value, text):
    conductor_settings(RETENTION=value)
    (error,) = check_settings()
    assert error.id == "conductor_django.E005"
    assert text in error.msg


@pytest.mark.parametrize("path, text", [
    ("tests.testapp.context.nothing_here", "cannot be imported"),
    ("no_such_module.build", "cannot be imported"),
    ("tests.testapp.context.BUILDS", "not callable"),
])
def test_bad_context(conductor_settings, path, text):
    conductor_settings(CONTEXT=path)
    (error,) = check_settings()
    assert error.id == "conductor_django.E006"
    assert text in error.msg and path in error.msg


def test_a_task_module_that_fails_to_import(conductor_settings):
    conductor_settings(TASK_MODULES=["tests.testapp.event_tasks", "tests.testapp.broken_tasks"])
    try:
        autodiscover()  # logs the error, does not raise
        (error,) = check_tasks()
        assert error.id == "conductor_django.E007"
        assert "'tests.testapp.broken_tasks'" in error.msg
        assert "RuntimeError: broken_tasks fails on purpose" in error.msg
        assert "never-registered" not in all_tasks()  # the half-imported module is undone
        assert "greet-user" in all_tasks()
    finally:
        import_errors.pop("tests.testapp.broken_tasks", None)
    assert check_tasks() == []


@pytest.mark.parametrize("on_model, fields, text", [
    (("testapp.Nothing", "create"), None, "Nothing"),
    (("testapp.Article", "update"), ["title", "nope"], "has no field 'nope'"),
])
def test_model_triggers_naming_unknown_models_or_fields(on_model, fields, text):
    def handler(event, ctx):
        return None

    register(build_task(handler, name="bad-trigger", on_model=on_model, fields=fields))
    try:
        (error,) = check_tasks()
    finally:
        unregister("bad-trigger")
    assert error.id == "conductor_django.E008"
    assert "'bad-trigger'" in error.msg and text in error.msg


def test_a_task_cron_that_fires_every_second_of_a_minute_is_warned_about():
    def handler(event, ctx):
        return None

    assert check_cron_traps() == []
    register(build_task(handler, name="quartz-cron",
                        cron=["*/5 * * * *", Cron("0 */5 * * * *", name="five")]))
    try:
        (warning,) = check_cron_traps()
    finally:
        unregister("quartz-cron")
    assert warning.id == "conductor_django.W003"
    assert "'quartz-cron'" in warning.msg and "'five'" in warning.msg
    assert "'*/5 * * * * 0'" in warning.msg  # the seconds-last reading of it


def run_check(**env):
    return subprocess.run(
        [sys.executable, "-m", "django", "check"], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT),
             **env}, timeout=120,
    )


def test_manage_py_check_reports_a_broken_task_module_instead_of_crashing():
    broken = run_check(CONDUCTOR_TEST_TASK_MODULES="tests.testapp.broken_tasks")
    assert broken.returncode == 1, broken.stderr
    assert "(conductor_django.E007) Task module 'tests.testapp.broken_tasks' could not be " \
        "imported: RuntimeError: broken_tasks fails on purpose" in broken.stderr
    assert "SystemCheckError" in broken.stderr
    fine = run_check()
    assert fine.returncode == 0, fine.stderr
    assert "no issues" in fine.stdout
