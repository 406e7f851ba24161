"""The results file: what the run measured (every repeat and level), the machine, the sizes, the rows.

Written to bench/out/results.json (ignored by git) at the end of a run; --table reads one back.
"""

import json
import os
import platform
import time
from pathlib import Path

from bench.harness.paths import RESULTS


def machine() -> dict:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}


def write(results: dict) -> Path:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return RESULTS


def read(path) -> dict:
    return json.loads(Path(path).read_text())
