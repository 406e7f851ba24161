"""Active health checks: one prober per instance probes each backend that has `health_url`, and
every worker skips a backend whose probes fail, before any user's request to it fails.

- Who probes: workers are separate processes. The one holding a non-blocking exclusive `flock` on
  `health-<generation>.lock` in the run directory (GATEWAY_RUN_DIR, made by gunicorn.conf.py) is
  the prober; the others try to take the lock again every probe interval, so when the prober
  exits or dies (the kernel lets go of its lock) another worker takes over within an interval.
  The generation is a hash of the config the workers started with: after a reload that changed
  it, the new workers elect their own prober while retiring ones finish their streams.
- A probe (`HttpBackend.probe`): GET `health_url` with the backend's headers, TLS settings and
  proxy, within `health_timeout_seconds`; a 2xx passes, anything else fails. One probe every
  `health_interval_seconds`, ±10 % at random so a fleet does not probe in step; each backend in a
  greenlet of its own (a thread outside gevent), so a slow one holds up no other.
- Verdicts: a failing probe makes the backend `failing` at once; `healthy_after` passing probes in
  a row make it `ok` again. The prober logs each change once, and writes all verdicts to
  `health-<generation>.json` (written whole, then renamed over the last one).
- Every other worker looks at that file every 0.5 s (one `stat`; it reads the file when it
  changed) and applies the verdicts to its circuit breakers (breaker.py: `probe_failed` skips the
  backend, `probe_passed` takes it back, whatever `cooldown_seconds` says) and to the health metric.
- Without a run directory (the app alone in a test, other WSGI servers) each process probes for
  itself and applies its own verdicts.
"""

import fcntl
import hashlib
import logging
import os
import random
import threading
import time
import uuid
from urllib.parse import urlsplit

from ..concurrency import start_daemon
from ..config import SNAPSHOT_VARIABLE
from ..errors import redact
from ..json_files import read_object, write_atomically

log = logging.getLogger("gateway")

OK, FAILING = "ok", "failing"
LOOK_EVERY = 0.5  # seconds between two looks at the verdict file
# A rename within one tick of the file system's clock may leave size and mtime as they were (and
# the inode number may be reused): the file is read now and then whatever its stat says.
READ_ANYWAY_EVERY = 5.0
JITTER = 0.1  # each interval is its length ±10 %


def _ignore(name: str, ok: bool) -> None:
    pass


