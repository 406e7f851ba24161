"""The ledger's tables and statements, in SQL that SQLite and PostgreSQL both speak (the adding
upsert `INSERT ... ON CONFLICT DO UPDATE` included), through each one's own DB-API driver:
sqlite3 from the standard library, psycopg 3 for PostgreSQL (storage.py says what the tables hold
and how a flush adds).

Four tables and six statements need no SQL toolkit: SQLAlchemy, which this used before, cost every
worker 0.2 s of CPU and 16 MiB to import, more than the rest of the gateway. The one difference
between the two engines is the placeholder (`?` against `%s`), translated below.

Imported by storage.py on its own thread, the first time the ledger is used; psycopg only where
`database_url` names PostgreSQL.
"""

import logging
import os
import sqlite3

from .storage import GROUPS, NUMBERS  # the column names storage.py shares with its callers

log = logging.getLogger("gateway.usage")

SCHEMA_VERSION = 1
CONNECT_TIMEOUT = 3  # seconds to reach PostgreSQL; the request path never waits for it
SQLITE_BUSY_TIMEOUT = 10.0  # seconds a write waits for another worker's write lock
_FORGET_BATCHES_AFTER = 2 * 86400.0

# The tables as the first versions made them (then through SQLAlchemy: the same names and types),
# so a database made by either is used as it is. Each is made only when it is missing: PostgreSQL
# checks a role's rights before IF NOT EXISTS (CREATE on the schema; owning the table, for its
# index), and a gateway's role may only read and write tables an administrator made.
SCHEMA = (
    ("usage_ledger", "CREATE TABLE usage_ledger ("
     + ", ".join(f"{name} TEXT NOT NULL" for name in GROUPS.values()) + ", "
     + ", ".join(f"{name} BIGINT NOT NULL" for name in NUMBERS)
     + f", PRIMARY KEY ({', '.join(GROUPS.values())}))"),
    ("usage_ledger_by_day", "CREATE INDEX usage_ledger_by_day ON usage_ledger (day)"),  # the admin's periods: a range of days first
    ("usage_totals", "CREATE TABLE usage_totals (period TEXT NOT NULL, subject TEXT NOT NULL, tokens BIGINT NOT NULL, "
                     "PRIMARY KEY (period, subject))"),
    ("usage_flushes", "CREATE TABLE usage_flushes (batch_id TEXT NOT NULL PRIMARY KEY, written_at FLOAT NOT NULL)"),
    ("usage_schema", "CREATE TABLE usage_schema (version INTEGER NOT NULL PRIMARY KEY)"),
)
_COLUMNS = (*GROUPS.values(), *NUMBERS)
ADD_TO_LEDGER = (
    f"INSERT INTO usage_ledger ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
    f"ON CONFLICT ({', '.join(GROUPS.values())}) DO UPDATE SET "
    + ", ".join(f"{name} = usage_ledger.{name} + excluded.{name}" for name in NUMBERS)
)
ADD_TO_TOTALS = ("INSERT INTO usage_totals (period, subject, tokens) VALUES (?, ?, ?) "
                 "ON CONFLICT (period, subject) DO UPDATE SET tokens = usage_totals.tokens + excluded.tokens")


