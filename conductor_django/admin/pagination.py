"""A paginator for huge tables: no ``count(*)`` over millions of rows per page view.

On PostgreSQL an unfiltered list takes the planner's row estimate of the table
(``pg_class.reltuples``, kept fresh by autovacuum); a filtered one counts exactly up to
``exact_limit`` rows (``SELECT count(*) FROM (... LIMIT n)``, which stops early) and
beyond that takes the planner's estimate of the filtered query (``EXPLAIN``). Counts
that are estimates set ``estimated`` so the page can say "about"; where the planner
knows no better than the exact count's limit (a table never analysed), ``more_than``
is set and the page says "more than 10,000", never a made-up number. Other databases
count exactly (SQLite deployments are small).
"""

from __future__ import annotations

from typing import Any

from django.core.paginator import Paginator
from django.db import connections
from django.utils.functional import cached_property

from ..store.stats import query_estimate, table_estimate


class EstimatedCountPaginator(Paginator):
    exact_limit = 10_000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.estimated = False
        #: "10,000" when the count is only known to be above ``exact_limit``.
        self.more_than = ""

    @cached_property
    def count(self) -> int:
        qs: Any = self.object_list  # a QuerySet here; any sequence falls through below
        if not hasattr(qs, "query"):
            return super().count
        connection = connections[qs.db]
        if not qs.query.where:
            estimate = table_estimate(connection, qs.model._meta.db_table)
            if estimate is None:  # no planner estimates on this database: count
                return super().count
            if estimate > self.exact_limit:
                self.estimated = True
                return estimate
        elif table_estimate(connection, qs.model._meta.db_table) is None:
            return super().count
        capped = qs.order_by()[: self.exact_limit + 1].count()
        if capped <= self.exact_limit:
            return capped
        self.estimated = True
        estimate = query_estimate(qs, connection)
        if estimate is None or estimate <= self.exact_limit:
            # No usable estimate (a table never analysed): only the lower bound is known.
            self.more_than = f"{self.exact_limit:,}"
            return capped
        return estimate
