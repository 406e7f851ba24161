"""The ledger's database: SQLite in `data_dir` (default) or PostgreSQL (`database_url`), through
SQLAlchemy Core, so both speak the same statements and the same upsert.

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

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..concurrency import cooperative

log = logging.getLogger("gateway.usage")

DATABASE_FILE = "usage.sqlite3"  # beside the response store's responses.sqlite3, in data_dir
SCHEMA_VERSION = 1
CONNECT_TIMEOUT = 3  # seconds to reach PostgreSQL; the request path never waits for it
_FORGET_BATCHES_AFTER = 2 * 86400.0

NUMBERS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "unknown_usage", "errors")
GROUPS = {"day": "day", "user": "user_name", "key": "key_name", "model": "model", "backend": "backend"}

metadata = sa.MetaData()
LEDGER = sa.Table(
    "usage_ledger", metadata,
    *(sa.Column(name, sa.Text, primary_key=True) for name in GROUPS.values()),
    *(sa.Column(name, sa.BigInteger, nullable=False) for name in NUMBERS),
)
sa.Index("usage_ledger_by_day", LEDGER.c.day)  # the admin's periods: a range of days first
TOTALS = sa.Table(
    "usage_totals", metadata,
    sa.Column("period", sa.Text, primary_key=True),
    sa.Column("subject", sa.Text, primary_key=True),
    sa.Column("tokens", sa.BigInteger, nullable=False),
)
FLUSHES = sa.Table("usage_flushes", metadata, sa.Column("batch_id", sa.Text, primary_key=True), sa.Column("written_at", sa.Float, nullable=False))
SCHEMA = sa.Table("usage_schema", metadata, sa.Column("version", sa.Integer, primary_key=True))


class StorageDown(Exception):
    """The database could not be used just now (down, locked, full): the caller keeps its batch."""


def engine_url(settings) -> str:
    """The SQLAlchemy URL: `database_url` with the psycopg driver named, else the SQLite file."""
    if settings.database_url:
        scheme, rest = settings.database_url.split("://", 1)
        return "postgresql+psycopg://" + rest if scheme in ("postgresql", "postgres") else settings.database_url
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
        self.url = engine_url(settings)
        self.where = describe(settings)
        self.sqlite = self.url.startswith("sqlite")
        self._secrets = secrets
        self._engine = None
        self._ready = False
        self._pool = None  # under gevent: one native thread of this worker's, made in the worker
        self._pool_pid = None
        self._lock = threading.Lock()  # elsewhere: the calling threads take turns
        self._upsert = sqlite.insert if self.sqlite else postgresql.insert
        self._forgotten = 0.0

    # --- the calls (any thread or greenlet; each runs on the storage's own thread) -------------

    def write(self, batch_id: str, rows: list, now: float) -> bool:
        """Adds `rows` (tuples: the GROUPS columns, then NUMBERS) as batch `batch_id`, once; False
        when that batch was already written. Raises StorageDown."""
        return self.run(self._write, batch_id, rows, now)

    def totals(self, periods) -> dict:
        """(period, subject) -> tokens, for the given periods. Raises StorageDown."""
        return self.run(self._totals, tuple(periods))

    def report(self, first_day: str, last_day: str, group_by) -> list:
        """Rows of the ledger from `first_day` to `last_day` (inclusive) summed by `group_by` (keys
        of GROUPS), largest total first: dicts of the group's columns and NUMBERS. Raises StorageDown."""
        return self.run(self._report, first_day, last_day, tuple(group_by))

    def prepare(self) -> None:
        """Creates or migrates the schema now (a worker's start), rather than at the first flush."""
        self.run(lambda: None)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def run(self, function, *args):
        try:
            if cooperative():
                if self._pool is None or self._pool_pid != os.getpid():
                    from gevent.threadpool import ThreadPool

                    self._pool, self._pool_pid = ThreadPool(1), os.getpid()
                failed, outcome = self._pool.apply(_outcome_of, (self._ready_then, function, args))
            else:
                with self._lock:
                    failed, outcome = _outcome_of(self._ready_then, function, args)
        except Exception as exc:  # noqa: BLE001 - the pool itself failing is the database being unusable
            failed, outcome = True, exc
        if failed:
            if isinstance(outcome, (sa.exc.SQLAlchemyError, OSError)):
                raise StorageDown(self._redacted(outcome)) from None
            raise outcome
        return outcome

    # --- on the storage's own thread ------------------------------------------------------------

    def _ready_then(self, function, args):
        if not self._ready:
            self._prepare()
        return function(*args)

    def _prepare(self) -> None:
        """The engine, and the tables at the current schema version (another worker or instance
        may be creating them at the same moment: then the second try finds them)."""
        if self._engine is None:
            self._engine = self._new_engine()
        for attempt in (1, 2):
            try:
                with self._engine.begin() as db:
                    metadata.create_all(db, checkfirst=True)
                    version = db.execute(sa.select(sa.func.max(SCHEMA.c.version))).scalar()
                    if version is None:
                        db.execute(sa.insert(SCHEMA).values(version=SCHEMA_VERSION))
                    elif version > SCHEMA_VERSION:
                        log.warning("the usage database %s has schema version %s, newer than this gateway's %s: "
                                    "it is used as it is", self.where, version, SCHEMA_VERSION)
                    # Later versions migrate here, one step per version, inside this transaction.
                break
            except (sa.exc.IntegrityError, sa.exc.ProgrammingError, sa.exc.OperationalError):
                if attempt == 2:
                    raise
        self._ready = True

    def _new_engine(self):
        if not self.sqlite:
            # One connection per worker is all a flush a second needs; pre-ping replaces one that
            # a database restart broke, instead of failing the next flush on it.
            return sa.create_engine(self.url, pool_size=1, max_overflow=1, pool_pre_ping=True, pool_recycle=3600,
                                    connect_args={"connect_timeout": CONNECT_TIMEOUT, "application_name": "llm-gateway",
                                                  # a flush that takes longer is rolled back and retried, never left holding row locks
                                                  "options": "-c statement_timeout=30000 -c lock_timeout=10000"})
        path = self.url.removeprefix("sqlite:///")
        directory = os.path.dirname(path)
        os.makedirs(directory, mode=0o700, exist_ok=True)  # who used what: for the service's user only
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))  # SQLite gives its -wal and -shm files the same mode
        engine = sa.create_engine(self.url, connect_args={"timeout": 10.0, "check_same_thread": False}, poolclass=sa.pool.StaticPool)

        @sa.event.listens_for(engine, "connect")
        def _connected(connection, _record):
            connection.isolation_level = None  # transactions are begun below, not by the driver
            connection.execute("PRAGMA journal_mode = WAL")  # readers never wait for a writer
            connection.execute("PRAGMA synchronous = NORMAL")  # a crash of the machine may lose the last flushes, never corrupt

        @sa.event.listens_for(engine, "begin")
        def _begin(connection):
            # IMMEDIATE: a writing transaction takes the write lock at its start, so waiting for
            # another worker's write is the busy timeout's, never a failed upgrade halfway through.
            connection.exec_driver_sql("BEGIN IMMEDIATE" if connection.get_execution_options().get("writes") else "BEGIN")

        return engine

    def _write(self, batch_id: str, rows: list, now: float) -> bool:
        with self._engine.connect() as db, db.execution_options(writes=True).begin():
            if db.execute(sa.select(FLUSHES.c.batch_id).where(FLUSHES.c.batch_id == batch_id)).first() is not None:
                return False
            db.execute(sa.insert(FLUSHES).values(batch_id=batch_id, written_at=now))
            if rows:
                records = [dict(zip((*GROUPS.values(), *NUMBERS), row)) for row in sorted(rows)]
                insert = self._upsert(LEDGER)
                db.execute(insert.on_conflict_do_update(
                    index_elements=list(GROUPS.values()),
                    set_={name: getattr(LEDGER.c, name) + getattr(insert.excluded, name) for name in NUMBERS},
                ), records)
                totals = _totals_of(rows)
                if totals:
                    insert = self._upsert(TOTALS)
                    db.execute(insert.on_conflict_do_update(
                        index_elements=["period", "subject"], set_={"tokens": TOTALS.c.tokens + insert.excluded.tokens},
                    ), [{"period": period, "subject": subject, "tokens": tokens} for (period, subject), tokens in sorted(totals.items())])
            if now - self._forgotten > 3600:
                self._forgotten = now
                db.execute(sa.delete(FLUSHES).where(FLUSHES.c.written_at < now - _FORGET_BATCHES_AFTER))
        return True

    def _totals(self, periods: tuple) -> dict:
        with self._engine.connect() as db:
            found = db.execute(sa.select(TOTALS.c.period, TOTALS.c.subject, TOTALS.c.tokens).where(TOTALS.c.period.in_(periods)))
            return {(period, subject): int(tokens) for period, subject, tokens in found}

    def _report(self, first_day: str, last_day: str, group_by: tuple) -> list:
        columns = [getattr(LEDGER.c, GROUPS[name]).label(name) for name in group_by]
        sums = [sa.func.sum(getattr(LEDGER.c, name)).label(name) for name in NUMBERS]
        query = sa.select(*columns, *sums).where(LEDGER.c.day.between(first_day, last_day))
        if columns:
            query = query.group_by(*[getattr(LEDGER.c, GROUPS[name]) for name in group_by])
        query = query.order_by(sa.desc("total_tokens"), *[sa.asc(name) for name in group_by])
        with self._engine.connect() as db:
            rows = [dict(row._mapping) for row in db.execute(query)]
        for row in rows:
            for name in NUMBERS:
                row[name] = int(row[name] or 0)
        return [row for row in rows if row["requests"] or row["errors"]]

    def _redacted(self, exc: Exception) -> str:
        text = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "[redacted]")
        return text


def _totals_of(rows) -> dict:
    """(period, subject) -> total tokens that the budgets count, from ledger rows."""
    totals = {}
    for day, user, key, _model, _backend, _requests, _prompt, _completion, total, _unknown, _errors in rows:
        if not total:
            continue
        for period in (day, day[:7]):
            for subject in (f"user:{user}", f"key:{key}" if key else None):
                if subject:
                    totals[(period, subject)] = totals.get((period, subject), 0) + total
    return totals


def _outcome_of(function, *args) -> tuple:
    """(False, the result) or (True, the exception): run in the pool, raised by the caller (an
    exception raised in the pool would be printed with its traceback by gevent's hub)."""
    try:
        return False, function(*args)
    except Exception as exc:  # noqa: BLE001 - handed to the caller
        return True, exc.with_traceback(None)


def now() -> float:
    return time.time()