class Database:
    """One connection and the statements of the ledger; every method runs on the storage's own thread."""

    def __init__(self, url: str, where: str):
        self.url = url  # storage.connection_target: sqlite:///PATH or a postgresql:// URL
        self.where = where
        self.sqlite = url.startswith("sqlite")
        if self.sqlite:
            self._driver = sqlite3
        else:
            import psycopg

            self._driver = psycopg
        # What says the database cannot be used just now (storage.py raises StorageDown for it).
        self.errors = (self._driver.Error, OSError)
        self._connection = None
        self._forgotten = 0.0

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def prepare(self) -> None:
        """The tables at the current schema version (another worker or instance may be creating
        them at the same moment: then the second try finds them)."""
        for attempt in (1, 2):
            try:
                self._in_transaction(self._make_schema, writes=True)
                break
            except self._driver.DatabaseError:
                if attempt == 2:
                    raise

    def _make_schema(self, db) -> None:
        for name, statement in SCHEMA:
            if not self._exists(db, name):
                db.execute(statement)
        version = db.execute("SELECT MAX(version) FROM usage_schema").fetchone()[0]
        if version is None:
            db.execute(self._sql("INSERT INTO usage_schema (version) VALUES (?)"), (SCHEMA_VERSION,))
        elif version > SCHEMA_VERSION:
            log.warning("the usage database %s has schema version %s, newer than this gateway's %s: "
                        "it is used as it is", self.where, version, SCHEMA_VERSION)
        # Later versions migrate here, one step per version, inside this transaction.

    def write(self, batch_id: str, rows: list, now: float) -> bool:
        return self._in_transaction(lambda db: self._write(db, batch_id, rows, now), writes=True)

    def _write(self, db, batch_id: str, rows: list, now: float) -> bool:
        if db.execute(self._sql("SELECT 1 FROM usage_flushes WHERE batch_id = ?"), (batch_id,)).fetchone() is not None:
            return False
        db.execute(self._sql("INSERT INTO usage_flushes (batch_id, written_at) VALUES (?, ?)"), (batch_id, now))
        if rows:
            db.executemany(self._sql(ADD_TO_LEDGER), sorted(rows))
            totals = _totals_of(rows)
            if totals:
                db.executemany(self._sql(ADD_TO_TOTALS), [(*subject, tokens) for subject, tokens in sorted(totals.items())])
        if now - self._forgotten > 3600:
            self._forgotten = now
            db.execute(self._sql("DELETE FROM usage_flushes WHERE written_at < ?"), (now - _FORGET_BATCHES_AFTER,))
        return True

    def totals(self, periods: tuple) -> dict:
        if not periods:
            return {}
        query = f"SELECT period, subject, tokens FROM usage_totals WHERE period IN ({', '.join('?' * len(periods))})"
        found = self._in_transaction(lambda db: db.execute(self._sql(query), periods).fetchall())
        return {(period, subject): int(tokens) for period, subject, tokens in found}

    def report(self, first_day: str, last_day: str, group_by: tuple) -> list:
        # Names of ours, never a caller's text; quoted as names (`user` is a reserved word in PostgreSQL).
        groups = [f'{GROUPS[name]} AS "{name}"' for name in group_by]
        sums = [f'SUM({name}) AS "{name}"' for name in NUMBERS]
        query = (f"SELECT {', '.join(groups + sums)} FROM usage_ledger WHERE day BETWEEN ? AND ?"
                 + (f" GROUP BY {', '.join(GROUPS[name] for name in group_by)}" if group_by else "")
                 + " ORDER BY " + ", ".join(['"total_tokens" DESC', *(f'"{name}" ASC' for name in group_by)]))
        found = self._in_transaction(lambda db: db.execute(self._sql(query), (first_day, last_day)).fetchall())
        rows = [dict(zip((*group_by, *NUMBERS), values)) for values in found]
        for row in rows:
            for name in NUMBERS:
                row[name] = int(row[name] or 0)  # PostgreSQL's SUM of BIGINT is a NUMERIC (a Decimal); none: NULL
        return [row for row in rows if row["requests"] or row["errors"]]

    def _exists(self, db, name: str) -> bool:
        if self.sqlite:
            return db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone() is not None
        return db.execute(self._sql("SELECT to_regclass(?)"), (name,)).fetchone()[0] is not None  # as the search path finds it

    # --- connections and transactions --------------------------------------------------------

    def _sql(self, statement: str) -> str:
        return statement if self.sqlite else statement.replace("?", "%s")

    def _in_transaction(self, work, writes=False):
        """`work(cursor)` in one transaction. A PostgreSQL connection that a restart of the server
        broke is replaced once and the work retried (a failed transaction wrote nothing), instead
        of failing this flush on it."""
        for attempt in (1, 2):
            fresh = self._connection is None
            db = self._connect()
            try:
                if not self.sqlite:
                    with db.transaction():
                        return work(db.cursor())
                # IMMEDIATE: a writing transaction takes the write lock at its start, so waiting
                # for another worker's write is the busy timeout's, never a failed upgrade halfway.
                db.execute("BEGIN IMMEDIATE" if writes else "BEGIN")
                try:
                    result = work(db.cursor())
                    db.execute("COMMIT")
                    return result
                finally:
                    if db.in_transaction:  # the work or the commit failed
                        self._roll_back(db)
            except self._driver.OperationalError:
                if self.sqlite or not (db.broken or db.closed):
                    raise  # SQLite locked or full, a statement timeout: the connection itself is fine
                self.close()
                if fresh or attempt == 2:
                    raise

    def _roll_back(self, db) -> None:
        """A failed SQLite transaction undone; a connection that cannot undo it (ROLLBACK failing
        too) is closed, which ends the transaction and frees the write lock every worker of the
        instance waits on, and the next call opens another."""
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        if db.in_transaction:
            self.close()

    def _connect(self):
        if self._connection is not None:
            return self._connection
        if self.sqlite:
            path = self.url.removeprefix("sqlite:///")
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)  # who used what: for the service's user only
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))  # SQLite gives its -wal and -shm files the same mode
            # isolation_level None: transactions are begun above, not by the driver.
            db = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode = WAL")  # readers never wait for a writer
            db.execute("PRAGMA synchronous = NORMAL")  # a crash of the machine may lose the last flushes, never corrupt
        else:
            db = self._driver.connect(
                self.url, connect_timeout=CONNECT_TIMEOUT, application_name="llm-gateway", autocommit=True,
                # a flush that takes longer is rolled back and retried, never left holding row locks
                options="-c statement_timeout=30000 -c lock_timeout=10000",
                # a connection a firewall dropped without a word fails within a minute, not a flush
                # that waits for the kernel's two hours
                keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3)
        self._connection = db
        return db


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
