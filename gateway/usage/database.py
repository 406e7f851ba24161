"""The ledger's tables and statements, through SQLAlchemy Core: SQLite and PostgreSQL speak the
same statements and the same upsert (storage.py says what the tables hold and how a flush adds).

Imported by storage.py on its own thread, the first time the ledger is used: SQLAlchemy costs a
fifth of a second to import, which every gateway process would otherwise pay at start-up.
"""

import logging
import os

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

log = logging.getLogger("gateway.usage")

SCHEMA_VERSION = 1
CONNECT_TIMEOUT = 3  # seconds to reach PostgreSQL; the request path never waits for it
_FORGET_BATCHES_AFTER = 2 * 86400.0

from .storage import GROUPS, NUMBERS  # noqa: E402 - the column names storage.py shares with its callers

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


ERRORS = (sa.exc.SQLAlchemyError, OSError)  # what says the database cannot be used just now


class Database:
    """One engine and the statements of the ledger; every method runs on the storage's own thread."""

    def __init__(self, url: str, where: str):
        self.url = url
        self.where = where
        self.sqlite = url.startswith("sqlite")
        self._engine = None
        self._upsert = sqlite.insert if self.sqlite else postgresql.insert
        self._forgotten = 0.0

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def prepare(self) -> None:
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

    def write(self, batch_id: str, rows: list, now: float) -> bool:
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

    def totals(self, periods: tuple) -> dict:
        with self._engine.connect() as db:
            found = db.execute(sa.select(TOTALS.c.period, TOTALS.c.subject, TOTALS.c.tokens).where(TOTALS.c.period.in_(periods)))
            return {(period, subject): int(tokens) for period, subject, tokens in found}

    def report(self, first_day: str, last_day: str, group_by: tuple) -> list:
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


