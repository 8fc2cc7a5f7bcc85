"""``make dist``: the wheel and the sdist hold the templates, static files, migrations and
the SQL files (``store/sql/``).

Usage: ``python scripts/check_dist.py dist`` (exits 1 naming what is missing).
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "conductor_django"
KINDS = ("templates", "static", "migrations", "store/sql")


def expected() -> set[str]:
    """Every file under the package's templates/, static/, migrations/ and store/sql/
    (no caches)."""
    files = set()
    for kind in KINDS:
        for path in (PACKAGE / kind).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                files.add(str(path.relative_to(ROOT)))
    return files


def missing(dist: Path) -> list[str]:
    wheels, sdists = list(dist.glob("*.whl")), list(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        return [f"one wheel and one sdist in {dist}, found {wheels + sdists}"]
    want = expected()
    with zipfile.ZipFile(wheels[0]) as wheel:
        in_wheel = set(wheel.namelist())
    with tarfile.open(sdists[0]) as sdist:
        in_sdist = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    problems = [f"{wheels[0].name} lacks {f}" for f in sorted(want - in_wheel)]
    problems += [f"{sdists[0].name} lacks {f}" for f in sorted(want - in_sdist)]
    return problems


def main(argv: list[str]) -> int:
    problems = missing(Path(argv[1] if len(argv) > 1 else "dist"))
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"dist: {len(expected())} template, static, migration and SQL files in both")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
