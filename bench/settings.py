"""Settings of the benchmarks: the test settings on a PostgreSQL database of their own."""

import os

os.environ.setdefault("CONDUCTOR_TEST_DB", "postgres")

from tests.settings import *  # noqa: E402,F403
from tests.settings import CONDUCTOR, DATABASES  # noqa: E402

DATABASES["default"]["NAME"] = os.environ.get("CONDUCTOR_BENCH_DB", "conductor_bench_flow")
CONDUCTOR = {**CONDUCTOR, "TASK_MODULES": ["bench.tasks"], "POLL_INTERVAL": 0.05}
