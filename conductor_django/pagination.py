"""A paginator for huge tables: no ``count(*)`` over millions of rows per page view.

On PostgreSQL an unfiltered list takes the planner's row estimate of the table
(``pg_class.reltuples``, kept fresh by autovacuum); a filtered one counts exactly up to
``exact_limit`` rows (``SELECT count(*) FROM (... LIMIT n)``, which stops early) and
beyond that takes the planner's estimate of the filtered query (``EXPLAIN``). Counts
that are estimates set ``estimated`` so the page can say "about". Other databases
count exactly (SQLite deployments are small).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.paginator import Paginator
from django.db import connections
from django.utils.functional import cached_property


class EstimatedCountPaginator(Paginator):
    exact_limit = 10_000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.estimated = False

    @cached_property
    def count(self) -> int:
        qs: Any = self.object_list  # a QuerySet here; any sequence falls through below
        if not hasattr(qs, "query") or connections[qs.db].vendor != "postgresql":
            return super().count
        if not qs.query.where:
            estimate = table_estimate(qs.model._meta.db_table, qs.db)
            if estimate > self.exact_limit:
                self.estimated = True
                return estimate
        capped = qs.order_by()[: self.exact_limit + 1].count()
        if capped <= self.exact_limit:
            return capped
        self.estimated = True
        return max(capped, query_estimate(qs))


def table_estimate(table: str, using: str) -> int:
    """The planner's row count of ``table``; -1 when the table was never analyzed."""
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [table])
        row = cursor.fetchone()
    return -1 if row is None else int(row[0])


def query_estimate(qs: Any) -> int:
    """The planner's estimate of how many rows ``qs`` returns (PostgreSQL ``EXPLAIN``)."""
    sql, params = qs.order_by().query.sql_with_params()
    with connections[qs.db].cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str | bytes):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])
