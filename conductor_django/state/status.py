"""The states of an execution (``Execution.Status``), how an attempt ends (``Outcome``)
and the transitions between states, each by the one verb that performs it.

**One vocabulary.** ``Outcome`` names how an attempt ended, everywhere: the attempt
history stores it (``Attempt.ended``, the ``RECORDED`` ones), the worker logs it and
counts it (``runtime.unit``). Its stored values are the database's and never change.

**The transition table** (``TRANSITIONS``; ``tests/test_status_table.py`` runs every
verb from every state and checks that it does exactly what the table says). A verb
called on a row in a state it has no line for changes nothing.

verb               from                to                               attempt history records
-----------------  ------------------  -------------------------------  ---------------------------
birth              (a new row)         pending                          -
claim              pending, suspended  running                          -
complete           running             completed (cancelled [1])        completed (off the hot path)
fail               running             pending, failed (cancelled)      retrying, failed, timed_out
finish_cancelled   running             cancelled                        cancelled
release            running             pending, suspended (cancelled)   released (at shutdown only)
release_all        running             pending (cancelled)              released
recover, give_up   running             pending, failed (cancelled)      recovered
cancel             pending, suspended  failed [2]                       -
cancel             running             running (``cancelled`` set)      -
retry              failed, cancelled   pending                          retried

[1] A row whose cancellation was accepted (``cancelled``) always ends ``cancelled``,
    whatever the verb that ends its attempt, and an attempt history row written then
    records ``cancelled`` with the cancel reason.
[2] A pending or suspended execution that is cancelled never runs: it ends ``failed``
    with the reason (``cancel_requested`` tells it from a failure).

``give_up`` is ``recover`` for one execution (its worker stopped it itself); the
django-q2 dispatcher's ``finish_cancelled_held`` is ``finish_cancelled`` for the
executions it holds. ``fork`` and ``run_again`` are births (``state.birth``), which
leave the original alone.
"""

from __future__ import annotations

from dataclasses import dataclass

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


class Outcome(models.TextChoices):
    """How an attempt ended (or an operator's retry of it); the label is the attempt
    history's words."""

    COMPLETED = "completed", "completed"
    FAILED = "failed", "failed"
    RETRYING = "retrying", "failed, retried later"  # failed, another attempt is due
    TIMED_OUT = "timed_out", "timed out"
    CANCELLED = "cancelled", "cancelled"
    RECOVERED = "recovered", "recovered after a crash"  # its worker was presumed dead
    RELEASED = "released", "released at shutdown"  # given back unfinished
    RETRIED = "retried", "retried by an operator"
    # The worker's words only (never stored in the attempt history):
    SUSPENDED = "suspended", "suspended"  # waiting (a sleep, a child, a signal)
    LOST = "lost", "lost"  # this worker no longer holds it: nothing of the attempt written


#: The outcomes the attempt history stores (``Attempt.ended``'s choices).
RECORDED = (Outcome.COMPLETED, Outcome.FAILED, Outcome.RETRYING, Outcome.TIMED_OUT,
            Outcome.CANCELLED, Outcome.RECOVERED, Outcome.RELEASED, Outcome.RETRIED)
#: The outcomes after which an execution is finished.
FINISHED = (Outcome.COMPLETED, Outcome.FAILED, Outcome.CANCELLED)


@dataclass(frozen=True)
class Transition:
    """One line of the table: ``verb`` takes a row in ``source`` to one of ``target``
    and records one of ``recorded`` in the attempt history (or nothing)."""

    verb: str
    source: tuple[Status, ...]
    target: tuple[Status, ...]
    recorded: tuple[Outcome, ...] = ()


S, OC = Status, Outcome

TRANSITIONS = (
    Transition("birth", (), (S.PENDING,)),
    Transition("claim", RUNNABLE, (S.RUNNING,)),
    # [1]: a row whose cancel was accepted ends ``cancelled`` and is recorded so
    Transition("complete", (S.RUNNING,), (S.COMPLETED, S.CANCELLED),
               (OC.COMPLETED, OC.CANCELLED)),
    Transition("fail", (S.RUNNING,), (S.PENDING, S.FAILED, S.CANCELLED),
               (OC.RETRYING, OC.FAILED, OC.TIMED_OUT, OC.CANCELLED)),
    Transition("finish_cancelled", (S.RUNNING,), (S.CANCELLED,), (OC.CANCELLED,)),
    Transition("release", (S.RUNNING,), (S.PENDING, S.SUSPENDED, S.CANCELLED),
               (OC.RELEASED, OC.CANCELLED)),
    Transition("release_all", (S.RUNNING,), (S.PENDING, S.CANCELLED),
               (OC.RELEASED, OC.CANCELLED)),
    Transition("recover", (S.RUNNING,), (S.PENDING, S.FAILED, S.CANCELLED),
               (OC.RECOVERED, OC.CANCELLED)),
    Transition("give_up", (S.RUNNING,), (S.PENDING, S.FAILED, S.CANCELLED),
               (OC.RECOVERED, OC.CANCELLED)),
    Transition("cancel", RUNNABLE, (S.FAILED,)),
    Transition("cancel", (S.RUNNING,), (S.RUNNING,)),
    Transition("retry", (S.FAILED, S.CANCELLED), (S.PENDING,), (OC.RETRIED,)),
    Transition("finish_cancelled_held", (S.RUNNING,), (S.CANCELLED,)),
)


def targets(verb: str, source: str) -> tuple[Status, ...]:
    """The states ``verb`` may take a row in ``source`` to; ``()`` when it may not act."""
    return tuple(s for t in TRANSITIONS if t.verb == verb and source in t.source
                 for s in t.target)


def records(verb: str) -> tuple[Outcome, ...]:
    """What ``verb`` may record in the attempt history."""
    return tuple(o for t in TRANSITIONS if t.verb == verb for o in t.recorded)
