"""Resident memory of the soak's gateway workers over the run, and the readings taken from it.

A sample of every worker's RSS every 2 s (procfs.rss_bytes). A reading is the median of one
worker's samples in a window of the run: one moment's RSS rises and falls with the streams the
worker holds right then (tens of KiB each), the median of a few seconds much less. Workers that
disappear are remembered (a worker replaced is something the soak reports).
"""

import statistics
import time

import gevent

from bench.harness.procfs import rss_bytes

EVERY = 2.0  # seconds between samples


class RssWatch:
    def __init__(self, workers: dict):
        self.workers = dict(workers)  # pid -> label, as the run started
        self.samples = {pid: [] for pid in workers}  # pid -> [(seconds into the run, bytes)]
        self.gone = []  # pids that vanished
        self.began = time.monotonic()

    def sample(self) -> None:
        at = time.monotonic() - self.began
        for pid in self.workers:
            if pid in self.gone:
                continue
            try:
                self.samples[pid].append((at, rss_bytes(pid)))
            except OSError:
                self.gone.append(pid)

    def run(self, until: float) -> None:
        """Samples until `until` (time.monotonic()); for a greenlet of its own."""
        while time.monotonic() < until:
            self.sample()
            gevent.sleep(EVERY)

    def reading(self, pid: int, start: float, end: float):
        """Median RSS of `pid` from `start` to `end` seconds into the run; None without samples there."""
        values = [rss for at, rss in self.samples[pid] if start <= at <= end]
        return statistics.median(values) if values else None

    def latest_total(self) -> int:
        return sum(samples[-1][1] for pid, samples in self.samples.items() if samples and pid not in self.gone)
