"""The status page's recent history per backend: for each of the last 60 minutes, the calls made
to it, how many failed, and how long the first byte and the whole answer took.

Prometheus leaves time windows to its server; the page needs them without one. Each worker counts
in memory (a few dict updates per request) and writes its last hour to one small JSON file in the
run directory about once a second (`window-<pid>.json`, replaced atomically); whichever worker
answers reads every file. The files of workers that are gone are folded into `window-dead.json`
by the next reader, so the folder holds one file per live worker, plus one.

Without a run directory (the app alone in a test, `flask run`) the process's own counts are read.
"""

import bisect
import contextlib
import fcntl
import glob
import os
import time

from ..json_files import read_object, write_atomically

MINUTES = 60
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)  # + one for the rest
_FLUSH_EVERY = 1.0
_REQUESTS, _ERRORS, _TTFB, _DURATION = range(4)
_DEAD = "dead"


def _empty_minute() -> list:
    return [0, 0, [0] * (len(BUCKETS) + 1), [0] * (len(BUCKETS) + 1)]


class RecentWindow:
    """This process's last hour, per backend and minute, and the reading of every worker's."""

    def __init__(self, folder: str | None):
        self._folder = folder
        self._minutes = {}  # backend -> {minute: [requests, errors, ttfb buckets, duration buckets]}
        self._dirty = False
        self._flusher = None

    # --- counting ------------------------------------------------------------------------------

    def _minute(self, backend: str, now: float) -> list:
        minute = int(now // 60)
        minutes = self._minutes.setdefault(backend, {})
        counts = minutes.get(minute)
        if counts is None:
            counts = minutes[minute] = _empty_minute()
            for old in [m for m in minutes if m <= minute - MINUTES]:
                del minutes[old]
        self._dirty = True
        if self._flusher is None and self._folder:
            self._start_flusher()
        return counts

    def count_call(self, backend: str, failed: bool, now: float) -> None:
        """One call made to `backend` (an attempt), and whether it failed."""
        counts = self._minute(backend, now)
        counts[_REQUESTS] += 1
        if failed:
            counts[_ERRORS] += 1

    def count_latency(self, backend: str, ttfb: float | None, duration: float, now: float) -> None:
        counts = self._minute(backend, now)
        if ttfb is not None:
            counts[_TTFB][bisect.bisect_left(BUCKETS, ttfb)] += 1
        counts[_DURATION][bisect.bisect_left(BUCKETS, duration)] += 1

    # --- sharing -------------------------------------------------------------------------------

    def _start_flusher(self) -> None:
        from ..concurrency import start_daemon

        self._flusher = start_daemon(self._flush_forever)

    def _flush_forever(self) -> None:
        while True:
            time.sleep(_FLUSH_EVERY)
            self.flush()

    def flush(self) -> None:
        """Writes this process's minutes to its file, if anything changed since the last time."""
        if not self._dirty or not self._folder:
            return
        self._dirty = False
        _write(os.path.join(self._folder, f"window-{os.getpid()}.json"), self._minutes)

    def read(self) -> dict:
        """backend -> {minute: counts}, every worker's together (this one's as it is now)."""
        merged = {}
        _add(merged, self._minutes)
        if not self._folder:
            return merged
        mine = os.path.join(self._folder, f"window-{os.getpid()}.json")
        self._fold_dead()
        with _locked(self._folder, exclusive=False):
            for path in glob.glob(os.path.join(self._folder, "window-*.json")):
                if path != mine:
                    _add(merged, _read(path))
        return merged

    def _fold_dead(self) -> None:
        dead = [path for path in glob.glob(os.path.join(self._folder, "window-*.json")) if not _alive(_pid_of(path))]
        if not dead:
            return
        with _locked(self._folder, exclusive=True):
            target = os.path.join(self._folder, f"window-{_DEAD}.json")
            folded = _read(target)
            for path in dead:
                _add(folded, _read(path))
            _write(target, folded)
            for path in dead:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)


# --- the files --------------------------------------------------------------------------------


def _pid_of(path: str) -> str:
    return os.path.basename(path)[len("window-"):-len(".json")]


def _alive(pid: str) -> bool:
    if pid == _DEAD:
        return True  # not a worker: the place dead workers' minutes are kept
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


@contextlib.contextmanager
def _locked(folder: str, exclusive: bool):
    with open(os.path.join(folder, ".window.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write(path: str, minutes: dict) -> None:
    oldest = int(time.time() // 60) - MINUTES
    write_atomically(path, {backend: {str(m): c for m, c in per_minute.items() if m > oldest} for backend, per_minute in minutes.items()})


def _read(path: str) -> dict:
    """A worker's file; {} when it is gone meanwhile, or not ours to understand: nothing to add."""
    data = read_object(path)
    return {backend: {int(m): c for m, c in per_minute.items()} for backend, per_minute in data.items() if isinstance(per_minute, dict)}


def _add(into: dict, minutes: dict) -> None:
    for backend, per_minute in minutes.items():
        target = into.setdefault(backend, {})
        for minute, counts in per_minute.items():
            total = target.get(minute)
            if total is None:
                target[minute] = [counts[0], counts[1], list(counts[2]), list(counts[3])]
                continue
            total[_REQUESTS] += counts[_REQUESTS]
            total[_ERRORS] += counts[_ERRORS]
            for which in (_TTFB, _DURATION):
                total[which] = [a + b for a, b in zip(total[which], counts[which])]


# --- what the page shows ------------------------------------------------------------------------


def quantile(q: float, counts: list) -> float | None:
    """Like PromQL's histogram_quantile over BUCKETS: linear within the bucket of the q-th value."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    below, lower = 0, 0.0
    for index, count in enumerate(counts):
        upper = BUCKETS[index] if index < len(BUCKETS) else None
        if count and below + count >= rank:
            if upper is None:
                return lower  # beyond the last bound: the bound is all we know
            return lower + (upper - lower) * ((rank - below) / count)
        below += count
        if upper is not None:
            lower = upper
    return lower


def summary(per_minute: dict, now: float) -> dict:
    """One backend's figures: counts over 5 and 60 minutes, percentiles over the last 5, and the
    per-minute series of the last hour (oldest first) for the page's charts."""
    current = int(now // 60)
    ttfb, duration = [0] * (len(BUCKETS) + 1), [0] * (len(BUCKETS) + 1)
    figures = {"requests_5m": 0, "errors_5m": 0, "requests_60m": 0, "errors_60m": 0}
    series = {"requests": [], "errors": [], "ttfb_p95": []}
    for minute in range(current - MINUTES + 1, current + 1):
        counts = per_minute.get(minute) or _empty_minute()
        series["requests"].append(counts[_REQUESTS])
        series["errors"].append(counts[_ERRORS])
        series["ttfb_p95"].append(quantile(0.95, counts[_TTFB]))
        figures["requests_60m"] += counts[_REQUESTS]
        figures["errors_60m"] += counts[_ERRORS]
        if minute > current - 5:
            figures["requests_5m"] += counts[_REQUESTS]
            figures["errors_5m"] += counts[_ERRORS]
            ttfb = [a + b for a, b in zip(ttfb, counts[_TTFB])]
            duration = [a + b for a, b in zip(duration, counts[_DURATION])]
    figures["ttfb_seconds"] = {"p50": quantile(0.5, ttfb), "p95": quantile(0.95, ttfb)}
    figures["duration_seconds"] = {"p50": quantile(0.5, duration), "p95": quantile(0.95, duration)}
    figures["last_hour"] = series
    return figures
