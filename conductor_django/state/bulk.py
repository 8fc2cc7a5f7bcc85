"""Bulk operator transitions (``cancel_all``, ``retry_all``, ``run_again_all``), mixed
into ``ExecutionQuerySet``: ``Execution.objects.filter(...).cancel_all(reason=...)``.

Each acts on every execution of the queryset that the single-execution verb would
accept (``cancel``: unfinished; ``retry``: failed or cancelled, and with ``from_step``
only those that recorded that step; ``run_again``: finished) and returns how many it
changed. It walks the matching rows by primary key, ``chunk`` ids at a time (one
short read per chunk, never one statement over thousands of rows), and applies the
single verb's rules to each, so every rule of the one-execution transition holds: a
cancel stops the chunk's waiting executions in one guarded write (their parents woken
first, as ``cancel`` does), flags the running ones one by one (each its NOTIFY), and
cancels the unfinished descendants, a retry keeps or discards steps and records who retried,
a row that changed meanwhile is skipped. The count is of the matching executions the
verb took effect on (a descendant cancelled with its parent is not counted again).

Bad input (a reason that is not text or holds a NUL, a ``from_step`` that no matching
retryable execution recorded, a sliced queryset) raises before anything is written.
``on_chunk(changed, seen)`` is called after each chunk (the background bulk task of
the admin reports its progress with it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ..definitions.values import check_int, check_text
from ..exceptions import DEFAULT_REASON
from ..store.transactions import retry_locked
from .status import FINAL, UNFINISHED, Status

RETRYABLE = (Status.FAILED, Status.CANCELLED)

#: Ids read and acted on per round.
CHUNK = 500

Progress = Callable[[int, int], None] | None


class BulkTransitions:
    model: Any
    query: Any
    db: str

    _write_db: Any  # these four: OperatorTransitions'
    _cancel_one: Any
    _unfinished_below: Any
    _stop_waiting_rows: Any

    def _chunks(self, legal: tuple[str, ...], chunk: int) -> Iterator[list[Any]]:
        """The ids of the matching rows in ``legal`` states, ``chunk`` at a time (by id)."""
        rows: Any = self.filter(status__in=legal).order_by("pk")  # type: ignore[attr-defined]
        last = None
        while True:
            page = rows if last is None else rows.filter(pk__gt=last)
            ids = list(page.values_list("pk", flat=True)[:chunk])
            if not ids:
                return
            yield ids
            last = ids[-1]
            if len(ids) < chunk:
                return

    def _walk(self, legal: tuple[str, ...], act: Callable[[list[Any]], int], chunk: int,
              on_chunk: Progress) -> int:
        check_int(chunk, "chunk", 1, 10_000)
        changed = seen = 0
        for ids in self._chunks(legal, chunk):
            changed += act(ids)
            seen += len(ids)
            if on_chunk is not None:
                on_chunk(changed, seen)
        return changed

    def _not_sliced(self, verb: str) -> None:
        if self.query.is_sliced:
            raise TypeError(f"{verb}() acts on a filter, not on a slice of it")

    def cancel_all(self, reason: str | None = None, *, using: str | None = None,
                   chunk: int = CHUNK, on_chunk: Progress = None) -> int:
        """Cancel every unfinished execution of the queryset (and its descendants); how
        many were cancelled (``cancel``'s rules for each)."""
        self._not_sliced("cancel_all")
        if reason is not None:
            check_text(reason, "cancel reason", allow_empty=True)  # before any write
        db = self._write_db(using)
        text = reason or DEFAULT_REASON
        return self._walk(UNFINISHED, lambda ids: self._cancel_chunk(ids, text, db),
                          chunk, on_chunk)

    def _cancel_chunk(self, ids: list[Any], reason: str, db: str) -> int:
        """``cancel`` for each of ``ids``: the waiting ones in one guarded write (their
        parents woken first, in the same transaction), the running ones (and any that
        changed state meanwhile) one by one, then the unfinished descendants."""
        rows = self.model._default_manager.using(db).filter(pk__in=ids)
        changed = retry_locked(lambda: self._stop_waiting_rows(db, ids, reason), db)
        for pk in list(rows.filter(status__in=UNFINISHED, cancelled=False)
                       .values_list("pk", flat=True)):
            changed += self._cancel_one(pk, reason, db)
        for pk in self._unfinished_below(ids, db):
            self._cancel_one(pk, reason, db)
        return changed

    def retry_all(self, from_step: str | None = None, *, by: str = "",
                  using: str | None = None, chunk: int = CHUNK,
                  on_chunk: Progress = None) -> int:
        """Retry every failed or cancelled execution of the queryset (from ``from_step``:
        those that recorded it); how many were retried (``retry``'s rules for each)."""
        self._not_sliced("retry_all")
        check_text(by, "by", allow_empty=True)
        target: Any = self
        if from_step is not None:
            check_text(from_step, "from_step")
            target = self.filter(steps__name=from_step)  # type: ignore[attr-defined]
            if not target.filter(status__in=RETRYABLE).exists():
                raise ValueError(f"No failed or cancelled execution of this filter has a "
                                 f"recorded step named {from_step!r}")
        db = self._write_db(using)
        manager = self.model._default_manager
        return target._walk(
            RETRYABLE,
            lambda ids: sum(manager.retry(pk, from_step=from_step, by=by, using=db)
                            for pk in ids),
            chunk, on_chunk)

    def run_again_all(self, *, using: str | None = None, chunk: int = CHUNK,
                      on_chunk: Progress = None) -> int:
        """Start a new execution for every finished execution of the queryset; how many
        were started (``run_again``'s rules for each)."""
        self._not_sliced("run_again_all")
        db = self._write_db(using)
        manager = self.model._default_manager
        return self._walk(
            FINAL, lambda ids: sum(manager.run_again(pk, using=db) is not None for pk in ids),
            chunk, on_chunk)
