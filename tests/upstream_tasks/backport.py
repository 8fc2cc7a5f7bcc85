"""The exceptions of the ``django_tasks`` backport under their Django 6 names (two were
renamed when ``django.tasks`` was merged into Django)."""

from django_tasks.exceptions import InvalidTaskBackendError as InvalidTaskBackend
from django_tasks.exceptions import InvalidTaskError as InvalidTask
from django_tasks.exceptions import TaskResultDoesNotExist, TaskResultMismatch

__all__ = ["InvalidTask", "InvalidTaskBackend", "TaskResultDoesNotExist", "TaskResultMismatch"]
