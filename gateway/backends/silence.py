"""`read_timeout` for relayed streams under gevent: one watchdog per worker, not a timer per read.

With a timeout on the backend socket, gevent starts and cancels a timer around every wait for
the next event: the largest single cost of relaying an event at a model's pace (a profile put up
to two fifths of the worker's samples there). A relay under gevent reads with no socket timeout
instead, notes the time of every read, and this watchdog kills the reader with the backend's
timeout error when one has been silent longer than its `read_timeout` (checked every 0.1 s).
"""

import time

import gevent

CHECK_EVERY = 0.1  # seconds: how late past read_timeout a silent backend may be noticed

_watched = set()
_watchdog = None


class Watch:
    """One relay's silence: `heard()` after every read; `stop()` when the relay ends."""

    __slots__ = ("_greenlet", "_limit", "_make_error", "last")

    def __init__(self, limit: float, make_error):
        self._greenlet = gevent.getcurrent()
        self._limit = limit
        self._make_error = make_error
        self.last = time.monotonic()

    def heard(self) -> None:
        self.last = time.monotonic()

    def stop(self) -> None:
        _watched.discard(self)

    def _expired(self, now: float) -> bool:
        return now - self.last > self._limit


def watch(limit: float, make_error) -> Watch:
    """Watches the current greenlet's relay; `make_error()` is raised in it when it goes silent."""
    global _watchdog
    relay = Watch(limit, make_error)
    _watched.add(relay)
    if _watchdog is None or _watchdog.dead:
        _watchdog = gevent.spawn(_run)
    return relay


def _run():
    while True:
        gevent.sleep(CHECK_EVERY)
        now = time.monotonic()
        for relay in [r for r in _watched if r._expired(now)]:
            _watched.discard(relay)
            gevent.kill(relay._greenlet, relay._make_error())
