"""The usage ledger of one worker: every finished model request counted in memory, written in batches.

`note(record)` runs as a request's record closes (after a stream's last byte) and costs a few
dictionary updates: it adds the request to its row, (UTC day, user, key, model, backend):
requests, tokens in / out / total as the backend reported them, requests whose backend reported
no usage (never counted as zero tokens), errors. Requests refused before any backend was called
(a bad key, a limit, an unknown model, every backend full or cooling down) are not in the ledger:
/metrics counts them.

A flusher (a greenlet under gevent, else a thread) writes what was noted at least every
`FLUSH_SECONDS` through storage.py, off the request path, and reads back the day's and month's
token totals for the budgets (budgets.py). At the worker's exit (gunicorn's worker_exit) `close()`
writes the rest: a SIGTERM loses nothing.

The database down: batches stay in memory, a batch is retried as it was (with its id: storage.py
never adds it twice), new counts gather beside it, and everything is written when the database
is back. At most `MAX_ROWS` rows are held; past that a new row is dropped, with one warning line
and `llm_gateway_usage_rows_dropped_total`. One warning line when the database goes, one when it
is back.
"""

import logging
import os
import threading
import time
import uuid

from ..concurrency import cooperative, deadline
from .budgets import subjects_of
from .periods import day_of, month_of
from .storage import StorageDown

log = logging.getLogger("gateway.usage")

FLUSH_SECONDS = 1.0  # between flushes (and budget refreshes): within the 2 s promised, and budgets bind within 3 s
MAX_ROWS = 100_000  # rows held in memory while the database is down (a few tens of MB at most)
CLOSE_SECONDS = 10.0  # what the final flush at a worker's exit may take
_ANSWERED = ("completed", "client_gone")  # outcomes that are not errors (record.py)
# Attempts that never called their backend (failover.py): a breaker open, no free slot.
_NOT_CALLED = frozenset(("cooling_down", "concurrency_limit", "global_concurrency_limit"))


def user_of(asker: dict, caller_label: str | None, address: str | None) -> str:
    """Whom the ledger (and a per-user budget) counts a request for, as a person reads it: Open
    WebUI's user by email, else by id, else the inbound key (`key:NAME`, `api_keys[0]`: never the
    key itself), else the client's address."""
    return asker.get("user.email") or asker.get("user.id") or caller_label or address or "unknown"


def total_of(usage) -> int | None:
    """The tokens a budget counts: the backend's total_tokens, else prompt + completion, else None."""
    total = _count(usage, "total_tokens")
    if total is None:
        prompt, completion = _count(usage, "prompt_tokens"), _count(usage, "completion_tokens")
        if prompt is not None and completion is not None:
            total = prompt + completion
    return total


# No model reports a trillion tokens for one request: a larger count is a broken backend's. Kept
# out, it cannot overflow the database's 64-bit sums, which would fail every later flush.
MAX_TOKENS = 10**12


