"""The wake-up protocol (``store.wakeup``): its messages, and on SQLite how invoke and
cancel wake local workers through a socket beside the database.

The workers here poll every 30 s (new work, cancel requests and their chores), so an
execution that starts, or a cancel that is noticed, within the few seconds each wait
allows was delivered by the wake-up, not by a poll.
"""

import os
import socket
import stat
import uuid
from pathlib import Path

import pytest
from django.db import connection, transaction

import conductor_django as conductor
from conductor_django.models import Execution
from conductor_django.store import wakeup

from .conftest import poll

sqlite_only = pytest.mark.skipif(
    os.environ.get("CONDUCTOR_TEST_DB", "sqlite") != "sqlite",
    reason="the local wake-up is for SQLite database files (servers have their own)")

#: Polls far slower than every wait below.
SLOW_POLL = {"CONDUCTOR_TEST_POLL": "30", "CONDUCTOR_TEST_CANCEL_POLL": "30",
             "CONDUCTOR_TEST_HEARTBEAT": "20", "CONDUCTOR_TEST_DEAD_AFTER": "90"}
#: Much shorter than the poll: only a wake-up gets the work done within it.
PROMPT = 8.0


def sockets(where: Path) -> list[Path]:
    return sorted(where.glob(f"*{wakeup.SUFFIX}")) if where.is_dir() else []


def records(path: Path) -> list[str]:
    return path.read_text().split("\n")[:-1] if path.exists() else []


def stale_socket(where: Path, name: str) -> Path:
    """A socket file nobody reads, as a killed worker leaves it."""
    where.mkdir(exist_ok=True)
    path = where / f"{name}{wakeup.SUFFIX}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.close()
    return path


@pytest.fixture
def where(transactional_db):
    return wakeup.folder(connection)


def test_messages_decode():
    note = wakeup.decode_notification
    assert note(wakeup.NEW_CHANNEL, "q1") == wakeup.Wake("new", "q1")
    assert note(wakeup.NEW_CHANNEL, "") == wakeup.Wake("new", "")
    assert note(wakeup.CANCEL_CHANNEL, "e1\nwhy\nnot") == wakeup.Wake("cancel", "e1",
                                                                     "why\nnot")
    assert note(wakeup.CANCEL_CHANNEL, "e1\n") == wakeup.Wake("cancel", "e1", "")
    # the id alone: the reason was too long to send, the listener reads it
    assert note(wakeup.CANCEL_CHANNEL, "e1") == wakeup.Wake("cancel", "e1", None)
    for wake in (wakeup.Wake("new", "q1"), wakeup.Wake("cancel", "e1")):
        kind = wakeup.NEW if wake.kind == "new" else wakeup.CANCEL
        assert wakeup.decode_datagram(wakeup.encode_datagram(kind, wake.detail)) == wake
    assert wakeup.decode_datagram(b"") is None  # Inbox.interrupt's
    assert wakeup.decode_datagram(b"x1") is None


def test_each_database_has_its_transport(transactional_db):
    expected = {"sqlite": wakeup.SOCKET, "postgresql": wakeup.NOTIFY, "mysql": None}
    assert wakeup.transport("default") == expected[connection.vendor]


@pytest.mark.skipif(os.environ.get("CONDUCTOR_TEST_DB", "sqlite") == "mysql",
                    reason="MariaDB has no wake-up: its workers poll")
def test_a_reason_too_long_for_a_message_reaches_the_handler_at_once(
        start_worker, transactional_db, tmp_path):
    """PostgreSQL sends the id alone when the reason is too long for a payload (and a
    SQLite datagram never carries it): the listener reads it from the row."""
    out = tmp_path / "loop.log"
    start_worker(env=SLOW_POLL)
    eid = conductor.invoke("wake-loop", {"file": str(out)})
    poll(lambda: records(out), timeout=30, message="the handler's start")
    reason = "r" * (wakeup.NOTIFY_REASON_BYTES + 100)
    assert conductor.cancel(eid, reason=reason)
    poll(lambda: len(records(out)) == 2, timeout=PROMPT, message="the handler noticing")
    assert records(out)[1].split()[:2] == ["noticed", str(len(reason))]
    row = poll(lambda: Execution.objects.filter(pk=eid, status="cancelled").first(),
               timeout=PROMPT, message="the execution ending cancelled")
    assert row.last_error == reason


def test_servers_have_no_local_wakeup(transactional_db):
    expected = connection.vendor == "sqlite"
    assert (wakeup.folder(connection) is not None) == expected


@sqlite_only
def test_invoke_wakes_an_idle_worker(start_worker, where, tmp_path):
    out = tmp_path / "runs.log"
    worker = start_worker("--concurrency", "2", env=SLOW_POLL)
    poll(lambda: sockets(where), timeout=30, message="the worker's wake-up socket")
    conductor.invoke("wake-record", {"file": str(out), "n": 0})
    poll(lambda: len(records(out)) == 1, timeout=PROMPT, message="the first start")
    # the worker is idle now, waiting on its socket: the next one is woken up too
    conductor.invoke("wake-record", {"file": str(out), "n": 1})
    poll(lambda: len(records(out)) == 2, timeout=PROMPT, message="the second start")
    assert sorted(line.split()[0] for line in records(out)) == ["0", "1"]
    worker.signal(15)
    assert worker.wait(timeout=30) == 0, worker.output()
    assert sockets(where) == [], "a worker that stops removes its socket"


