"""The steps of an execution on its admin page: a page of them at a time.

An execution may record tens of thousands of steps; its page shows ``STEPS_PER_PAGE``
of them, in the order they were recorded, the latest by default, with links to the
other pages (``?steps=N``). A page is read from whichever end of the execution's steps
is nearer, so the latest page costs the same as the first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.contrib import admin
from django.utils.html import format_html

from ..models import Execution, Step
from .cells import stamp
from .display import ExecutionPartInline

STEPS_PER_PAGE = 50
PAGE_PARAM = "steps"
TITLE_MAX = 4000  # characters of a step's result in its hover text


def compact_json(value: Any) -> str:
    compact = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    pretty = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    if len(pretty) > TITLE_MAX:
        pretty = pretty[: TITLE_MAX - 1] + "…"
    return format_html('<code class="cdj-step-result" title="{}">{}</code>', pretty, compact)


class StepInline(ExecutionPartInline):
    model = Step
    fields = ("name", "started_display", "finished_display", "duration_display",
              "result_display")
    readonly_fields = fields
    verbose_name = "finished step"

    @admin.display(description="started")
    def started_display(self, obj: Step) -> str:
        return stamp(obj.started_at, ms=True)

    @admin.display(description="finished")
    def finished_display(self, obj: Step) -> str:
        return stamp(obj.created_at, ms=True)

    @admin.display(description="duration")
    def duration_display(self, obj: Step) -> str:
        return "" if obj.duration is None else f"{obj.duration:.3f} s"

    @admin.display(description="result")
    def result_display(self, obj: Step) -> str:
        """One line of compact JSON; the indented JSON on hover (escaped, both)."""
        return compact_json(obj.result)


@dataclass(frozen=True)
class StepPage:
    """One page of an execution's steps (``number`` from 1, in the order recorded)."""

    number: int
    pages: int
    total: int
    ids: list[int]
    steps: list[Step]

    @property
    def first(self) -> int:
        """The position of the page's first step (from 1; 0 when there is none)."""
        return (self.number - 1) * STEPS_PER_PAGE + 1 if self.total else 0

    @property
    def last(self) -> int:
        return self.first + len(self.ids) - 1 if self.total else 0

    @property
    def is_whole(self) -> bool:
        return self.pages <= 1

    def links(self) -> list[int | None]:
        """The page numbers to link: the first two, the last two and three around this
        one; ``None`` where numbers are left out."""
        wanted = {1, 2, self.pages - 1, self.pages, self.number - 1, self.number,
                  self.number + 1}
        shown = sorted(n for n in wanted if 1 <= n <= self.pages)
        out: list[int | None] = []
        for n in shown:
            last = out[-1] if out else None
            if last is not None and n - last > 1:
                out.append(None)
            out.append(n)
        return out


def page_number(raw: Any, pages: int) -> int:
    """The page asked for (``?steps=N``); the last one when absent, out of range or not a
    number."""
    try:
        number = int(raw)
    except (TypeError, ValueError):
        return pages
    return number if 1 <= number <= pages else pages


def step_page(execution: Execution, raw_number: Any = None) -> StepPage:
    steps = (Step.objects.using(execution._state.db).filter(execution_id=execution.pk)
             .only("id", "name", "started_at", "created_at"))
    total = steps.count()
    pages = max(1, -(-total // STEPS_PER_PAGE))
    number = page_number(raw_number, pages)
    start = (number - 1) * STEPS_PER_PAGE
    size = max(0, min(STEPS_PER_PAGE, total - start))
    from_end = total - start - size
    # Read from the nearer end: the latest page is as cheap as the first.
    if from_end < start:
        rows = list(steps.order_by("-created_at", "-id")[from_end:from_end + size])[::-1]
    else:
        rows = list(steps.order_by("created_at", "id")[start:start + size])
    return StepPage(number=number, pages=pages, total=total, ids=[s.pk for s in rows],
                    steps=rows)