class HealthChecks:
    """This worker's side of the health checks: maybe the prober, always applying the verdicts."""

    def __init__(self, registry, run_dir: str | None = None, on_verdict=None):
        """`on_verdict(backend_name, ok)` is told each backend's verdict as this worker applies it
        (the health metric)."""
        self.probed = {name: backend for name, backend in registry.backends.items() if backend.config.health_url}
        self.secrets = registry.config.secrets
        self._on_verdict = on_verdict or _ignore
        self.verdicts = {}  # backend name -> its verdict (a dict, as in the file), as applied here
        self.prober = None  # the pid of the worker whose verdicts these are
        self.probing = False  # this worker is the prober
        self._stopped = threading.Event()
        self._writing = threading.Lock()  # the prober's greenlets share the verdicts and the file
        self._lock_file = None
        self._seen, self._read_at = None, 0.0
        self._paths = None
        if run_dir:
            generation = _generation(self.probed)
            self._paths = (os.path.join(run_dir, f"health-{generation}.lock"), os.path.join(run_dir, f"health-{generation}.json"))

    # --- running ----------------------------------------------------------------------------------

    def start(self) -> None:
        if not self.probed:
            return
        now = time.time()
        for name in self.probed:  # ok until a probe says otherwise: requests are not held up at start
            self.verdicts[name] = {"state": OK, "since": now, "passes": 0, "last_probe": None, "last_error": None, "last_error_at": None}
            self._on_verdict(name, True)
        start_daemon(self._until_elected)

    def stop(self) -> None:
        """Stops probing and lets go of the lock (another worker takes over)."""
        self._stopped.set()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _until_elected(self) -> None:
        """Tries to become the prober every probe interval; meanwhile applies the prober's verdicts."""
        interval = min(backend.config.health_interval_seconds for backend in self.probed.values())
        next_try = 0.0
        while not self._stopped.is_set():
            now = time.monotonic()
            if now >= next_try:
                if self._elected():
                    self._start_probing()
                    return  # the prober applies its own verdicts as it makes them
                next_try = now + interval * _jitter()
            self._look()
            self._stopped.wait(min(LOOK_EVERY, max(0.0, next_try - time.monotonic())))

    def _elected(self) -> bool:
        if self._paths is None:
            return True  # no run directory: this process probes for itself
        handle = open(self._paths[0], "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._lock_file = handle  # held until this process stops or exits
        return True

    def _start_probing(self) -> None:
        if self._paths is not None:
            self._seen = None
            self._look()  # carry on from the last prober's verdicts: a failing backend still needs its passes
        self.probing, self.prober = True, os.getpid()
        log.info("health checks: worker %d probes %s", os.getpid(), ", ".join(f"'{name}'" for name in self.probed))
        for name, backend in self.probed.items():
            start_daemon(lambda name=name, backend=backend: self._probe_forever(name, backend))

    def _probe_forever(self, name: str, backend) -> None:
        interval = backend.config.health_interval_seconds
        while not self._stopped.is_set():
            started = time.monotonic()
            self.probe_once(name, backend)
            self._stopped.wait(max(0.0, started + interval * _jitter() - time.monotonic()))

    def probe_once(self, name: str, backend) -> None:
        try:
            problem = backend.probe(backend.config.headers.render({"request_id": uuid.uuid4().hex}))
        except Exception:  # noqa: BLE001 - a bug of ours must not stop the probes for good
            log.exception("the health check of backend '%s' failed unexpectedly", name)
            problem = "its health check failed unexpectedly (see the gateway's log)"
        self.record(name, None if problem is None else redact(problem, self.secrets), time.time())

    # --- verdicts ---------------------------------------------------------------------------------

    def record(self, name: str, problem: str | None, now: float) -> None:
        """One probe's result (`problem` None: it passed): the backend's verdict, logged when it
        changes, written for the other workers and applied here."""
        config = self.probed[name].config
        with self._writing:
            verdict = {**self.verdicts[name], "last_probe": now}
            if problem is None:
                verdict["passes"] = verdict.get("passes", 0) + 1
                if verdict["state"] == FAILING and verdict["passes"] >= config.healthy_after:
                    verdict.update(state=OK, since=now)
                    log.info("backend '%s' is healthy again: %d health checks in a row passed; requests use it again", name, verdict["passes"])
            else:
                verdict.update(passes=0, last_error=problem, last_error_at=now)
                if verdict["state"] == OK:
                    verdict.update(state=FAILING, since=now)
                    log.warning(
                        "backend '%s' is cooling down: %s; requests skip it until %d health checks in a row pass (probed by worker %d)",
                        name, problem, config.healthy_after, os.getpid(),
                    )
            self.verdicts[name] = verdict
            self._apply(name, verdict)
            if self._paths is not None:
                write_atomically(self._paths[1], {"prober": self.prober, "backends": self.verdicts})

    def _look(self) -> None:
        """Applies the verdict file when it changed since the last look (or now and then anyway)."""
        if self._paths is None:
            return
        try:
            stat = os.stat(self._paths[1])
        except OSError:
            return  # no prober has written yet
        seen, now = (stat.st_ino, stat.st_mtime_ns, stat.st_size), time.monotonic()
        if seen == self._seen and now - self._read_at < READ_ANYWAY_EVERY:
            return
        self._seen, self._read_at = seen, now
        data = read_object(self._paths[1])
        self.prober = data.get("prober")
        for name, verdict in (data.get("backends") or {}).items():
            if name in self.probed and isinstance(verdict, dict) and verdict.get("state") in (OK, FAILING):
                self.verdicts[name] = verdict
                self._apply(name, verdict)

    def _apply(self, name: str, verdict: dict) -> None:
        breaker = self.probed[name].breaker
        if verdict["state"] == FAILING:
            if breaker.probe_failing is None:
                self._on_verdict(name, False)
            breaker.probe_failed(verdict.get("last_error") or "its health check fails")
        elif breaker.probe_failing is not None:
            self._on_verdict(name, True)
            breaker.probe_passed()

    # --- showing ----------------------------------------------------------------------------------

    def status(self, name: str) -> dict | None:
        """For the status page and /status.json: None for a backend without health_url."""
        verdict = self.verdicts.get(name)
        if verdict is None:
            return None
        config = self.probed[name].config
        return {
            "state": verdict["state"],
            "since": verdict.get("since"),
            "last_probe": verdict.get("last_probe"),  # None: not probed yet
            "last_error": verdict.get("last_error"),
            "last_error_at": verdict.get("last_error_at"),
            "passes_in_a_row": verdict.get("passes", 0),
            "healthy_after": config.healthy_after,
            "url": shown_url(config.health_url),
            "interval_seconds": config.health_interval_seconds,
            "timeout_seconds": config.health_timeout_seconds,
            "prober_pid": self.prober,
        }


def shown_url(url: str) -> str:
    """A health URL as it may be shown: scheme, host, port and path, never userinfo or query."""
    parts = urlsplit(url)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def start(registry, on_verdict=None) -> HealthChecks:
    """This worker's health checks (probing when elected), hung on the registry. Nothing runs
    when no backend has health_url, nor when the app is only loaded to check it."""
    checks = HealthChecks(registry, os.environ.get("GATEWAY_RUN_DIR"), on_verdict)
    registry.health = checks
    if not os.environ.get("GATEWAY_CHECK_ONLY"):
        checks.start()
    return checks


# --- the files ------------------------------------------------------------------------------------


def _jitter() -> float:
    return random.uniform(1 - JITTER, 1 + JITTER)


def _generation(probed: dict) -> str:
    """Which config the workers were started with: the master's snapshot of it (gunicorn.conf.py),
    else what is probed, how."""
    text = os.environ.get(SNAPSHOT_VARIABLE)
    if text is None:
        text = repr(sorted((name, b.config.health_url, b.config.health_interval_seconds, b.config.health_timeout_seconds, b.config.healthy_after)
                           for name, b in probed.items()))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
