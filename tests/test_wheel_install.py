"""The README's installation, for real: the built wheel in a brand-new virtualenv.

Builds the wheel from this checkout, creates a virtualenv without this one's packages,
installs the wheel (pip fetches Django and croniter from the configured index, so the
wheel's dependencies are proven), runs ``django-admin startproject``, adds the app and
a ``tasks.py``, runs ``manage.py check`` and ``migrate``, invokes a task and runs it
with ``conductor_worker --drain``. On SQLite, and on PostgreSQL when it is reachable
(in a database of its own, dropped afterwards).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT, poll

pytestmark = pytest.mark.skipif(
    os.environ.get("CONDUCTOR_TEST_DB") in ("postgres", "mysql", "pgbouncer"),
    reason="installs into SQLite and PostgreSQL itself; once per suite is enough")

PG = {"host": os.environ.get("CONDUCTOR_PG_HOST", "127.0.0.1"),
      "port": os.environ.get("CONDUCTOR_PG_PORT", "5432"),
      "user": os.environ.get("CONDUCTOR_PG_USER", "postgres"),
      "password": os.environ.get("CONDUCTOR_PG_PASSWORD", "")}

TASKS = '''
from conductor_django import task

@task(name="add")
def add(event, ctx):
    total = ctx.step("sum", lambda: sum(event.payload))
    return {"total": total}
'''

RUN = '''
import conductor_django as conductor
eid = conductor.invoke("add", [1, 2, 3])
print("invoked", eid)
'''

CHECK = '''
from conductor_django.models import Execution
row = Execution.objects.get()
print("result", row.status, row.result, row.steps.count())
'''


def run(*cmd: str | Path, cwd: Path | None = None, env: dict | None = None,
        timeout: float = 600) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A new virtualenv with the freshly built wheel (and a PostgreSQL driver) installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "build", "--wheel", "--outdir", tmp / "dist", ROOT,
        cwd=tmp)
    [wheel] = (tmp / "dist").glob("conductor_django-*.whl")
    run(sys.executable, "-m", "venv", tmp / "venv")
    python = tmp / "venv" / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel,
        "psycopg[binary]")
    return tmp / "venv"


def pg_reachable() -> bool:
    try:
        import psycopg

        psycopg.connect(dbname="postgres", connect_timeout=3, **PG).close()
    except Exception:  # noqa: BLE001 - any failure means: not reachable
        return False
    return True


def pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(dbname="postgres", autocommit=True, **PG) as conn:
        conn.execute(sql)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_wheel_installs_into_a_new_project_and_runs_a_task(venv, tmp_path, backend):
    database = f"conductor_wheel_{os.getpid()}"
    if backend == "postgres":
        if not pg_reachable():
            pytest.skip("PostgreSQL is not reachable")
        pg_admin(f'DROP DATABASE IF EXISTS "{database}"')
        pg_admin(f'CREATE DATABASE "{database}"')
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    python = venv / "bin" / "python"
    try:
        run(venv / "bin" / "django-admin", "startproject", "mysite", cwd=tmp_path, env=env)
        project = tmp_path / "mysite"
        run(python, "manage.py", "startapp", "shop", cwd=project, env=env)
        (project / "shop" / "tasks.py").write_text(TASKS)
        settings = project / "mysite" / "settings.py"
        text = settings.read_text().replace(
            "INSTALLED_APPS = [", 'INSTALLED_APPS = [\n    "conductor_django",\n    "shop",', 1)
        if backend == "postgres":
            text += textwrap.dedent(f"""
                DATABASES = {{"default": {{
                    "ENGINE": "django.db.backends.postgresql", "NAME": {database!r},
                    "USER": {PG['user']!r}, "PASSWORD": {PG['password']!r},
                    "HOST": {PG['host']!r}, "PORT": {PG['port']!r},
                }}}}
            """)
        settings.write_text(text)

        run(python, "manage.py", "check", cwd=project, env=env)
        run(python, "manage.py", "migrate", "-v", "0", cwd=project, env=env)
        assert "invoked" in run(python, "manage.py", "shell", "-c", RUN, cwd=project, env=env)
        run(python, "manage.py", "conductor_worker", "--drain", cwd=project, env=env)
        out = run(python, "manage.py", "shell", "-c", CHECK, cwd=project, env=env)
        assert "result completed {'total': 6} 1" in out
        # the installed package is the wheel's, not this checkout
        where = run(python, "-c", "import conductor_django; print(conductor_django.__file__)",
                    cwd=tmp_path, env=env)
        assert str(venv) in where
        # its admin templates, static files and migrations came with it
        package = Path(where.strip()).parent
        assert (package / "migrations" / "0001_initial.py").exists()
        assert list((package / "templates").rglob("*.html"))
        assert list((package / "static").rglob("*.*"))
    finally:
        if backend == "postgres":
            pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def test_make_dist_builds_without_the_dev_toolchain(tmp_path):
    plan = run("make", "-n", "dist", f"VENVBUILD={tmp_path / 'build-venv'}", cwd=ROOT)
    assert "build" in plan and "twine" in plan
    assert ".[dev]" not in plan and ".venv/bin" not in plan, plan


# --- the README's Quickstart, pasted as a reader would -----------------------------------

DOCTEST = """
import doctest, sys
text = open({path!r}).read()
test = doctest.DocTestParser().get_doctest(text, {{}}, "README Quickstart", None, 0)
runner = doctest.DocTestRunner()
runner.run(test)
sys.exit(1 if runner.failures else 0)
"""


def quickstart_blocks() -> list[tuple[str, str]]:
    """(language, text) of each code block of the README's Quickstart, in order."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