@sqlite_only
def test_cancel_reaches_a_running_handler_at_once(start_worker, where, tmp_path):
    out = tmp_path / "loop.log"
    start_worker(env=SLOW_POLL)
    poll(lambda: sockets(where), timeout=30, message="the worker's wake-up socket")
    eid = conductor.invoke("wake-loop", {"file": str(out)})
    poll(lambda: records(out), timeout=PROMPT, message="the handler's start")
    assert conductor.cancel(eid, reason="stop now")
    poll(lambda: len(records(out)) == 2, timeout=PROMPT, message="the handler noticing")
    assert [line.split()[0] for line in records(out)] == ["started", "noticed"]
    row = poll(lambda: Execution.objects.filter(pk=eid, status="cancelled").first(),
               timeout=PROMPT, message="the execution ending cancelled")
    assert row.last_error == "stop now"


@sqlite_only
def test_several_workers_and_a_stale_socket(start_worker, where, tmp_path):
    out = tmp_path / "runs.log"
    stale = stale_socket(where, "0" * 32)
    start_worker(env=SLOW_POLL)
    start_worker(env=SLOW_POLL)
    poll(lambda: len(sockets(where)) == 3, timeout=30, message="both workers' sockets")
    conductor.invoke_many("wake-record",
                          [{"payload": {"file": str(out), "n": n}} for n in range(20)])
    poll(lambda: len(records(out)) >= 20, timeout=PROMPT, message="twenty starts")
    assert sorted(int(line.split()[0]) for line in records(out)) == list(range(20))
    assert not stale.exists(), "the sender removes a socket that refuses datagrams"
    assert len(sockets(where)) == 2


@sqlite_only
def test_poke_follows_the_commit(where):
    inbox = wakeup.Inbox(where, uuid.uuid4(), connection.settings_dict["NAME"])
    try:
        with transaction.atomic():
            conductor.invoke("wake-record", {"file": "/dev/null", "n": 0}, queue="q1")
            assert inbox.receive(0) == [], "nothing is announced before the commit"
        assert inbox.receive(PROMPT) == [b"nq1"]
        with transaction.atomic():
            conductor.invoke("wake-record", {"file": "/dev/null", "n": 1})
            transaction.set_rollback(True)
        eid = conductor.invoke("wake-record", {"file": "/dev/null", "n": 2}, queue="q2")
        # the rolled-back invoke announced nothing: the next datagram is the third's
        assert inbox.receive(PROMPT) == [b"nq2"]
        Execution.objects.filter(pk=eid).update(status="running")
        assert conductor.cancel(eid)
        assert inbox.receive(PROMPT) == [b"c" + eid.encode()]
    finally:
        inbox.close()
    assert not inbox.path.exists()


def test_missing_folder_and_rights(tmp_path, settings):
    assert wakeup.send(tmp_path / "nowhere", b"n") == 0  # no worker: nothing to do
    database = tmp_path / "db.sqlite3"
    database.touch()
    database.chmod(0o640)
    where = wakeup.folder_for(str(database))
    inbox = wakeup.Inbox(where, uuid.uuid4(), str(database))
    try:
        assert stat.S_IMODE(inbox.path.stat().st_mode) == 0o640  # the database's rights
        assert stat.S_IMODE(where.stat().st_mode) & 0o750 == 0o750  # its group may list it
        assert wakeup.send(where, b"nx") == 1
        assert inbox.receive(PROMPT) == [b"nx"]
    finally:
        inbox.close()


def test_a_long_database_path_uses_the_temporary_directory(tmp_path):
    class Conn:  # what folder() reads of a connection
        vendor = "sqlite"
        settings_dict = {"NAME": str(tmp_path / ("d" * 120) / "db.sqlite3")}

        def is_in_memory_db(self):
            return False

    where = wakeup.folder(Conn())
    assert where is not None and len(str(where)) < wakeup.MAX_SOCKET_PATH
    assert where.name.startswith("conductor-wake-")


@pytest.mark.skipif(os.environ.get("CONDUCTOR_TEST_DB", "sqlite") != "postgres",
                    reason="the LISTEN session is PostgreSQL's")
def test_the_worker_listens_again_after_its_listen_session_is_killed(
        start_worker, transactional_db, tmp_path):
    out = tmp_path / "runs.log"
    worker = start_worker(env=SLOW_POLL)

    def listening() -> list[int]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                           " AND query LIKE 'LISTEN %%' AND pid <> pg_backend_pid()")
            return [pid for (pid,) in cursor.fetchall()]

    [first] = poll(listening, timeout=30, message="the worker's LISTEN session")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [first])
    poll(lambda: [p for p in listening() if p != first], timeout=30,
         message="a new LISTEN session")
    conductor.invoke("wake-record", {"file": str(out), "n": 0})
    poll(lambda: records(out), timeout=PROMPT, message="a start woken by NOTIFY")
    assert "database back for the LISTEN connection" in poll(
        lambda: "database back" in worker.output() and worker.output(), timeout=PROMPT,
        message="the outage's last line")
