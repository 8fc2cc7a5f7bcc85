#!/usr/bin/env python
"""conductor_django beside the reference (Postgres Conductor) in the peer harness.

``make bench-reference`` (also the last step of ``make bench``) runs the side-by-side
benchmark of the shared peer harness (``../shared/bench``, or ``CONDUCTOR_PEER_BENCH``)
with two peers only: conductor_django, installed from this checkout, and the reference,
whose source the harness takes from a git dir (``PGCONDUCTOR_GIT_DIR``) or a copy it
made before. Without the harness or the reference's source it says so and exits 0.

The harness is copied to ``build/peerbench`` (its virtualenv and the reference's copy
are kept there between runs). Each run's ratios to the reference - drain, bulk and
one-by-one enqueue rates, start latency - are saved as
``bench/results/reference-<UTC time>.json`` and compared with the previous saved run of
the same N: a ratio more than 10 % worse is printed in red and flagged ``REGRESSED``
(what goes in a closing note). Ratios, not rates: both systems run in the same rounds on
the same machine, so a slower or busier machine moves both.

``--processes N`` also measures ``conductor_worker --processes N`` as a third peer.

Usage: ``python bench/reference.py [--rounds 3] [--n 5000] [--processes 2] [--also celery]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import history  # noqa: E402

RED, RESET = "\033[31m", "\033[0m"

#: The third peer, ``conductor_worker --processes N``: an adapter added to the harness's
#: copy (the harness finds every ``peers/*/adapter.py``).
PROCESSES_ADAPTER = '''"""conductor_django with ``conductor_worker --processes N``."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "conductor_django"))
from adapter import CONCURRENCY, ConductorDjango  # noqa: E402

PROCESSES = os.environ.get("BENCH_CDJ_PROCESSES", "2")


class ConductorDjangoProcesses(ConductorDjango):
    key = "conductor_django_processes"
    label = f"conductor_django --processes {PROCESSES} (PostgreSQL)"
    setting = f"manage.py conductor_worker --processes {PROCESSES} --concurrency {CONCURRENCY}"

    def worker_cmd(self):
        return [*super().worker_cmd(), "--processes", PROCESSES]


