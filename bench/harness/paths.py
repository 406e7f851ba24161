"""Where the benchmark finds the repository, and where it writes its results (bench/out/, ignored by git)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
RESULTS = ROOT / "bench" / "out" / "results.json"
