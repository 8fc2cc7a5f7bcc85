"""The CONDUCTOR setting: defaults, override_settings, and system checks with ids."""

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from conductor_django import conf
from conductor_django.checks import check_settings


def ids(errors):
    return [e.id for e in errors]


def test_defaults_and_override_settings_are_seen():
    assert conf.get("DEFAULT_QUEUE") == "default"
    with override_settings(CONDUCTOR={"DEFAULT_QUEUE": "other"}):
        assert conf.get("DEFAULT_QUEUE") == "other"
        assert conf.get("WORKER_DEAD_AFTER") == 30.0
    assert conf.get("DEFAULT_QUEUE") == "default"


@pytest.mark.parametrize(("value", "expected"), [
    ({"POLL_INTERVALL": 1}, ["conductor_django.E001"]),
    ({"POLL_INTERVAL": "fast"}, ["conductor_django.E002"]),
    ({"POLL_INTERVAL": 0}, ["conductor_django.E002"]),
    ({"CANCEL_POLL_INTERVAL": True}, ["conductor_django.E002"]),
    ({"TASK_MODULES": "a.b"}, ["conductor_django.E002"]),
    ({"ENGINE": "celery"}, ["conductor_django.E004"]),
    ("not a dict", ["conductor_django.E003"]),
    ({"POLL_INTERVAL": 0.5, "DEFAULT_QUEUE": "q"}, []),
])
def test_checks_report_bad_settings(value, expected):
    with override_settings(CONDUCTOR=value):
        assert ids(check_settings()) == expected


def test_unknown_key_error_names_it_and_lists_valid_keys():
    with override_settings(CONDUCTOR={"POLL_INTERVALL": 1}):
        (error,) = check_settings()
    assert "POLL_INTERVALL" in error.msg
    assert "POLL_INTERVAL" in error.hint and "WORKER_DEAD_AFTER" in error.hint


@pytest.mark.django_db(databases=["default", "other"])  # Django 6 asks about JSONField
def test_manage_check_fails_on_bad_settings():
    with override_settings(CONDUCTOR={"NOPE": 1}), pytest.raises(SystemCheckError,
                                                                 match="conductor_django.E001"):
        call_command("check")