ADAPTERS = [ConductorDjangoProcesses()]
'''

#: (key, label, how to get the value from the harness's per-peer summary, higher is better)
RATIOS = (
    ("drain", "drain rate / reference", "w2_seconds", True),
    ("bulk", "bulk enqueue rate / reference", "w1_bulk_seconds", True),
    ("single", "one-by-one enqueue rate / reference", "w1_single_seconds", True),
    ("start_p50", "start latency p50 / reference (lower is better)", "w3_p50_ms", False),
)


def harness_source() -> Path | None:
    path = Path(os.environ.get("CONDUCTOR_PEER_BENCH", ROOT.parent / "shared" / "bench"))
    return path if (path / "run_peers.sh").is_file() else None


def prepare(source: Path, work: Path, processes: int) -> None:
    """Copy the harness to ``work`` (keeping its virtualenv, the reference's copy and the
    earlier runs), writable, with the processes peer added."""
    keep = {".venv", "runs", "vendor", "node_modules"}
    work.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, work, dirs_exist_ok=True,
                    ignore=lambda d, names: [n for n in names if n in keep])
    for path in work.rglob("*"):
        if ".venv" not in path.parts and "node_modules" not in path.parts:
            path.chmod(path.stat().st_mode | 0o200)
    extra = work / "peers" / "conductor_django_processes"
    if processes > 1:
        extra.mkdir(exist_ok=True)
        (extra / "adapter.py").write_text(PROCESSES_ADAPTER)
    elif extra.exists():
        shutil.rmtree(extra)


def reference_available(work: Path) -> bool:
    vendored = work / "peers" / "pgconductor" / "vendor" / "pgconductor-js" / "src" / "index.ts"
    return bool(os.environ.get("PGCONDUCTOR_GIT_DIR") or os.environ.get("PGCONDUCTOR_SRC")
                or vendored.is_file())


def run_harness(work: Path, args: argparse.Namespace) -> dict:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = work / "runs" / f"reference-{stamp}"
    peers = ["conductor_django", "pgconductor"]
    if args.processes > 1:
        peers.insert(1, "conductor_django_processes")
    peers += [peer for peer in args.also.split(",") if peer and peer not in peers]
    env = {**os.environ, "BENCH_EXTRA_PIP": f"-e {ROOT}",
           "BENCH_CDJ_PROCESSES": str(args.processes)}
    cmd = ["bash", str(work / "run_peers.sh"), "--peers", ",".join(peers), "--no-cancel",
           "--rounds", str(args.rounds), "--n", str(args.n), "--out", str(out)]
    subprocess.run(cmd, cwd=work, env=env, check=True)
    return json.loads((out / "results.json").read_text())


def rate(summary: dict, field: str) -> float | None:
    value = summary.get(field)
    return value if value else None


def ratio_rows(results: dict, peer: str, n: int) -> list[dict]:
    """The ratios of ``peer`` to the reference, as ``history`` rows; each round's ratio
    is computed within that round, and the median of rounds is kept."""
    mine, ref = results["results"].get(peer, []), results["results"].get("pgconductor", [])
    rows = []
    for key, label, field, faster_is_higher in RATIOS:
        per_round = [r[field] and o[field] and (o[field] / r[field])
                     for r, o in zip(mine, ref, strict=False)]
        per_round = [x for x in per_round if x]
        if not per_round:
            continue
        value = statistics.median(per_round)
        # durations: reference / ours is our rate over the reference's (higher is better);
        # the start latency is kept as ours over the reference's (lower is better)
        if not faster_is_higher:
            value = 1 / value
        rows.append({"key": f"{peer}:{key}", "label": f"{peer}: {label}", "value": value,
                     "text": f"{value:.2f}x", "higher_is_better": faster_is_higher})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--processes", type=int, default=2,
                    help="also measure conductor_worker --processes N (1: not)")
    ap.add_argument("--also", default="",
                    help="more peers of the harness in the same rounds, e.g. celery (their "
                         "numbers are printed with the rest; the ratios stay to the "
                         "reference)")
    ap.add_argument("--work", type=Path, default=ROOT / "build" / "peerbench")
    ap.add_argument("--results-dir", type=Path, default=HERE / "results")
    a = ap.parse_args()
    source = harness_source()
    if source is None:
        print("bench-reference: the peer harness (../shared/bench or CONDUCTOR_PEER_BENCH) "
              "is not here: skipped")
        return 0
    prepare(source, a.work, a.processes)
    if not reference_available(a.work):
        print("bench-reference: no source of the reference (set PGCONDUCTOR_GIT_DIR to a git "
              "dir of psteinroe/postgres-conductor): skipped")
        return 0
    results = run_harness(a.work, a)
    rows = ratio_rows(results, "conductor_django", a.n)
    if a.processes > 1:
        rows += ratio_rows(results, "conductor_django_processes", a.n)
    for peer in [p for p in a.also.split(",") if p]:
        summary = results.get("summary", {}).get(peer) or {}
        if summary.get("w3_p50_ms") is not None:
            print(f"{peer}: start latency p50 {summary['w3_p50_ms']:.1f} ms "
                  f"(conductor_django: {results['summary']['conductor_django']['w3_p50_ms']:.1f}"
                  " ms)")
    print("\n| ratio to the reference (median of rounds) | value |\n|---|---|")
    for row in rows:
        print(f"| {row['label']} | {row['text']} |")
    saved = history.save({"db": "reference", "n": a.n, "rounds": a.rounds,
                          "processes": a.processes, "versions": results.get("versions"),
                          "harness_run": results.get("stamp")}, rows, a.results_dir)
    print(f"\nsaved {saved.relative_to(ROOT) if saved.is_relative_to(ROOT) else saved}")
    before = history.previous(a.results_dir, "reference", a.n, exclude=saved)
    if before is None:
        print("no previous run of the same N to compare with")
        return 0
    lines, regressed = history.compare(rows, json.loads(before.read_text())["rows"])
    print(f"\nchange against {before.name}:\n")
    for line in lines:
        print(f"{RED}{line}{RESET}" if "REGRESSED" in line else line)
    if regressed:
        print(f"\n{RED}REGRESSED against the reference by more than "
              f"{history.THRESHOLD:.0%}: {', '.join(regressed)}{RESET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
