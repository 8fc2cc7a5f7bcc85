import logging
from typing import TextIO, cast

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connections, router
from django.db.migrations.executor import MigrationExecutor

from conductor_django import metrics
from conductor_django.definitions.values import to_seconds
from conductor_django.models import Execution
from conductor_django.runtime.reload import run_with_reloader
from conductor_django.runtime.retry import retry_write
from conductor_django.runtime.worker import PREFETCH_BATCH, Worker


class Command(BaseCommand):
    help = "Run conductor_django executions (stop with SIGTERM or Ctrl-C)."

    def add_arguments(self, parser):
        parser.add_argument("--queue", action="append", dest="queues", default=[],
                            help="Serve this queue (repeat for several; default: every queue).")
        parser.add_argument("--concurrency", type=int, default=10,
                            help="Handler threads (default 10).")
        parser.add_argument("--async-concurrency", type=int, default=100,
                            help="async def handlers run at once on the worker's event loop "
                                 "(default 100; 0: run none).")
        parser.add_argument("--poll-interval", type=float, default=None,
                            help="Seconds between polls for work (default: POLL_INTERVAL).")
        parser.add_argument("--batch-size", type=int, default=None,
                            help="Executions claimed per query (default: the larger of "
                                 f"--concurrency and {PREFETCH_BATCH}).")
        parser.add_argument("--drain", action="store_true",
                            help="Exit when nothing is runnable now.")
        parser.add_argument("--shutdown-timeout", type=float, default=30.0,
                            help="Seconds to wait for running handlers on SIGTERM (default 30).")
        parser.add_argument("--reload", action="store_true",
                            help="Development: restart the worker when a Python file it "
                                 "imported changes (Django's autoreloader, as runserver).")
        parser.add_argument("--metrics-port", type=int, default=None,
                            help="Serve this process's Prometheus metrics on this port "
                                 "(needs prometheus_client: the [metrics] extra).")

    def handle(self, *args, queues, concurrency, poll_interval, batch_size, drain,
               shutdown_timeout, verbosity, metrics_port=None, async_concurrency=100,
               reload=False, **options):
        if concurrency < 1:
            raise CommandError("--concurrency must be at least 1")
        if async_concurrency < 0:
            raise CommandError("--async-concurrency must be at least 0")
        if batch_size is not None and batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        if poll_interval is not None:
            poll_interval = _seconds("--poll-interval", poll_interval)
            if poll_interval <= 0:
                raise CommandError("--poll-interval must be positive")
        shutdown_timeout = _seconds("--shutdown-timeout", shutdown_timeout)
        if reload and (drain or metrics_port is not None):
            raise CommandError("--reload is for development: not with --drain or --metrics-port")
        if metrics_port is not None and not metrics.INSTALLED:
            raise CommandError("--metrics-port needs prometheus_client: "
                               "pip install 'conductor-django[metrics]'")
        self._check_migrated()
        self._setup_logging(verbosity)
        if metrics_port is not None:
            metrics.serve(metrics_port)
        worker = Worker(
            queues=queues,
            concurrency=concurrency,
            async_concurrency=async_concurrency,
            poll_interval=poll_interval,
            batch_size=batch_size,
            drain=drain,
            shutdown_timeout=shutdown_timeout,
        )
        if reload:
            run_with_reloader(worker, shutdown_timeout)
        else:
            worker.run()

    def _check_migrated(self) -> None:
        """A worker started before ``migrate`` says so in one line, not a traceback."""
        using = router.db_for_write(Execution)

        def unapplied() -> list:
            executor = MigrationExecutor(connections[using])
            leaves = [n for n in executor.loader.graph.leaf_nodes() if n[0] == "conductor_django"]
            return executor.migration_plan(leaves)

        try:  # a session cut while the worker starts is waited out, like any other read
            missing = retry_write(unapplied, using, "the migration check")
        except DatabaseError as exc:
            raise CommandError(f"cannot read the migrations of database {using!r}: {exc}") from exc
        if missing:
            raise CommandError(
                f"conductor_django's tables in database {using!r} are not up to date "
                f"({len(missing)} migration(s) not applied): run migrate first "
                "(python manage.py migrate)."
            )

    def _setup_logging(self, verbosity: int) -> None:
        log = logging.getLogger("conductor_django")
        if log.handlers or logging.getLogger().handlers:
            return  # the project configured logging itself
        handler = logging.StreamHandler(cast(TextIO, self.stderr._out))  # the raw stream
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel({0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG))


def _seconds(option: str, value: float) -> float:
    """A finite, non-negative number of seconds (NaN would make an idle worker spin)."""
    try:
        seconds = to_seconds(value, option)
    except (TypeError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    return float(seconds or 0.0)
