"""A backend's circuit breaker (per worker): skip a backend that keeps failing, then try it again.

`failure_threshold` consecutive failures open the breaker: the backend is `cooling_down` for
`cooldown_seconds`, and requests skip it. Then one request (the trial) may try it while the
others still skip it; the trial's result decides: a success closes the breaker, a failure starts
another cooldown. Greenlets of one worker never run at the same time, so no lock is needed.
Opening and closing are logged, one line each, naming the worker (each has its own breaker).

A backend with `health_url` is also held out by its probes (health.py): a failing verdict skips
it at once, until `healthy_after` passing probes, whatever `cooldown_seconds` says; the prober
logs those changes, once per instance. Meanwhile the failures above still count: they catch what
a health endpoint cannot see (it answers 200 while chat requests fail).
"""

import logging
import os
import time

log = logging.getLogger("gateway")

OK = "ok"
COOLING_DOWN = "cooling_down"


class CircuitBreaker:
    __slots__ = ("name", "threshold", "cooldown", "failures", "cooling_until", "trial_running", "probe_failing", "_on_change")

    def __init__(self, name: str, threshold: int, cooldown: float, on_change=None):
        """`on_change(cooling_until)` is told when the breaker opens (a time) or closes (0.0)."""
        self.name = name  # the backend's, for the log
        self.threshold = threshold
        self.cooldown = cooldown
        self._on_change = on_change or (lambda until: None)
        self.failures = 0  # consecutive
        self.cooling_until = 0.0  # time.time() when the cooldown ends; 0.0 while closed
        self.trial_running = False
        self.probe_failing = None  # why its health probes fail (health.py); None while they pass

    def allows(self) -> bool:
        """Whether a request may try the backend now; True makes it the trial after a cooldown."""
        if self.probe_failing is not None:
            return False
        if not self.cooling_until:
            return True
        if time.time() < self.cooling_until or self.trial_running:
            return False
        self.trial_running = True
        return True

    def succeeded(self) -> None:
        self.failures = 0
        self.trial_running = False
        if self.cooling_until:
            self.cooling_until = 0.0
            self._on_change(0.0)
            log.info("backend '%s' is healthy again: a trial request succeeded after its cooldown (worker %d)", self.name, os.getpid())

    def failed(self, reason: str = "") -> None:
        """`reason`: what went wrong, in the words of the backend's error (for the log)."""
        self.failures += 1
        if self.trial_running or self.failures >= self.threshold:
            why = "its trial request failed" if self.trial_running else f"{self.failures} consecutive failures"
            self.cooling_until = time.time() + self.cooldown
            self.failures = 0
            self._on_change(self.cooling_until)
            log.warning(
                "backend '%s' is cooling down for %g s after %s (last: %s); requests skip it meanwhile (worker %d)",
                self.name, self.cooldown, why, reason or "unknown", os.getpid(),
            )
        self.trial_running = False

    def skips(self) -> bool:
        """Whether requests skip the backend now, without side effects (`allows` picks the trial):
        what a routing strategy asks before it chooses (strategies.py)."""
        if self.probe_failing is not None:
            return True
        until = self.cooling_until
        return bool(until) and (self.trial_running or time.time() < until)

    def probe_failed(self, reason: str) -> None:
        """Its health probes fail: requests skip it from now on, until `probe_passed`."""
        self.probe_failing = reason

    def probe_passed(self) -> None:
        """Its probes pass again (`healthy_after` in a row): it takes requests at once, a cooldown
        the failures before it had started ended too (the probes decide for a probed backend)."""
        if self.probe_failing is None:
            return
        self.probe_failing = None
        self.failures = 0
        self.trial_running = False
        if self.cooling_until:
            self.cooling_until = 0.0
            self._on_change(0.0)

    def undecided(self) -> None:
        """The attempt ended with no verdict on the backend (the client left): let another try."""
        self.trial_running = False

    def state(self) -> tuple[str, float]:
        """(`ok` or `cooling_down`, seconds left of the cooldown: 0.0 while held by its probes)."""
        if self.probe_failing is not None:
            return COOLING_DOWN, 0.0
        left = self.cooling_until - time.time() if self.cooling_until else 0.0
        if left > 0 or (self.cooling_until and self.trial_running):
            return COOLING_DOWN, max(0.0, left)
        return OK, 0.0