def _count(usage, name):
    value = usage.get(name) if isinstance(usage, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKENS else None


_STARTING = threading.Lock()


class Ledger:
    def __init__(self, storage, budgets_on: bool = False, on_dropped=None, clock=time.time):
        """`budgets_on`: keep the day's and month's totals for budgets.py; `on_dropped()` is called
        for each row dropped at the memory bound (the metric)."""
        self.storage = storage
        self.budgets_on = budgets_on
        self._on_dropped = on_dropped or (lambda: None)
        self._clock = clock
        self._pending = {}  # row key -> [requests, prompt, completion, total, unknown, errors]
        self._unsent = None  # (batch id, rows) that failed to be written: retried as it was
        self._db_totals = {}  # (period, subject) -> tokens, as the database had them at the last refresh
        self._unwritten = {}  # (period, subject) -> tokens noted here but not yet in _db_totals
        self._lock = threading.Lock()  # greenlets never contend; under threads, the flusher and requests do
        self._flushing = threading.Lock()  # one flush at a time (the flusher's, and close()'s at exit)
        self._wake = threading.Event()
        self._flusher = None
        self._flusher_pid = None  # the process the flusher runs in (a server may fork after loading the app)
        self._wanted = False
        self._closed = False
        self.down = False  # the database failed its last use
        self._dropping = False
        self.last_flush = None  # when the last flush or refresh succeeded (time.time())

    # --- the request path ---------------------------------------------------------------------

    def note(self, record) -> None:
        """Adds one finished request (a telemetry RequestRecord) to its row."""
        if self._flusher_pid != os.getpid() and self._wanted:
            self._start_here()
        attempts = record.attempts
        if not record.counted or attempts is None or all(result in _NOT_CALLED for _, result in attempts.tried):
            return  # no backend was called (refused first, every backend full or cooling down): not usage
        now = self._clock()
        usage = record.usage
        prompt, completion, total = _count(usage, "prompt_tokens"), _count(usage, "completion_tokens"), total_of(usage)
        failed = record.outcome not in _ANSWERED
        user, key = record.user or "", record.key or ""
        day = day_of(now)
        row = (day, user, key, record.model or "", record.backend or "")
        with self._lock:
            counts = self._pending.get(row)
            if counts is None:
                if len(self._pending) + len(self._unsent[1] if self._unsent else ()) >= MAX_ROWS:
                    self._drop()
                    return
                counts = self._pending[row] = [0, 0, 0, 0, 0, 0]
            counts[0] += 1
            if failed:
                counts[5] += 1
            elif total is None:
                counts[4] += 1
            counts[1] += prompt or 0
            counts[2] += completion or 0
            if total:
                counts[3] += total
                if self.budgets_on:
                    unwritten = self._unwritten
                    for pair in subjects_of(user, key, day, month_of(now)):
                        unwritten[pair] = unwritten.get(pair, 0) + total

    def tokens_used(self, period_id: str, subject: str) -> int:
        """A budget's count: what the database had at the last refresh plus what this worker noted since."""
        if self._flusher_pid != os.getpid() and self._wanted:
            self._start_here()  # it reads the database's totals back within a second
        pair = (period_id, subject)
        return self._db_totals.get(pair, 0) + self._unwritten.get(pair, 0)

    def _drop(self) -> None:
        self._on_dropped()
        if not self._dropping:
            self._dropping = True
            log.warning("usage ledger: %d rows are held in memory while the database (%s) cannot be written; "
                        "new rows are dropped until it can (llm_gateway_usage_rows_dropped_total counts them)", MAX_ROWS, self.storage.where)

    # --- the flusher --------------------------------------------------------------------------

    def start(self) -> None:
        """Starts the flusher (it makes the schema first). In a gevent worker the app is built after
        the fork: now. Elsewhere with the first request this process notes: a server that builds
        the app and then forks its workers (uWSGI, gunicorn --preload) would fork while the flusher
        imports or holds a lock, and each worker would wait on it forever."""
        self._wanted = True
        if cooperative():
            self._start_here()

    def _start_here(self) -> None:
        with _STARTING:  # two threads' first requests at once (under threads)
            if self._flusher_pid == os.getpid():
                return
            self._flusher_pid = os.getpid()
            self._flusher = threading.Thread(target=self._run, name="llm-gateway-usage", daemon=True)
            self._flusher.start()

    def _run(self) -> None:
        try:
            self.storage.prepare()  # the schema at start-up; a database down now is retried by each flush
        except StorageDown as exc:
            self._went_down(exc)
        while not self._closed:
            self._wake.wait(FLUSH_SECONDS)
            self._wake.clear()
            if self._closed:
                return
            try:
                self.flush()
            except Exception:  # a bug here must not stop the flusher: usage would pile up unseen
                log.exception("usage ledger: the flusher failed; it goes on")

    def flush(self) -> bool:
        """Writes the unsent batch, then what was noted since, and reads the budgets' totals back.
        True when everything noted so far is written."""
        with self._flushing:
            return self._flush()

    def _flush(self) -> bool:
        if self._unsent is None:
            with self._lock:
                if self._pending:
                    rows = [(*key, *counts) for key, counts in self._pending.items()]
                    self._unsent = (uuid.uuid4().hex, rows)
                    self._pending = {}
        if self._unsent is None and not self.budgets_on:
            return True
        now = self._clock()
        periods = (day_of(now), month_of(now))
        batch = self._unsent
        try:
            if batch is not None:
                self.storage.write(batch[0], batch[1], now)
            totals = self.storage.totals(periods) if self.budgets_on else None
        except StorageDown as exc:
            self._went_down(exc)
            return False
        with self._lock:
            if batch is not None:
                self._unsent = None
                self._forget_written(batch[1])
            if totals is not None:
                self._db_totals = totals
            self._dropping = False
        self.last_flush = now
        self._came_back()
        return not self._pending

    def _forget_written(self, rows) -> None:
        """The batch's tokens are in the database's totals now, read back just after: no longer
        counted as unwritten here."""
        if not self.budgets_on:
            return
        unwritten = self._unwritten
        for day, user, key, _model, _backend, _requests, _prompt, _completion, total, _unknown, _errors in rows:
            if total:
                for pair in subjects_of(user, key, day, day[:7]):
                    left = unwritten.get(pair, 0) - total
                    if left > 0:
                        unwritten[pair] = left
                    else:
                        unwritten.pop(pair, None)

    def _went_down(self, exc) -> None:
        if not self.down:
            self.down = True
            log.warning("usage ledger: the database (%s) cannot be used (%s); usage is kept in memory "
                        "(at most %d rows) and written when it is back", self.storage.where, exc, MAX_ROWS)

    def _came_back(self) -> None:
        if self.down:
            self.down = False
            log.warning("usage ledger: the database (%s) works again; the usage kept meanwhile is written", self.storage.where)

    def held(self) -> int:
        """Rows noted and not yet written."""
        return len(self._pending) + (len(self._unsent[1]) if self._unsent else 0)

    def close(self, timeout: float = CLOSE_SECONDS) -> None:
        """Stops the flusher and writes what is left (gunicorn's worker_exit): tries until
        `timeout` (a database that hangs included, under gevent), then says in one line what could
        not be written."""
        self._closed = True
        self._wake.set()
        ends = time.monotonic() + timeout
        try:
            with deadline(timeout, _GaveUp()):
                while not (self.flush() and self._unsent is None):
                    if time.monotonic() >= ends:
                        raise _GaveUp
                    time.sleep(0.2)
        except _GaveUp:
            requests = sum(row[5] for row in (self._unsent[1] if self._unsent else ())) + sum(c[0] for c in self._pending.values())
            log.warning("usage ledger: %d requests could not be written before this worker exits (%s)", requests, self.storage.where)
            return
        self.storage.close()


class _GaveUp(Exception):
    """The final flush ran out of time."""
