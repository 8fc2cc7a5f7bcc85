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
