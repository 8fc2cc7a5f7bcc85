"""``make demo`` really shows a running execution being cancelled (SQLite, subprocesses)."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.skipif(os.environ.get("CONDUCTOR_TEST_DB") == "postgres",
                    reason="the example project runs on SQLite; once per suite is enough")
def test_demo_cancels_a_running_execution(tmp_path):
    env = {**os.environ, "EXAMPLE_DB": str(tmp_path / "demo.sqlite3"),
           "DJANGO_SETTINGS_MODULE": "example.settings", "PYTHONPATH": str(ROOT)}
    env.pop("CONDUCTOR_TEST_DB_NAME", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "example_project" / "demo.py"), "--once"],
        cwd=ROOT / "example_project", env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "send-welcome-email -> {'sent': True}" in proc.stdout
    assert "status:     cancelled" in proc.stdout
    assert "last_error: Cancelled by user (demo)" in proc.stdout
    assert "password 'admin'" in proc.stdout


@pytest.mark.skipif(os.environ.get("CONDUCTOR_TEST_DB") == "postgres",
                    reason="the example project runs on SQLite; once per suite is enough")
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
