"""Running a script of bench/ from a test, at a small scale (its numbers go in the docs,
so the scripts must keep working)."""

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def run_bench_script(name: str, args: list[str], out: Path, **env: str) -> dict:
    """Run ``bench/<name>`` with ``args`` and ``--json out`` outside the test settings;
    its JSON result (the assertion shows its output if it failed)."""
    full_env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    full_env.update(env)
    proc = subprocess.run([sys.executable, str(BENCH / name), *args, "--json", str(out)],
                          env=full_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())
