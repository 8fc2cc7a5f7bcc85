"""``make demo`` really shows a running execution being cancelled (SQLite, subprocesses)."""

import os
import signal
import socket
import subprocess
import sys

import pytest

from tests.conftest import ROOT, poll

pytestmark = pytest.mark.skipif(
    os.environ.get("CONDUCTOR_TEST_DB", "sqlite") != "sqlite",
    reason="the example project runs on SQLite; once per suite is enough")


def demo(tmp_path, *args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "EXAMPLE_DB": str(tmp_path / "demo.sqlite3"),
           "DJANGO_SETTINGS_MODULE": "example.settings", "PYTHONPATH": str(ROOT)}
    env.pop("CONDUCTOR_TEST_DB_NAME", None)
    return subprocess.Popen(
        [sys.executable, str(ROOT / "example_project" / "demo.py"), *args],
        cwd=ROOT / "example_project", env=env, text=True, start_new_session=True, **popen)


def test_demo_cancels_a_running_execution_and_steps_aside_from_a_busy_port(tmp_path):
    with socket.socket() as busy:  # something else listens on the port the demo wants
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        proc = demo(tmp_path, "--once", "--port", str(taken),
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert f"port {taken} is already in use" in out
    assert "send-welcome-email -> {'sent': True}" in out
    assert "status:     cancelled" in out
    assert "last_error: Cancelled by user (demo)" in out
    banners = [line for line in out.splitlines() if line.startswith("Admin: http://127.0.0.1:")]
    assert len(banners) == 2 and f":{taken}/" not in banners[0]  # at the start and the end
    assert "password 'admin'" in banners[-1]


def test_a_port_in_time_wait_is_taken_again_after_a_quick_restart(tmp_path):
    with socket.socket() as server:  # the admin of a demo stopped a moment ago
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as runserver's
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            accepted.close()  # the server side closes first: its port is in TIME-WAIT
            client.recv(1)
    env = {**os.environ, "EXAMPLE_DB": str(tmp_path / "demo.sqlite3"), "PYTHONPATH": str(ROOT)}
    env.pop("CONDUCTOR_TEST_DB_NAME", None)
    out = subprocess.run(
        [sys.executable, "-c", f"import demo; print(demo.free_port({port}))"],
        cwd=ROOT / "example_project", env=env, text=True, capture_output=True, timeout=60,
        check=True).stdout
    assert out.strip() == f"({port}, True)"


def test_demo_exits_non_zero_when_the_worker_dies(tmp_path):
    log = tmp_path / "demo.log"
    with open(log, "w") as out:
        proc = demo(tmp_path, "--port", "0", stdout=out, stderr=subprocess.STDOUT)
        try:
            line = poll(lambda: next((x for x in log.read_text().splitlines()
                                      if x.startswith("demo: worker pid ")), None),
                        timeout=60, message="the demo's worker")
            poll(lambda: "press Ctrl-C" in log.read_text(), timeout=90,
                 message="the demo to finish its run")
            os.kill(int(line.split()[3].rstrip(",")), signal.SIGKILL)
            assert proc.wait(timeout=30) == 1
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
    assert "the worker exited" in log.read_text()


def test_example_place_order_creates_its_order_exactly_once(tmp_path):
    """The example's atomic step: the order row exists once, written by the worker."""
    env = {**os.environ, "EXAMPLE_DB": str(tmp_path / "orders.sqlite3"),
           "DJANGO_SETTINGS_MODULE": "example.settings", "PYTHONPATH": str(ROOT)}
    env.pop("CONDUCTOR_TEST_DB_NAME", None)

    def manage(*args: str) -> str:
        proc = subprocess.run([sys.executable, "manage.py", *args],
                              cwd=ROOT / "example_project", env=env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    manage("migrate", "-v", "0")
    invoke = ("import conductor_django as c; "
              "print(c.invoke('place-order', {'number': 'A-1', 'customer': 'Ada', "
              "'total': '42.00'}))")
    eid = manage("shell", "-v", "0", "-c", invoke).strip()
    manage("conductor_worker", "--drain")
    check = ("import conductor_django as c; from shop.models import Order; "
             f"e = c.get('{eid}'); "
             "print(e.status, Order.objects.filter(number='A-1').count(), "
             "e.steps.get(name='create-order').result == "
             "{'order_id': Order.objects.get(number='A-1').pk})")
    assert manage("shell", "-v", "0", "-c", check).split() == ["completed", "1", "True"]


def test_example_async_view_invokes_and_awaits_an_async_task(tmp_path):
    """The example's async view: ainvoke + await_result, answered by a real worker that
    runs the async ``price-quote`` task (its HTTP-like calls in steps, once each)."""
    env = {**os.environ, "EXAMPLE_DB": str(tmp_path / "quotes.sqlite3"),
           "DJANGO_SETTINGS_MODULE": "example.settings", "PYTHONPATH": str(ROOT)}
    env.pop("CONDUCTOR_TEST_DB_NAME", None)
    cwd = ROOT / "example_project"
    migrate = subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=cwd,
                             env=env, capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stderr
    worker = subprocess.Popen([sys.executable, "manage.py", "conductor_worker"], cwd=cwd,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        ask = ("import json; from django.test import Client; "
               "c = Client(SERVER_NAME='localhost'); "
               "r = c.post('/quote/', json.dumps({'customer': 'vip-ada', "
               "'basket': {'tea': 2, 'cake': 1}}), content_type='application/json'); "
               "bad = c.post('/quote/', 'nope', content_type='application/json'); "
               "import conductor_django as cd; d = r.json(); e = cd.get(d['execution']); "
               "print(r.status_code, d['total'], d['discount'], e.status, "
               "sorted(e.steps.values_list('name', flat=True)), bad.status_code)")
        out = subprocess.run([sys.executable, "manage.py", "shell", "-v", "0", "-c", ask],
                             cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.strip() == (
            "200 9.81 10 completed ['discount', 'price-cake', 'price-tea'] 400")
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            assert worker.wait(timeout=30) == 0
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
