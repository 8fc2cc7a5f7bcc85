"""The tables: executions, their memoized steps, cron schedules, live workers, flow-control
slots, execution logs and signals.

Every state change of an execution is a method of its manager (``Execution.objects``,
the state machine in ``conductor_django.state``), shared by the worker, the module API
and the admin; ``cancel``, ``retry`` and ``run_again`` here call it.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.db import connections, models
from django.db.models import Q
from django.utils import timezone

from .exceptions import DEFAULT_REASON
from .state import (
    FINAL,
    RUNNABLE,
    UNFINISHED,
    AttemptQuerySet,
    ExecutionQuerySet,
    SignalQuerySet,
    Status,
    StepQuerySet,
    WorkerQuerySet,
)
from .state.status import RECORDED, Outcome
from .store.vendor import dialect


class Execution(models.Model):
    """One run (with its retries) of a task for one payload."""

    Status = Status
    FINAL = FINAL
    UNFINISHED = UNFINISHED
    RUNNABLE = RUNNABLE

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    task_name = models.CharField(max_length=200)
    queue = models.CharField(max_length=100, default="default")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    payload = models.JSONField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    cancelled = models.BooleanField(
        default=False, help_text="Cancellation was requested while the execution was running."
    )
    cancel_requested = models.BooleanField(
        default=False, db_default=False,
        help_text="An operator's cancel took effect: a pending or suspended execution ended "
        "failed because of it, a running one was asked to stop (then it ends cancelled).",
    )
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    priority = models.IntegerField(default=0)
    run_at = models.DateTimeField(
        null=True, blank=True, default=timezone.now,
        help_text="Not runnable before this time; empty while suspended without a deadline.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    locked_by = models.UUIDField(null=True, blank=True)
    locked_at = models.DateTimeField(null=True, blank=True)
    lease = models.PositiveBigIntegerField(
        default=0,
        db_default=0,
        help_text="Fencing token: every claim takes a new one, and every write of a running "
        "execution names it, so a worker that lost the execution can write nothing more.",
    )
    dedupe_key = models.CharField(max_length=255, null=True, blank=True)
    key = models.CharField(
        max_length=200, null=True, blank=True, db_column="flow_key",
        help_text="The flow-control key (e.g. a tenant): key_concurrency, per-key rate limits "
        "and fair claiming across keys.",
    )
    # Indexed by cdj_exec_parent_idx, rows with a parent only (Meta.indexes).
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children",
        db_index=False,
    )
    schedule_name = models.CharField(max_length=200, null=True, blank=True)
    event_name = models.CharField(max_length=200, default="conductor.invoke")
    scheduled_for = models.DateTimeField(
        null=True, blank=True,
        help_text="The fire time of the schedule (schedule_name) this execution runs for.",
    )
    resume = models.BooleanField(
        default=False,
        help_text="The next claim resumes the current attempt (after a sleep, a child or a "
        "release) instead of starting a new one.",
    )
    forked_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="forks",
        help_text="The execution this one was forked from (conductor.fork).",
        db_index=False,  # cdj_exec_forked_idx: forked rows only
    )
    # --- signals and progress (see state/signals.py) ---
    progress = models.JSONField(
        null=True, blank=True,
        help_text='The handler\'s last ctx.progress: {"done", "total", "message"}.',
    )
    waiting_for = models.JSONField(
        null=True, blank=True,
        help_text='The signal ctx.wait_for_signal waits for: {"signal", "until", "choices"}.',
    )

    # --- observability (tracing.py) ---
    trace_context = models.JSONField(
        null=True, blank=True, editable=False,
        help_text="The trace context (W3C traceparent) of the invoke() caller, so the "
        "execution's spans join the caller's trace.",
    )

    objects = ExecutionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The claim query: runnable rows of a queue, best priority, earliest run_at.
            models.Index(
                fields=["queue", "-priority", "run_at"],
                name="cdj_exec_claim_idx",
                condition=Q(status__in=["pending", "suspended"]),
            ),
            # The same for a worker serving every queue (or several): the index order is
            # the claim's ORDER BY, so a claim reads only the rows it takes.
            models.Index(
                fields=["-priority", "run_at"],
                name="cdj_exec_claim_any_idx",
                condition=Q(status__in=["pending", "suspended"]),
            ),
            # Recovery and the cancel watcher: running rows by their worker.
            models.Index(
                fields=["locked_by"], name="cdj_exec_running_idx", condition=Q(status="running")
            ),
            # Retention: finished rows by status and age (only finished rows are in it, so
            # claiming a row does not write to it).
            models.Index(
                fields=["status", "finished_at"], name="cdj_exec_status_fin_idx",
                condition=Q(status__in=["completed", "failed", "cancelled"]),
            ),
            # Concurrency limits count the running executions of a task.
            models.Index(
                fields=["task_name"], name="cdj_exec_running_task_idx",
                condition=Q(status="running"),
            ),
            models.Index(fields=["-created_at"], name="cdj_exec_created_idx"),
            # The metrics' gauges (metrics.py): unfinished rows by queue, task and status,
            # with run_at for the runnable count and the lag (an index-only scan, 0013).
            models.Index(
                fields=["queue", "task_name", "status", "run_at"], name="cdj_exec_open_idx",
                condition=Q(status__in=["pending", "running", "suspended"]),
            ),
            # The admin list (newest first) filtered by status, queue or task, the loose
            # index scans of its filter choices, and its search by dedupe key (0003).
            models.Index(fields=["status", "-created_at"], name="cdj_exec_status_created_idx"),
            models.Index(fields=["queue", "-created_at"], name="cdj_exec_queue_created_idx"),
            models.Index(fields=["task_name", "-created_at"], name="cdj_exec_task_created_idx"),
            models.Index(
                fields=["dedupe_key"], name="cdj_exec_dedupe_idx",
                condition=Q(dedupe_key__isnull=False),
            ),
            # Keys (store/claims/): the runnable keys of a task and each key's best rows;
            # the running executions of a key; the recent starts of a task and of a key
            # (rate limits); the admin's filter and search by key.
            models.Index(
                fields=["task_name", "key", "-priority", "run_at"],
                name="cdj_exec_key_claim_idx",
                condition=Q(status__in=["pending", "suspended"]),
            ),
            models.Index(
                fields=["task_name", "key"], name="cdj_exec_key_running_idx",
                condition=Q(status="running") & Q(key__isnull=False),
            ),
            models.Index(
                fields=["task_name", "started_at"], name="cdj_exec_started_idx",
                condition=Q(started_at__isnull=False),
            ),
            models.Index(
                fields=["task_name", "key", "started_at"], name="cdj_exec_key_started_idx",
                condition=Q(key__isnull=False) & Q(started_at__isnull=False),
            ),
            models.Index(
                fields=["key", "-created_at"], name="cdj_exec_key_idx",
                condition=Q(key__isnull=False),
            ),
            # The admin's dashboard: the executions finished in the last day by queue,
            # task, status and whether a cancel ended it, with their run time (an
            # index-only scan, 0015 and 0020).
            models.Index(
                fields=["finished_at", "queue", "task_name", "status", "started_at",
                        "cancel_requested"],
                name="cdj_exec_finished_idx",
                condition=Q(status__in=["completed", "failed", "cancelled"]),
            ),
            # Children of an execution, forks of an execution: partial, so that the
            # rows of plain executions (almost all) add no entry to them on each of
            # their three writes (insert, claim, finish).
            models.Index(fields=["parent"], name="cdj_exec_parent_idx",
                         condition=Q(parent__isnull=False)),
            models.Index(fields=["forked_from"], name="cdj_exec_forked_idx",
                         condition=Q(forked_from__isnull=False)),
            # The scheduler: is a run of this schedule unfinished?
            models.Index(
                fields=["task_name", "schedule_name"],
                name="cdj_exec_sched_open_idx",
                condition=Q(scheduled_for__isnull=False)
                & Q(status__in=["pending", "running", "suspended"]),
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["task_name", "dedupe_key"],
                name="cdj_exec_dedupe_uniq",
                condition=Q(dedupe_key__isnull=False)
                & Q(status__in=["pending", "running", "suspended"]),
            ),
            # One execution per schedule and fire time, however many workers queue it.
            models.UniqueConstraint(
                fields=["task_name", "schedule_name", "scheduled_for"],
                name="cdj_exec_fire_time_uniq",
                condition=Q(scheduled_for__isnull=False),
            ),
        ]
        permissions = [
            ("cancel_execution", "Can cancel executions"),
            ("retry_execution", "Can retry executions"),
            ("rerun_execution", "Can run executions again"),
            ("signal_execution", "Can send signals to executions"),
        ]

    def __str__(self) -> str:
        return f"{self.task_name} {self.id} ({self.status})"

    @classmethod
    def check(cls, **kwargs: Any) -> list[Any]:
        """Django's checks, without models.W036/W037 where every database that lacks
        partial indexes is MySQL/MariaDB: migration ``0010_mysql`` builds the conditional
        uniques and the claim's indexes there its own way."""
        errors = super().check(**kwargs)
        lacking = [connections[db] for db in kwargs.get("databases") or ()
                   if not connections[db].features.supports_partial_indexes]
        if lacking and all(dialect(c).builds_partial_rules for c in lacking):
            errors = [e for e in errors if e.id not in ("models.W036", "models.W037")]
        return errors

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINAL

    @property
    def duration(self) -> float | None:
        """Seconds from the first start to the end (or to now while unfinished)."""
        if self.started_at is None:
            return None
        end = self.finished_at or timezone.now()
        return (end - self.started_at).total_seconds()

    def cancel(self, reason: str = DEFAULT_REASON) -> bool:
        """Cancel this execution; see ``state.operator``."""
        done = Execution.objects.cancel(self.pk, reason, using=self._state.db)
        self.refresh_from_db()
        return done

    # --- operator actions (see conductor_django.state.operator) -----------------------

    def retry(self, from_step: str | None = None, *, by: str = "") -> bool:
        """Put this failed or cancelled execution back to ``pending``, steps kept (with
        ``from_step``: the steps recorded from that one on are discarded)."""
        done = Execution.objects.retry(self.pk, from_step=from_step, by=by,
                                       using=self._state.db)
        self.refresh_from_db()
        return done

    def fork(self, from_step: str, *, dedupe_key: str | None = None, by: str = "") -> Execution:
        """A new execution of this task and payload with the steps before ``from_step``
        (with ``dedupe_key``: an unfinished execution holding it instead, as ``invoke``)."""
        new_id = Execution.objects.fork(self.pk, from_step, dedupe_key=dedupe_key, by=by,
                                        using=self._state.db)
        return Execution.objects.using(self._state.db).get(pk=new_id)

    def run_again(self) -> Execution | None:
        """A new execution with this one's payload (no steps); ``None`` if not legal."""
        new_id = Execution.objects.run_again(self.pk, using=self._state.db)
        if new_id is None:
            return None
        return Execution.objects.using(self._state.db).get(pk=new_id)


