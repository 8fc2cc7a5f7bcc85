"""A throwaway PostgreSQL server of one test module, that tests may restart, stop and
fill up: ``initdb`` + ``pg_ctl`` in a temporary directory, on a free port of its own.

The shared server on 5432 is never touched. Run as the ``postgres`` user when the
tests run as root (PostgreSQL refuses root). Also: ``use(db)`` points the test
process's default connection at a database of this server for one test (workers
started with ``worker_env`` follow it), and ``connection_limit_reached`` takes up the
free connection slots as other clients would.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def bindir() -> Path | None:
    """The newest installed PostgreSQL server's bin directory (Debian's layout), or
    the one of ``pg_ctl`` on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivatePostgres:
    """One server: ``start``, ``stop(mode)``, ``restart(mode)``; ``sql`` runs a statement
    as the superuser."""

    def __init__(self, max_connections: int = 60, host: str = "127.0.0.1",
                 inside: list[str] | None = None, settings: str = "") -> None:
        """``host``: the address it listens on (and is reached at); ``inside``: a command
        prefix to run the server in (``ip netns exec NAME``); ``settings``: more
        ``-c name=value`` options of the server."""
        where = bindir()
        if where is None:
            raise RuntimeError("no PostgreSQL server binaries (pg_ctl, initdb) found")
        self.bin = where
        self.port = free_port()
        self.host = host
        self.inside = inside or []
        self.settings = settings
        self.dir = Path(tempfile.mkdtemp(prefix="conductor-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.max_connections = max_connections
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.dir, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8")
        if host != "127.0.0.1":
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write(f"host all all {host}/24 trust\n")

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        subprocess.run([*self.inside, *self._as, str(self.bin / tool), *args], check=True,
                       timeout=timeout,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.dir)

    def start(self) -> None:
        # fsync off: a restart here stops the server's processes, never the machine, so
        # what was written to the kernel survives. synchronous_commit stays on: off, an
        # immediate stop (a crash) would lose commits already acknowledged to clients.
        options = (f"-p {self.port} -c listen_addresses={self.host} -k {self.dir} "
                   f"-c max_connections={self.max_connections} -c fsync=off {self.settings}")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def connect(self, dbname: str = "postgres", **kwargs: Any) -> Any:
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user="postgres",
                               dbname=dbname, autocommit=True, connect_timeout=5, **kwargs)

    def sql(self, statement: str, dbname: str = "postgres") -> list[tuple]:
        with self.connect(dbname) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []

    def worker_env(self, dbname: str) -> dict[str, str]:
        """The environment of a worker (or any ``manage.py`` command) on ``dbname``."""
        return {"CONDUCTOR_TEST_DB": "postgres", "CONDUCTOR_PG_HOST": self.host,
                "CONDUCTOR_PG_PORT": str(self.port), "CONDUCTOR_PG_USER": "postgres",
                "CONDUCTOR_PG_PASSWORD": "", "CONDUCTOR_TEST_DB_NAME": dbname}

    def migrate(self, dbname: str) -> None:
        """Create ``dbname`` with the project's tables (``manage.py migrate``)."""
        self.sql(f'CREATE DATABASE "{dbname}"')
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings",
               "PYTHONPATH": str(ROOT), **self.worker_env(dbname)}
        env.pop("CONDUCTOR_PGBOUNCER_PORT", None)
        subprocess.run([sys.executable, "-m", "django", "migrate", "-v", "0"], cwd=ROOT,
                       env=env, check=True, timeout=300)

    def copy(self, template: str, dbname: str) -> None:
        self.sql(f'CREATE DATABASE "{dbname}" TEMPLATE "{template}"')

    @contextlib.contextmanager
    def use(self, dbname: str) -> Iterator[None]:
        """Point the test process's default connection at ``dbname`` here, for a while."""
        from django.db import connection

        saved = {k: connection.settings_dict[k] for k in ("HOST", "PORT", "NAME")}
        connection.close()
        connection.settings_dict.update(HOST=self.host, PORT=str(self.port), NAME=dbname)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                connection.close()
            connection.settings_dict.update(saved)

    def take_free_slots(self, held: list[Any], seconds: float = 0.0) -> None:
        """Open connections (appended to ``held``) until the server refuses one, and
        keep taking the slots that free up for ``seconds`` more: other clients that use
        up the connection limit (the superuser's reserved slots too)."""
        until = time.monotonic() + seconds
        while True:
            try:
                held.append(self.connect())
                continue
            except Exception:  # noqa: BLE001 - "too many clients already": the limit
                pass
            if time.monotonic() >= until:
                return
            time.sleep(0.005)

    @contextlib.contextmanager
    def connection_limit_reached(self) -> Iterator[list[Any]]:
        """Every connection slot taken (``take_free_slots``) until the block ends."""
        held: list[Any] = []
        try:
            self.take_free_slots(held)
            yield held
        finally:
            for conn in held:
                with contextlib.suppress(Exception):
                    conn.close()
