"""Django's tasks framework as the tests use it: built in on Django 6, the
``django_tasks`` backport on Django 5.2 (the same public API, one exception renamed)."""

try:  # Django 6
    from django.tasks import TaskResultStatus, default_task_backend, task
    from django.tasks.exceptions import InvalidTask as InvalidTaskError
    from django.tasks.exceptions import TaskResultDoesNotExist
except ImportError:  # Django 5.2
    from django_tasks import TaskResultStatus, default_task_backend, task
    from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist

__all__ = ["InvalidTaskError", "TaskResultDoesNotExist", "TaskResultStatus",
           "default_task_backend", "task"]
