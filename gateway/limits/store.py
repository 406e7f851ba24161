"""The Redis that holds the shared limits, and whether it is reachable now: `RedisStore`.

- Every call is bounded: 0.2 s to connect and 0.2 s per reply, and one retry only for a connection
  that turns out closed (a pooled one from before a Redis restart), so a request never waits
  more than about 0.4 s on a dead or hung Redis. A failed call marks Redis unreachable (one
  warning line) and raises `Unavailable`; until it is back, callers do not try it (no waiting).
- One watcher per worker (a thread: a greenlet under gevent's patching) probes an unreachable
  Redis with backoff (0.5, 1, 2, 4, 4 ... s), says so in one line when it answers again, and
  otherwise runs the `tick` callbacks every `tick_seconds` (lease renewal, leases.py).
- Log lines name Redis by host and port only, never the URL (it may hold a password), and any
  text from the client library is redacted with the config's secrets.
"""

import logging
import threading
from urllib.parse import urlsplit

from ..errors import redact
from . import scripts

log = logging.getLogger("gateway.limits")

TIMEOUT = 0.2  # seconds to connect, and seconds per reply: within the 0.5 s a request may wait
PROBE_DELAYS = (0.5, 1.0, 2.0, 4.0)  # between probes of an unreachable Redis; then 4 s each


class Unavailable(Exception):
    """Redis did not answer (or is known to be unreachable): the caller falls back or refuses."""


def location(url: str) -> str:
    """Host and port (or the socket path): what a log line may say about where Redis is."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname}:{parts.port or 6379}"


class RedisStore:
    def __init__(self, url: str, failure: str, secrets=(), tick_seconds: float = 10.0):
        self.failure = failure  # "open" or "closed"
        self.location = location(url)
        self.up = True  # until a call fails; the watcher's first probe comes at once
        self._secrets = secrets
        # redis-py is imported here, by the gateways that use Redis: importing it costs every
        # worker's boot about 0.15 s (more where OpenTelemetry is installed, which it then loads).
        import redis
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as ConnectionClosed, RedisError
        from redis.retry import Retry

        self._failures = (RedisError, OSError)  # what a call to Redis raises when it goes wrong
        self._client = redis.Redis.from_url(
            url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT,
            # A timeout is never retried (that would double the wait); a closed connection once.
            retry=Retry(NoBackoff(), 1, supported_errors=(ConnectionClosed,)),
        )
        self._scripts = {
            name: self._client.register_script(getattr(scripts, name))
            for name in ("ADMIT", "COUNT_TOKENS", "COUNT_BUDGETS", "TAKE_LEASE", "RENEW_LEASES", "COUNT_LEASES")
        }
        self._ticks = []
        self._tick_seconds = tick_seconds
        self._changed = threading.Lock()
        self._wake = threading.Event()
        self._watcher = None
        self._closed = False

    # --- calls -------------------------------------------------------------------------------

    def script(self, name: str, keys, args):
        """Runs one of scripts.py's scripts (EVALSHA; loaded again after a Redis restart)."""
        return self._call(self._scripts[name], keys, args)

    def command(self, name: str, *args):
        """One plain command (ZREM, PING...)."""
        return self._call(self._client.execute_command, name, *args)

    def _call(self, function, *args):
        if not self.up:
            raise Unavailable
        try:
            return function(*args)
        except self._failures as exc:
            self.went_away(exc)
            raise Unavailable from None

    # --- health ------------------------------------------------------------------------------

    def went_away(self, exc: Exception) -> None:
        with self._changed:
            if not self.up:
                return
            self.up = False
        if self.failure == "closed":
            meanwhile = 'chat requests get 503 limits_unavailable until it is back (redis_failure = "closed")'
        else:
            meanwhile = ("shared limits are OFF: this worker applies max_concurrency and [limits] on its own "
                         'until it is back (redis_failure = "open")')
        reason = redact(f"{type(exc).__name__}: {exc}", self._secrets)
        log.warning("Redis at %s is unreachable (%s): %s", self.location, reason, meanwhile)
        self._wake.set()  # the watcher starts probing now

    def _came_back(self) -> None:
        with self._changed:
            if self.up:
                return
            self.up = True
        log.warning("Redis at %s is reachable again: shared limits resumed", self.location)

    def _probe(self):
        """None if Redis answers a PING, else what went wrong."""
        try:
            self._client.ping()
            return None
        except self._failures as exc:
            return exc

    # --- the watcher -------------------------------------------------------------------------

    def on_tick(self, callback) -> None:
        """`callback()` runs every `tick_seconds` while Redis is up, and at once when it is back."""
        self._ticks.append(callback)

    def start(self) -> None:
        """Starts the watcher (in the worker process: after the fork, after gevent's patching)."""
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="llm-gateway-redis", daemon=True)
            self._watcher.start()

    def close(self) -> None:
        """Stops the watcher and closes the connections (tests; a worker simply exits)."""
        self._closed = True
        self._wake.set()
        self._client.close()

    def _watch(self) -> None:
        try:
            problem = self._probe()
        except Exception:  # close() took the connection from under the probe (tests), or a bug
            if self._closed:
                return
            log.exception("the Redis watcher's first probe failed; it goes on")
            problem = None
        if problem is not None and not self._closed:
            self.went_away(problem)
        probes = 0
        while not self._closed:
            try:
                if self.up:
                    if self._wake.wait(self._tick_seconds):
                        self._wake.clear()
                        continue  # woken because Redis went away: probe from now on
                    if not self._closed:
                        self._tick()
                    probes = 0
                else:
                    self._wake.wait(PROBE_DELAYS[min(probes, len(PROBE_DELAYS) - 1)])
                    self._wake.clear()
                    probes += 1
                    if not self._closed and self._probe() is None:
                        self._came_back()
                        probes = 0
                        self._tick()  # leases held meanwhile are registered again at once
            except Exception:  # a bug here must not stop the watcher: Redis would never come back
                log.exception("the Redis watcher failed; it goes on")
                self._wake.wait(1.0)

    def _tick(self) -> None:
        for callback in self._ticks:
            try:
                callback()
            except Unavailable:
                return  # went_away has said so; the watcher probes now
