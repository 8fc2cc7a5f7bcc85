"""Every exception conductor_django raises, in one place.

``ConductorError`` is the base of the errors a caller may want to catch.
``Cancelled`` and the internal boundary signals derive from ``BaseException`` so that
``except Exception:`` in task code cannot swallow them by accident.
"""

from __future__ import annotations

#: The reason of a cancellation requested without one.
DEFAULT_REASON = "Cancelled by user"


def timed_out(seconds: float | None) -> str:
    """The message of an attempt stopped by its task's ``timeout``."""
    return f"Timed out after {seconds or 0:g} seconds"


class ConductorError(Exception):
    """Base class of conductor_django's errors."""


class TaskNotFound(ConductorError, LookupError):
    """No task is registered under this name."""


class NonRetryableError(ConductorError):
    """Raise from a handler to fail the execution at once, without further attempts."""


class ExecutionFailed(ConductorError):
    """The execution ended ``failed``; the message is its ``last_error``."""

    def __init__(self, message: str, execution_id: str | None = None) -> None:
        super().__init__(message)
        self.execution_id = execution_id


class ExecutionCancelled(ExecutionFailed):
    """The execution ended ``cancelled``; the message is the cancel reason."""


class ChildExecutionFailed(NonRetryableError):
    """A child started with ``ctx.invoke`` failed for good or was cancelled.

    Not retried: a retry would find the same memoized child with the same outcome.
    """


class SignalTimeout(NonRetryableError, TimeoutError):
    """``ctx.wait_for_signal``: no signal of that name arrived before the timeout.

    Memoized like the payload of a signal: a retried or resumed execution gets it again,
    so it is not retried (uncaught, the execution fails at once).
    """

    def __init__(self, message: str, name: str = "", deadline: str | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.deadline = deadline


class Cancelled(BaseException):  # noqa: N818 - the public name is part of the contract
    """Cancellation was requested; raised at the next step boundary.

    A ``BaseException`` so that ``except Exception`` in task code does not swallow it.
    """

    def __init__(self, reason: str = DEFAULT_REASON) -> None:
        super().__init__(reason)
        self.reason = reason


class _BoundarySignal(BaseException):
    """Internal: raised at a step boundary to end the current attempt early."""


class AttemptTimedOut(_BoundarySignal):
    """The attempt ran past the task's timeout; it fails and is retried."""


class LeaseLost(_BoundarySignal):
    """This worker no longer holds the execution under the lease of its claim.

    It was presumed dead (frozen, paused or cut off for longer than
    ``WORKER_DEAD_AFTER``) and the execution was recovered: the attempt stops at once
    and writes nothing more, whatever the handler does.
    """


class Released(_BoundarySignal):
    """The worker is shutting down (or the window closed): release, resume later."""

    def __init__(self, run_at=None, why: str = "shutdown") -> None:
        super().__init__(why)
        self.run_at = run_at
        self.why = why


class Suspended(_BoundarySignal):
    """The execution suspends (durable sleep, waiting for a child or for a signal).

    ``run_at``: when to resume (None: only when woken); ``child_id``: the child waited on;
    ``signal``: the name of the signal waited for.
    """

    def __init__(self, run_at=None, child_id: str | None = None,
                 signal: str | None = None) -> None:
        super().__init__("suspended")
        self.run_at = run_at
        self.child_id = child_id
        self.signal = signal


def error_text(exc: BaseException) -> str:
    """The ``last_error`` of an attempt that raised ``exc``.

    The exception's type and message (``"KeyError: 'user'"``, ``"ValueError: boom"``),
    so that a bare message such as ``'user'`` still says what went wrong. The message
    alone for conductor's own errors (``NonRetryableError`` and its subclasses: their
    message is written for people) and for a plain ``Exception("...")``. The type alone
    when there is no message. An exception whose ``__str__`` raises (or returns no str)
    is named with its type and as unprintable, conductor's own errors too; this never
    raises.
    """
    try:
        message = str(exc)
        printable = isinstance(message, str)
    except BaseException as failed:  # noqa: BLE001 - any __str__ may fail in any way
        message, printable = f"<unprintable message: str() raised {type(failed).__name__}>", False
    if not isinstance(message, str):
        message = "<unprintable message>"
    if not message:
        return type(exc).__name__
    if printable and (isinstance(exc, ConductorError) or type(exc) is Exception):
        return message
    return f"{type(exc).__name__}: {message}"