def paste_settings(settings: Path, snippet: str) -> None:
    """The settings block: its INSTALLED_APPS entries go into the list, the rest is
    added at the end of settings.py."""
    text = settings.read_text()
    for line in snippet.splitlines():
        apps = re.fullmatch(r"INSTALLED_APPS = \[\.\.\., (.*)\]", line)
        if apps:
            text = text.replace("INSTALLED_APPS = [", f"INSTALLED_APPS = [\n    {apps[1]},", 1)
        else:
            text += line + "\n"
    settings.write_text(text)


def test_the_readme_quickstart_works_pasted_into_a_new_project(venv, tmp_path):
    """A fresh startproject, the wheel, the Quickstart's blocks pasted one after the
    other (Django's own e-mail settings), its two commands, a real worker, and the
    shell session's output exactly as printed."""
    blocks = quickstart_blocks()
    assert [lang for lang, _ in blocks] == ["python", "python", "sh", "python"], blocks
    (_, settings_block), (_, tasks_block), (_, commands), (_, session) = blocks
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    python = venv / "bin" / "python"
    run(venv / "bin" / "django-admin", "startproject", "mysite", cwd=tmp_path, env=env)
    project = tmp_path / "mysite"
    tasks_path = tasks_block.splitlines()[0].removeprefix("# ")  # "shop/tasks.py"
    app = tasks_path.split("/")[0]
    run(python, "manage.py", "startapp", app, cwd=project, env=env)
    settings = project / "mysite" / "settings.py"
    settings.write_text(settings.read_text().replace(
        "INSTALLED_APPS = [", f'INSTALLED_APPS = [\n    "{app}",', 1))  # the reader's app
    paste_settings(settings, settings_block)
    (project / tasks_path).write_text(tasks_block)

    lines = [line.split("#")[0].split() for line in commands.splitlines()]
    migrate, worker_command = [line for line in lines if line]
    assert migrate[:3] == ["python", "manage.py", "migrate"], migrate
    assert worker_command[:3] == ["python", "manage.py", "conductor_worker"], worker_command
    run(python, *migrate[1:], cwd=project, env=env)
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen([str(python), *worker_command[1:]], cwd=project, env=env,
                                  stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        (tmp_path / "session.txt").write_text(session)
        script = DOCTEST.format(path=str(tmp_path / "session.txt"))
        proc = subprocess.run([str(python), "manage.py", "shell", "-c", script], cwd=project,
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr + log.read_text()
        poll(lambda: "Subject: Welcome" in log.read_text(), timeout=30,
             message="the e-mail printed by the worker")
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=60)
    assert code == 0, log.read_text()
    assert "Welcome, ada@example.com!" in log.read_text()
