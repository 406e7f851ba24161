"""Where the benchmark finds the repository, and where it writes what it keeps.

bench/out/ (ignored by git) holds the last run's results.json and its servers' logs, and the last
soak's servers' logs in soak-logs/; BENCH_OUT=DIR puts them elsewhere (the tests use it to leave
bench/out alone).
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
OUT_DIR = Path(os.environ.get("BENCH_OUT") or ROOT / "bench" / "out")
RESULTS = OUT_DIR / "results.json"
LOGS = OUT_DIR / "logs"  # one file per server; replaced by the next run
SOAK_LOGS = OUT_DIR / "soak-logs"  # the same for `make soak` (bench/soak.py)


def shown(path: Path) -> str:
    """`path` relative to the repository when it is inside it (as the run prints it), else whole."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
