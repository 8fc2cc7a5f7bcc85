import argparse
from typing import TextIO, cast

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connections, router
from django.db.migrations.executor import MigrationExecutor

from conductor_django import metrics
from conductor_django.definitions.values import to_seconds
from conductor_django.models import Execution
from conductor_django.runtime import supervisor
from conductor_django.runtime.reload import run_with_reloader
from conductor_django.runtime.retry import retry_write
from conductor_django.runtime.worker import PREFETCH_BATCH, Worker

#: More worker processes than this from one command is a typo, not a plan (each one is a
#: Python interpreter with its own connections); run more commands instead.
MAX_PROCESSES = 256


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
        parser.add_argument("--processes", default="1",
                            help="Worker processes under this one, each with its own threads "
                                 "(default 1; auto: one per CPU this process may use).")
        parser.add_argument("--reload", action="store_true",
                            help="Development: restart the worker when a Python file it "
                                 "imported changes (Django's autoreloader, as runserver).")
        parser.add_argument("--metrics-port", type=int, default=None,
                            help="Serve the worker's Prometheus metrics on this port, summed "
                                 "over its processes (needs prometheus_client: the [metrics] "
                                 "extra).")
        parser.add_argument("--metrics-host", default=None,
                            help="The address --metrics-port listens on (default 127.0.0.1: "
                                 "this machine only).")
        # a child of --processes N (runtime/supervisor.py): not for use by hand
        parser.add_argument("--supervised", action="store_true", help=argparse.SUPPRESS)

    def handle(self, *args, queues, concurrency, poll_interval, batch_size, drain,
               shutdown_timeout, verbosity, metrics_port=None, async_concurrency=100,
               processes="1", metrics_host=None, supervised=False, reload=False, **options):
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
        processes = _processes(processes)
        if processes > 1 and not settings.SETTINGS_MODULE:
            raise CommandError("--processes needs a settings module (DJANGO_SETTINGS_MODULE "
                               "or --settings): each worker process loads the settings "
                               "from it, and settings.configure() in this process is not "
                               "seen there")
        metrics_host = _metrics_address(metrics_port, metrics_host)
        if reload and (drain or metrics_port is not None or processes > 1):
            raise CommandError("--reload is for development: not with --drain, --metrics-port "
                               "or --processes")
        if supervised:
            supervisor.watch_parent()  # a child never outlives its parent
        else:
            self._check_migrated()  # (the parent checked for its children)
        supervisor.setup_logging(cast(TextIO, self.stderr._out), verbosity,
                                 pid=supervised or processes > 1)
        if processes > 1:
            children = supervisor.Supervisor(
                processes=processes, drain=drain, shutdown_timeout=shutdown_timeout,
                metrics_port=metrics_port, metrics_host=metrics_host,
                child_args=_child_args(queues, concurrency, async_concurrency, poll_interval,
                                       batch_size, drain, shutdown_timeout, verbosity),
            )
            _listen(children.serve_metrics, metrics_port, metrics_host)
            status = children.run()
            if status:
                raise CommandError(f"a worker process failed (exit code {status})",
                                   returncode=status)
            return
        if metrics_port is not None:
            _listen(lambda: metrics.serve(metrics_port, metrics_host), metrics_port, metrics_host)
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


def _seconds(option: str, value: float) -> float:
    """A finite, non-negative number of seconds (NaN would make an idle worker spin)."""
    try:
        seconds = to_seconds(value, option)
    except (TypeError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    return float(seconds or 0.0)


def _processes(value: object) -> int:
    """``--processes``: a whole number from 1 to ``MAX_PROCESSES``, or ``auto`` (the
    usable CPUs)."""
    text = str(value).strip()
    if text == "auto":
        return supervisor.available_cpus()
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_PROCESSES:
        raise CommandError(f"--processes must be a whole number from 1 to {MAX_PROCESSES} "
                           f"or auto, not {text!r}")
    return int(text)


def _metrics_address(port: int | None, host: str | None) -> str:
    if port is None:
        if host is not None:
            raise CommandError("--metrics-host needs --metrics-port")
        return ""
    if not metrics.INSTALLED:
        raise CommandError("--metrics-port needs prometheus_client: "
                           "pip install 'conductor-django[metrics]'")
    if not 1 <= port <= 65535:
        raise CommandError("--metrics-port must be between 1 and 65535")
    if host is not None and not host.strip():
        raise CommandError("--metrics-host must not be empty")
    return host or "127.0.0.1"


def _listen(serve, port: int | None, host: str) -> None:
    """Bind the metrics port before any work starts: an address in use or not of this
    machine is a clear error, not a traceback."""
    try:
        serve()
    except OSError as exc:
        raise CommandError(f"--metrics-port: cannot listen on {host}:{port}: {exc}") from None


def _child_args(queues, concurrency, async_concurrency, poll_interval, batch_size, drain,
                shutdown_timeout, verbosity) -> list[str]:
    """The options of each worker process of ``--processes N``: the parent's own."""
    args = [f"--queue={q}" for q in queues]
    args += ["--concurrency", str(concurrency), "--async-concurrency", str(async_concurrency),
             "--shutdown-timeout", repr(shutdown_timeout), "-v", str(verbosity),
             "--skip-checks"]  # the parent ran them
    if poll_interval is not None:
        args += ["--poll-interval", repr(poll_interval)]
    if batch_size is not None:
        args += ["--batch-size", str(batch_size)]
    if drain:
        args.append("--drain")
    return args
