"""Read statements of the admin: distinct values by index, the planner's estimates."""

from __future__ import annotations

from typing import Any

from .vendor import dialect


def distinct_values(connection: Any, table: str, column: str, limit: int = 200) -> list[Any]:
    """The distinct values of an indexed column, one index probe per value.

    A "loose index scan" (recursive CTE): ``SELECT DISTINCT`` would read every row.
    ``column`` must be a trusted column name.
    """
    sql = (
        f"WITH RECURSIVE v(val, n) AS ("
        f" SELECT (SELECT {column} FROM {table} ORDER BY {column} LIMIT 1), 1"
        f" UNION ALL"
        f" SELECT (SELECT {column} FROM {table} WHERE {column} > v.val"
        f" ORDER BY {column} LIMIT 1), v.n + 1 FROM v WHERE v.val IS NOT NULL AND v.n < %s"
        f") SELECT val FROM v WHERE val IS NOT NULL"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [limit])
        return [row[0] for row in cursor.fetchall()]


def table_estimate(connection: Any, table: str) -> int | None:
    """The planner's row count of ``table`` (-1: never analyzed; ``None``: no planner
    estimate on this database)."""
    return dialect(connection).table_estimate(connection, table)


def query_estimate(qs: Any, connection: Any) -> int | None:
    """The planner's estimate of how many rows ``qs`` returns (``None``: not available)."""
    sql, params = qs.order_by().query.sql_with_params()
    return dialect(connection).query_estimate(connection, sql, params)


def duration_percentiles(connection: Any, table: str, since: Any,
                         quantiles: tuple[float, ...]) -> dict[str, list[float]] | None:
    """Per task, the ``quantiles`` of the run time (seconds from ``started_at`` to
    ``finished_at``) of the executions that finished since ``since`` after starting.

    ``None`` where the database has no percentile function: the caller computes them
    from the rows (``admin.stats``).
    """
    return dialect(connection).duration_percentiles(connection, table, since, quantiles)


def uuid_ranges_are_prefixes(connection: Any) -> bool:
    """Whether an id prefix can be searched as a range of the primary key here."""
    return dialect(connection).uuid_ranges_are_prefixes(connection)


def oldest_transaction(connection: Any) -> float | None:
    """Seconds the oldest transaction of another session has been open, where it keeps
    old row versions from being cleaned up (``None``: none, or not visible)."""
    return dialect(connection).oldest_transaction(connection)
