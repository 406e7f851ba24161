"""The ledger's database: SQLite in `data_dir` (default) or PostgreSQL (`database_url`), both
spoken to in the same SQL statements and the same upsert (database.py).

Tables (created, or migrated, the first time a worker starts; `usage_schema` holds the version):
- `usage_ledger`: one row per (UTC day, user, key, model, backend): requests, prompt, completion
  and total tokens as the backends reported them, requests whose backend reported no usage, errors;
- `usage_totals`: total tokens per (period, subject), the period a UTC day or month and the subject
  `user:<user>` or `key:<NAME>`: what the budgets read without adding up the ledger;
- `usage_flushes`: the id of every batch written in the last two days.

A flush is one transaction: its batch id, then every row as an upsert that adds (`INSERT ... ON
CONFLICT DO UPDATE SET n = n + excluded.n`), in primary-key order so two instances writing the
same rows never deadlock. A batch whose id is already there was written before (its commit went
through but the answer to it was lost): it is not added again. So a retried flush never doubles
a count, and a failed one loses none (the caller keeps the batch and retries it as it was).

Every call runs on one thread of the worker's own (under gevent: a native thread of its thread
pool), never on the event loop: SQLite waits for another worker's write lock, and a database
that is down makes a connection attempt wait up to its timeout. No Flask here.
"""

import logging
import os
import threading
import time
from urllib.parse import urlsplit

from ..concurrency import cooperative

log = logging.getLogger("gateway.usage")

DATABASE_FILE = "usage.sqlite3"  # beside the response store's responses.sqlite3, in data_dir
NUMBERS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "unknown_usage", "errors")
GROUPS = {"day": "day", "user": "user_name", "key": "key_name", "model": "model", "backend": "backend"}


class StorageDown(Exception):
    """The database could not be used just now (down, locked, full): the caller keeps its batch."""


def connection_target(settings) -> str:
    """`database_url` as libpq reads it (`postgresql+psycopg://`, SQLAlchemy's spelling that
    earlier versions took, made plain), else `sqlite:///` and the SQLite file."""
    if settings.database_url:
        return "postgresql://" + settings.database_url.split("://", 1)[1]
    return "sqlite:///" + os.path.join(os.path.abspath(settings.data_dir), DATABASE_FILE)


def describe(settings) -> str:
    """Where usage is stored, for people: never a password."""
    if settings.database_url:
        parts = urlsplit(settings.database_url)
        host = parts.hostname or "localhost"
        return f"PostgreSQL at {host}:{parts.port or 5432}{parts.path or '/'}, shared by every instance"
    return f"SQLite at {os.path.join(os.path.abspath(settings.data_dir), DATABASE_FILE)} (data_dir), shared by this instance's workers"


class Storage:
    def __init__(self, settings, secrets=()):
        self.url = connection_target(settings)
        self.where = describe(settings)
        self._secrets = secrets
        self._database = None  # database.Database, made on the storage's own thread at first use
        self._errors = ()  # what database.py says means "down", once it is imported
        self._pool = None  # under gevent: one native thread of this worker's, made in the worker
        self._pool_pid = None
        self._lock = threading.Lock()  # elsewhere: the calling threads take turns

    # --- the calls (any thread or greenlet; each runs on the storage's own thread) -------------

    def write(self, batch_id: str, rows: list, now: float) -> bool:
        """Adds `rows` (tuples: the GROUPS columns, then NUMBERS) as batch `batch_id`, once; False
        when that batch was already written. Raises StorageDown."""
        return self.run("write", batch_id, rows, now)

    def totals(self, periods) -> dict:
        """(period, subject) -> tokens, for the given periods. Raises StorageDown."""
        return self.run("totals", tuple(periods))

    def report(self, first_day: str, last_day: str, group_by) -> list:
        """Rows of the ledger from `first_day` to `last_day` (inclusive) summed by `group_by` (keys
        of GROUPS), largest total first: dicts of the group's columns and NUMBERS. Raises StorageDown."""
        return self.run("report", first_day, last_day, tuple(group_by))

    def prepare(self) -> None:
        """Creates or migrates the schema now (a worker's start), rather than at the first flush."""
        self.run(None)

    def close(self) -> None:
        if self._database is not None:
            self._database.close()

    def run(self, method, *args):
        """`method` of the database (None: only make it ready) on the storage's own thread."""
        try:
            if cooperative():
                if self._pool is None or self._pool_pid != os.getpid():
                    from gevent.threadpool import ThreadPool

                    self._pool, self._pool_pid = ThreadPool(1), os.getpid()
                failed, outcome = self._pool.apply(_outcome_of, (self._ready_then, method, args))
            else:
                with self._lock:
                    failed, outcome = _outcome_of(self._ready_then, method, args)
        except Exception as exc:  # noqa: BLE001 - the pool itself failing is the database being unusable
            failed, outcome = True, exc
        if failed:
            if isinstance(outcome, (*self._errors, OSError)):
                raise StorageDown(self._redacted(outcome)) from None
            raise outcome
        return outcome

    # --- on the storage's own thread ------------------------------------------------------------

    def _ready_then(self, method, args):
        if self._database is None:
            from . import database

            made = database.Database(self.url, self.where)
            self._errors = made.errors
            made.prepare()
            self._database = made
        return getattr(self._database, method)(*args) if method else None

    def _redacted(self, exc: Exception) -> str:
        text = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "[redacted]")
        return text


def _outcome_of(function, *args) -> tuple:
    """(False, the result) or (True, the exception): run in the pool, raised by the caller (an
    exception raised in the pool would be printed with its traceback by gevent's hub)."""
    try:
        return False, function(*args)
    except Exception as exc:  # noqa: BLE001 - handed to the caller
        return True, exc.with_traceback(None)


def now() -> float:
    return time.time()