class Step(models.Model):
    """The memoized result of one ``ctx.step`` of an execution."""

    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="steps")
    name = models.CharField(max_length=255)
    result = models.JSONField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = StepQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["execution", "name"], name="cdj_step_uniq"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.created_at - self.started_at).total_seconds()


class Schedule(models.Model):
    """A cron schedule of a task: static (from code) or dynamic (from ``schedule()``)."""

    task_name = models.CharField(max_length=200)
    name = models.CharField(max_length=200)
    cron = models.CharField(max_length=200)
    payload = models.JSONField(null=True, blank=True)
    timezone = models.CharField(max_length=64, blank=True, default="")
    enabled = models.BooleanField(default=True)
    static = models.BooleanField(default=False)
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["task_name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["task_name", "name"], name="cdj_schedule_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.task_name}/{self.name}"


class Worker(models.Model):
    """A running ``conductor_worker`` process; its row is its heartbeat."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    hostname = models.CharField(max_length=255)
    pid = models.IntegerField()
    queues = models.JSONField(default=list, blank=True, help_text="Empty: every queue.")
    concurrency = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(default=timezone.now)
    last_heartbeat = models.DateTimeField(default=timezone.now)

    # --- engines (conductor_django.engines) ---
    class Role(models.TextChoices):
        WORKER = "worker", "conductor_worker running executions"
        DISPATCHER = "dispatcher", "conductor_worker dispatching to django-q2"
        QCLUSTER = "qcluster", "django-q2 qcluster worker process"

    role = models.CharField(max_length=10, choices=Role.choices, default=Role.WORKER)

    objects = WorkerQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["last_heartbeat"], name="cdj_worker_heartbeat_idx")]

    def __str__(self) -> str:
        return f"{self.hostname}:{self.pid}"

    def running(self) -> Any:
        return Execution.objects.filter(status=Execution.Status.RUNNING, locked_by=self.id)


# --- flow control ----------------------------------------------------------------------


class FlowSlot(models.Model):
    """The last throttled or debounced execution of a task and key (``invoke(throttle=...)``).

    Its row is what concurrent throttled/debounced invocations of one task and key
    serialize on (a unique row, locked while the invoking transaction decides).
    """

    class Kind(models.TextChoices):
        THROTTLE = "throttle", "Throttle"
        DEBOUNCE = "debounce", "Debounce"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    task_name = models.CharField(max_length=200)
    key = models.CharField(max_length=255, blank=True, default="",
                           help_text="The dedupe key; empty when invoked without one.")
    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="+")
    until = models.DateTimeField(
        help_text="Throttle: end of the period. Debounce: when the execution runs."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kind", "task_name", "key"], name="cdj_flowslot_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.task_name}/{self.key}"
# --- execution logs (see logs.py) ----------------------------------------------------


class ExecutionLog(models.Model):
    """One log line of an execution; only the last ``LOG_LINES`` of each are kept."""

    execution = models.ForeignKey(
        Execution, on_delete=models.CASCADE, related_name="logs", db_index=False
    )
    attempt = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now)
    level = models.PositiveSmallIntegerField()
    logger = models.CharField(max_length=200)
    message = models.TextField()

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["execution", "id"], name="cdj_log_exec_idx")]

    def __str__(self) -> str:
        return f"{self.levelname} {self.message[:60]}"

    @property
    def levelname(self) -> str:
        return logging.getLevelName(self.level)


# --- attempt history (see state/attempts.py) -------------------------------------------


class Attempt(models.Model):
    """How one attempt of an execution ended (or an operator's retry of it).

    Written in the transaction of the write that ends the attempt, fenced by its lease.
    An attempt that *completed* without an earlier attempt or resume is not written
    (the hot path): ``Execution.objects.attempt_history`` derives it from the execution.
    """

    execution = models.ForeignKey(
        Execution, on_delete=models.CASCADE, related_name="attempt_rows", db_index=False
    )
    number = models.PositiveIntegerField()
    worker = models.UUIDField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(default=timezone.now)
    ended = models.CharField(max_length=10, choices=[(o.value, o.label) for o in RECORDED])
    error = models.TextField(blank=True, default="")
    retried_by = models.CharField(max_length=150, blank=True, default="",
                          help_text="Who retried it (an operator's retry).")
    from_step = models.CharField(max_length=255, blank=True, default="")

    objects = AttemptQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["execution", "id"], name="cdj_attempt_exec_idx")]

    def __str__(self) -> str:
        return f"attempt {self.number} {self.ended}"

    @property
    def outcome(self) -> str:
        ended = self.ended
        kept = (Outcome.COMPLETED, Outcome.RETRIED, Outcome.CANCELLED)
        return str(ended) if ended in kept else Outcome.FAILED.value
# --- signals (ctx.wait_for_signal, conductor.send_signal; see state/signals.py) -----------


class Signal(models.Model):
    """A signal sent to an execution; ``consumed_at`` is set when a wait returned it."""

    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="signals",
                                  db_index=False)
    name = models.CharField(max_length=200)
    payload = models.JSONField(null=True, blank=True)
    sent_by = models.CharField(max_length=150, blank=True, default="",
                               help_text="Who sent it (the admin user's username).")
    sent_at = models.DateTimeField(default=timezone.now)
    consumed_at = models.DateTimeField(null=True, blank=True)

    objects = SignalQuerySet.as_manager()

    class Meta:
        ordering = ["sent_at", "id"]
        indexes = [models.Index(fields=["execution", "name", "sent_at"],
                                name="cdj_signal_exec_idx")]

    def __str__(self) -> str:
        return f"{self.name} -> {self.execution_id}"


# --- operator controls (conductor.pause / resume / set_limits; see operations.py) --------


class Control(models.Model):
    """What an operator changed at run time for one queue or task: a pause, and (tasks
    only) limits overriding the code's. Workers read these rows every few seconds."""

    class Scope(models.TextChoices):
        QUEUE = "queue", "Queue"
        TASK = "task", "Task"

    scope = models.CharField(max_length=5, choices=Scope.choices)
    name = models.CharField(max_length=200)
    # the pause: ``paused_at`` is empty when not paused
    paused_at = models.DateTimeField(null=True, blank=True)
    paused_by = models.CharField(max_length=150, blank=True, default="")
    schedules = models.CharField(
        max_length=5, default="queue",
        help_text="What happens to the fire times of schedules while paused: 'queue' "
        "(they wait for the resume) or 'skip' (each is skipped and counted).",
    )
    skipped_fire_times = models.PositiveIntegerField(default=0)
    # the limits (tasks only); empty: the code's value
    concurrency = models.PositiveIntegerField(null=True, blank=True)
    key_concurrency = models.PositiveIntegerField(null=True, blank=True)
    rate_limit = models.CharField(max_length=50, blank=True, default="",
                                  help_text="e.g. '10/60s' or '5/60s per key'; empty: the code's.")
    limits_changed_at = models.DateTimeField(null=True, blank=True)
    limits_changed_by = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        verbose_name = "pause and limits"
        verbose_name_plural = "pauses and limits"
        ordering = ["scope", "name"]
        constraints = [
            models.UniqueConstraint(fields=["scope", "name"], name="cdj_control_uniq"),
        ]
        permissions = [
            ("pause_queue", "Can pause and resume queues and tasks"),
            ("set_limits", "Can change the limits of tasks live"),
        ]

    def __str__(self) -> str:
        return f"{self.scope} {self.name}"
