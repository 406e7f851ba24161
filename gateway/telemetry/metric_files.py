"""The folder of prometheus_client's multiprocess files, read safely and kept small.

Every worker writes its metrics to memory-mapped files named `<kind>_<pid>.db` in
PROMETHEUS_MULTIPROC_DIR. Two things the library leaves to us:

- **A file that cannot be read fails every reader.** A worker creates its file before sizing it;
  one killed in between leaves it empty for good (prometheus/client_python#1199), and the
  library's collector then raises on every scrape. Here each file is read on its own: one that
  cannot be read is skipped, logged once and counted, and the rest are reported as usual.
- **Files of dead workers pile up** (the library's `mark_process_dead` removes only `live` gauges),
  and every scrape reads them all. Here the files of workers that are gone are folded into one
  file per kind (`<kind>_dead.db`): counters and histograms added, `max`/`min` gauges kept as the
  max/min, `mostrecent` the latest, `all` and `sum` gauges added; `live` gauges dropped. The
  folder then holds one file per live worker and kind, plus one per kind for all the dead.

Readers hold a shared lock on the folder while they read and the folder is folded under an
exclusive one, so no reader ever sees a dead worker's values twice or not at all.
"""

import contextlib
import fcntl
import glob
import logging
import os

from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector

log = logging.getLogger("gateway")

DEAD = "dead"  # the pid part of the files that hold what dead workers left
_LOCK_FILE = ".folding.lock"
_noticed = set()  # unreadable files this process has reported (once each)


def _pid_of(path: str) -> str:
    return os.path.basename(path)[:-3].rsplit("_", 1)[-1]


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True  # another user's process, alive; or not a pid we know how to check
    return True


@contextlib.contextmanager
def _locked(folder: str, exclusive: bool):
    # A blocking flock under gevent stalls the loop only while a fold runs (a few ms, rarely).
    with open(os.path.join(folder, _LOCK_FILE), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _being_created(path: str) -> bool:
    """An empty file of a live worker: it is sizing it right now (a few microseconds after
    creating it), and there is nothing in it to report yet. Not worth a warning; an empty file
    whose worker died is (it stays empty, and is folded away as the dead worker's)."""
    try:
        return os.path.getsize(path) == 0 and _alive(_pid_of(path))
    except OSError:
        return False


def _skipped(path: str, reason: str, on_skip) -> None:
    if path in _noticed:
        return
    _noticed.add(path)
    log.warning("metrics: skipped %s, which cannot be read (%s); the other workers' numbers are still reported", os.path.basename(path), reason)
    on_skip()


class SafeMultiProcessCollector:
    """What prometheus_client's MultiProcessCollector does, one file at a time: a file that
    cannot be read is skipped (`on_skip()` is called once per file), never the whole scrape."""

    def __init__(self, folder: str, on_skip):
        self._folder = folder
        self._on_skip = on_skip

    def collect(self):
        fold_dead_workers(self._folder, self._on_skip)
        metrics = {}
        with _locked(self._folder, exclusive=False):
            for path in glob.glob(os.path.join(self._folder, "*.db")):
                try:
                    found = MultiProcessCollector._read_metrics([path])
                except FileNotFoundError:
                    continue  # a live gauge removed as its worker died, between the glob and now
                except Exception as exc:  # noqa: BLE001 - empty or torn: whatever it is, skip it
                    if not _being_created(path):
                        _skipped(path, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, self._on_skip)
                    continue
                for name, metric in found.items():
                    if name in metrics:
                        metrics[name].samples.extend(metric.samples)
                    else:
                        metrics[name] = metric
        return MultiProcessCollector._accumulate_metrics(metrics, True)


def _combined(mode: str, old, new):
    """(value, timestamp) of a dead worker's entry added to what the dead already left."""
    (old_value, old_time), (value, timestamp) = old, new
    if mode in ("max", "min"):
        pick = max if mode == "max" else min
        return pick(old_value, value), max(old_time, timestamp)
    if mode == "mostrecent":
        return (value, timestamp) if timestamp >= old_time else (old_value, old_time)
    return old_value + value, max(old_time, timestamp)  # counters, histograms, all, sum


def fold_dead_workers(folder: str, on_skip=lambda: None) -> None:
    """Folds the files of workers that are gone into the `dead` files (see the top)."""
    dead = [path for path in glob.glob(os.path.join(folder, "*.db")) if _pid_of(path) != DEAD and not _alive(_pid_of(path))]
    if not dead:
        return
    with _locked(folder, exclusive=True):
        for path in dead:
            name = os.path.basename(path)
            kind = name[:-3].rsplit("_", 1)[0]  # counter, histogram, gauge_max, gauge_livesum...
            mode = kind.split("_", 1)[1] if kind.startswith("gauge_") else kind
            try:
                if not mode.startswith("live"):  # a dead worker's live gauges are simply gone
                    _fold_file(path, os.path.join(folder, f"{kind}_{DEAD}.db"), mode)
            except FileNotFoundError:
                continue  # another reader folded it first
            except Exception as exc:  # noqa: BLE001 - unreadable: nothing in it can be kept
                _skipped(path, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, on_skip)
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)


def _fold_file(source: str, target: str, mode: str) -> None:
    entries = list(MmapedDict.read_all_values_from_file(source))
    folded = MmapedDict(target)
    try:
        existing = {key: (value, timestamp) for key, value, timestamp in folded.read_all_values()}
        for key, value, timestamp, _ in entries:
            current = existing.get(key)
            folded.write_value(key, *(_combined(mode, current, (value, timestamp)) if current else (value, timestamp)))
    finally:
        folded.close()
