"""`read_timeout` for relayed streams under gevent: one watchdog per worker, not a timer per read.

With a timeout on the backend socket, gevent starts and cancels a timer around every wait for
the next event: the largest single cost of relaying an event at a model's pace (a profile put up
to two fifths of the worker's samples there). A relay under gevent reads with no socket timeout
instead and says when it starts waiting for its backend (`waiting`) and when bytes came
(`heard`); this watchdog, checking every 0.1 s, aborts a relay whose backend has been silent
longer than its `read_timeout`: it marks it `expired` and shuts its socket down, so whatever
greenlet waits on it (a reader, or the stream's body reading in place) fails at once, without an
exception thrown into it from outside. The relay then raises the timeout error. Time a client takes
to accept what was relayed is not backend silence: the relay is not waiting then.
"""

import contextlib
import time

import gevent

CHECK_EVERY = 0.1  # seconds: how late past read_timeout a silent backend may be noticed

_watched = set()
_watchdog = None


class Watch:
    """One relay's silence. `waiting()` before a wait for the backend, `heard()` once bytes came,
    `stop()` when the relay ends."""

    __slots__ = ("_limit", "_abort", "since", "expired")

    def __init__(self, limit: float, abort):
        self._limit = limit
        self._abort = abort
        self.since = time.monotonic()  # the first event is waited for from the start
        self.expired = False

    def waiting(self) -> None:
        if not self.since:
            self.since = time.monotonic()

    def heard(self) -> None:
        self.since = 0.0

    @contextlib.contextmanager
    def paused(self):
        """While the relay hands a keep-alive out: the silence so far is kept, the time the
        client takes to accept it is not added."""
        silent_for = time.monotonic() - self.since if self.since else 0.0
        self.since = 0.0
        try:
            yield
        finally:
            self.since = time.monotonic() - silent_for

    def stop(self) -> None:
        _watched.discard(self)

    def _expired(self, now: float) -> bool:
        return bool(self.since) and now - self.since > self._limit


def watch(limit: float, abort) -> Watch:
    """Watches a relay; `abort()` (which must not block) ends it when its backend goes silent."""
    global _watchdog
    relay = Watch(limit, abort)
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
            relay.expired = True
            relay._abort()
