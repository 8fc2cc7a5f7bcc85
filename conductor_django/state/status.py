"""The states of an execution (``Execution.Status``) and their groups."""

from __future__ import annotations

from django.db import models


class Status(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUSPENDED = "suspended", "Suspended"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINAL = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)
UNFINISHED = (Status.PENDING, Status.RUNNING, Status.SUSPENDED)
RUNNABLE = (Status.PENDING, Status.SUSPENDED)
