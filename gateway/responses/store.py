"""Stored responses: `previous_response_id`, `item_reference`, GET and DELETE /v1/responses/<id>.

A response is stored (unless the request says `store: false`, as Codex does) with its context:
every item before its output (the history it continued, then its own input). The next request
that names it as `previous_response_id` continues from that context and its output, so a long
conversation needs one lookup, and lives as long as its latest turn. Its output items and its
own input items that carry an id can also be named in `input` as `item_reference`s.

Every stored response belongs to its owner, `owner_of(...)`: a hash of the inbound key and of
the user as [limits] identifies one (limits/admission.py `user_key`). Another owner gets what an
unknown id gets (404; 400 `previous_response_not_found`), so nobody learns that it exists.
Responses are kept `response_store_seconds` (default 3600; 0: never stored) and must be found
whichever worker or instance serves the next request:

- with `[gateway] redis_url`: in Redis (`RedisResponses`), through the limits' own client and its
  bounded waits (limits/store.py), expiring there;
- else in SQLite under `data_dir` (`SQLiteResponses`), shared by every worker of the instance
  (WAL, a busy timeout). Its calls run on one thread of the worker's own (under gevent: its
  native thread pool), never on the event loop, where a wait for another worker's write would
  stall every stream of the worker.

No Flask here: the view (web/responses_api.py) says who the owner is.
"""

import dataclasses
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time

from ..concurrency import cooperative, off_the_loop, run_if_large
from ..errors import InvalidRequest, PreviousResponseNotFound, ResponseStoreUnavailable
from ..limits.admission import user_key
from .to_chat import input_items

log = logging.getLogger("gateway.responses")

DATABASE_FILE = "responses.sqlite3"
_PURGE_EVERY = 60.0  # seconds between deletions of expired rows, per worker
_REDIS_PREFIX = "llm-gateway:response:"
_REDIS_ITEM_PREFIX = "llm-gateway:response-item:"


def _now() -> float:
    return time.time()  # one place to read the clock (tests move it)


@dataclasses.dataclass(slots=True)
class Stored:
    response: dict  # the Response object, as the client got it
    context: list  # the items before its output: the history it continued, then its own input


def owner_of(asker: dict, authorization: str | None, client_address: str | None) -> str:
    """Who a stored response belongs to: the inbound key and the user (as [limits] counts one),
    hashed together. `asker` holds only what the headers say (identity.py): a GET or DELETE has
    no body, so the body's `user` cannot take part."""
    key = (authorization or "").partition(" ")[2].strip()
    key_hash = hashlib.sha256(b"key\0" + key.encode("utf-8", "surrogatepass")).hexdigest() if key else ""
    return hashlib.sha256(f"owner\0{key_hash}\0{user_key(asker, authorization, client_address)}".encode()).hexdigest()[:40]


def conversation(store, request: dict, owner: str) -> list:
    """The items a request continues from and adds: the stored context and output of its
    `previous_response_id`, then its own input with every `item_reference` resolved."""
    items = []
    previous_id = request.get("previous_response_id")
    if previous_id:
        stored = store.load(previous_id, owner)
        if stored is None:
            raise PreviousResponseNotFound(
                f"Invalid request: 'previous_response_id': no response '{previous_id}' is stored for you "
                f"({store.describe()}; a response belongs to the key and user that created it).",
                param="previous_response_id",
            )
        items = [*stored.context, *stored.response.get("output", ())]
    for index, item in enumerate(input_items(request)):
        if isinstance(item, dict) and item.get("type") == "item_reference":
            found = store.item(item["id"], owner)
            if found is None:
                raise InvalidRequest(f"Invalid request: 'input.{index}.id': no stored item '{item['id']}' (unknown, expired, or not yours).",
                                     param=f"input.{index}.id", code="item_not_found")
            item = found
        items.append(item)
    return items


def _indexed_items(stored: Stored, own_input: list) -> list:
    """The items an `item_reference` may name later: the output, and this request's own input items with an id."""
    return [item for item in (*own_input, *stored.response.get("output", ())) if isinstance(item, dict) and isinstance(item.get("id"), str)]


def _encoded(owner: str, stored: Stored) -> bytes:
    return json.dumps({"owner": owner, "response": stored.response, "context": stored.context}, separators=(",", ":")).encode()


def _decoded(blob: bytes) -> tuple:
    data = json.loads(blob)
    return data["owner"], Stored(data["response"], data["context"])


class NoStore:
    """`response_store_seconds = 0`: nothing is ever stored."""

    seconds = 0
    storing = False

    def describe(self) -> str:
        return "this gateway stores no responses (response_store_seconds = 0)"

    def save(self, stored: Stored, owner: str, own_input: list) -> None:
        pass

    def load(self, response_id: str, owner: str) -> Stored | None:
        return None

    def delete(self, response_id: str, owner: str) -> bool:
        return False

    def item(self, item_id: str, owner: str) -> dict | None:
        return None


class SQLiteResponses:
    """Stored responses in `<data_dir>/responses.sqlite3`, shared by this instance's workers."""

    storing = True

    def __init__(self, directory: str, seconds: float):
        self.seconds = seconds
        self.directory = os.path.abspath(directory)
        self.path = os.path.join(self.directory, DATABASE_FILE)
        self._connection = None
        self._pool = None  # under gevent: one native thread of this worker's, made in the worker
        self._pool_pid = None
        self._lock = threading.Lock()  # elsewhere: the calling threads take turns on the one connection
        self._purged = 0.0
        self._failing = False

    def describe(self) -> str:
        return f"responses are kept {self.seconds:g} s"

    # --- the four calls ---------------------------------------------------------------------------

    def save(self, stored: Stored, owner: str, own_input: list) -> None:
        items = _indexed_items(stored, own_input)
        try:
            self._run(self._save, stored, owner, items, _now())
        except ResponseStoreUnavailable as exc:
            log.warning("a response could not be stored (%s); it cannot be continued", exc.message)

    def load(self, response_id: str, owner: str) -> Stored | None:
        found = self._run(self._load, response_id, _now())
        if found is None or found[0] != owner:
            return None
        return found[1]

    def delete(self, response_id: str, owner: str) -> bool:
        return self._run(self._delete, response_id, owner, _now())

    def item(self, item_id: str, owner: str) -> dict | None:
        return self._run(self._item, item_id, owner, _now())

    # --- on the store's own thread ----------------------------------------------------------------

    def _save(self, stored: Stored, owner: str, items: list, now: float) -> None:
        blob = _encoded(owner, stored)
        expires = now + self.seconds
        response_id = stored.response["id"]
        db = self._db()
        with db:
            db.execute("INSERT OR REPLACE INTO responses (id, owner, expires_at, body) VALUES (?, ?, ?, ?)", (response_id, owner, expires, blob))
            db.executemany(
                "INSERT OR REPLACE INTO response_items (owner, id, response_id, expires_at, body) VALUES (?, ?, ?, ?, ?)",
                [(owner, item["id"], response_id, expires, json.dumps(item, separators=(",", ":")).encode()) for item in items],
            )
        if now - self._purged > _PURGE_EVERY:  # expired rows are never read; this only frees the space
            self._purged = now
            with db:
                db.execute("DELETE FROM responses WHERE expires_at <= ?", (now,))
                db.execute("DELETE FROM response_items WHERE expires_at <= ?", (now,))

    def _load(self, response_id: str, now: float):
        row = self._db().execute("SELECT body FROM responses WHERE id = ? AND expires_at > ?", (response_id, now)).fetchone()
        return None if row is None else _decoded(row[0])

    def _delete(self, response_id: str, owner: str, now: float) -> bool:
        db = self._db()
        with db:
            deleted = db.execute("DELETE FROM responses WHERE id = ? AND owner = ? AND expires_at > ?", (response_id, owner, now)).rowcount
            if deleted:
                db.execute("DELETE FROM response_items WHERE owner = ? AND response_id = ?", (owner, response_id))
        return bool(deleted)

    def _item(self, item_id: str, owner: str, now: float):
        row = self._db().execute("SELECT body FROM response_items WHERE owner = ? AND id = ? AND expires_at > ?", (owner, item_id, now)).fetchone()
        return None if row is None else json.loads(row[0])

    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)  # conversations: for the service's user only
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))  # SQLite gives its -wal and -shm files the same mode
            # timeout: another worker's write is waited for (on this thread, not the event loop).
            # IMMEDIATE: a write transaction takes the write lock at its start, so the wait for it
            # is the busy timeout's, never a failed upgrade halfway through.
            db = sqlite3.connect(self.path, timeout=5.0, isolation_level="IMMEDIATE", check_same_thread=False)
            db.execute("PRAGMA journal_mode = WAL")  # readers never wait for a writer
            db.execute("PRAGMA synchronous = NORMAL")  # durable enough for answers kept an hour
            db.execute("CREATE TABLE IF NOT EXISTS responses (id TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL, body BLOB NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS response_items (owner TEXT NOT NULL, id TEXT NOT NULL, response_id TEXT NOT NULL, "
                       "expires_at REAL NOT NULL, body BLOB NOT NULL, PRIMARY KEY (owner, id))")
            db.execute("CREATE INDEX IF NOT EXISTS responses_expiry ON responses (expires_at)")
            db.execute("CREATE INDEX IF NOT EXISTS response_items_of ON response_items (owner, response_id)")
            self._connection = db
        return self._connection

    def _run(self, function, *args):
        try:
            if cooperative():
                if self._pool is None or self._pool_pid != os.getpid():
                    from gevent.threadpool import ThreadPool

                    self._pool, self._pool_pid = ThreadPool(1), os.getpid()
                result = self._pool.apply(function, args)
            else:
                with self._lock:
                    result = function(*args)
        except (sqlite3.Error, OSError) as exc:
            self._connection = None  # the next call starts afresh (a data_dir fixed meanwhile)
            if not self._failing:
                self._failing = True
                log.warning("the response store %s cannot be used: %s: %s", self.path, type(exc).__name__, exc)
            raise ResponseStoreUnavailable(f"The gateway's response store cannot be used right now ({type(exc).__name__}); retry shortly.") from None
        if self._failing:
            self._failing = False
            log.warning("the response store %s works again", self.path)
        return result


class RedisResponses:
    """Stored responses in the Redis that [gateway] redis_url names, shared by every instance."""

    storing = True

    def __init__(self, redis, seconds: float):
        """`redis`: the limits' RedisStore (bounded waits, one log line when it goes and comes back)."""
        self.seconds = seconds
        self._redis = redis

    def describe(self) -> str:
        return f"responses are kept {self.seconds:g} s"

    def save(self, stored: Stored, owner: str, own_input: list) -> None:
        from ..limits.store import Unavailable

        ttl = str(max(1, int(self.seconds * 1000)))
        items = _indexed_items(stored, own_input)
        blob = off_the_loop(_encoded, owner, stored)  # a long conversation's context runs to megabytes
        try:
            self._redis.command("SET", _REDIS_PREFIX + stored.response["id"], blob, "PX", ttl)
            if items:
                keys = [_item_key(owner, item["id"]) for item in items]
                values = [json.dumps(item, separators=(",", ":")) for item in items]
                self._redis.command("EVAL", _SET_ALL, len(keys), *keys, *values, ttl)
        except Unavailable:
            log.warning("a response could not be stored: Redis is unreachable; it cannot be continued")

    def load(self, response_id: str, owner: str) -> Stored | None:
        blob = self._call("GET", _REDIS_PREFIX + response_id)
        if blob is None:
            return None
        found_owner, stored = run_if_large(len(blob), _decoded, blob)
        return stored if found_owner == owner else None

    def delete(self, response_id: str, owner: str) -> bool:
        stored = self.load(response_id, owner)
        if stored is None:
            return False
        keys = [_item_key(owner, item["id"]) for item in stored.response.get("output", ()) if isinstance(item.get("id"), str)]
        return bool(self._call("DEL", _REDIS_PREFIX + response_id, *keys))

    def item(self, item_id: str, owner: str) -> dict | None:
        blob = self._call("GET", _item_key(owner, item_id))
        return None if blob is None else json.loads(blob)

    def _call(self, *command):
        from ..limits.store import Unavailable

        try:
            return self._redis.command(*command)
        except Unavailable:
            raise ResponseStoreUnavailable("The gateway's response store (Redis) is unreachable; retry shortly.") from None


# One round trip for every item of a response: SET each key to its value with the same expiry.
# The keys share the owner's hash tag, so they live in one cluster slot.
_SET_ALL = """
local ttl = ARGV[#ARGV]
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[i], 'PX', ttl)
end
return #KEYS
"""


def _item_key(owner: str, item_id: str) -> str:
    return f"{_REDIS_ITEM_PREFIX}{{{owner}}}:{item_id}"


def open_store(settings, redis=None):
    """The store `[gateway]` settings ask for: none (0 s), Redis (with redis_url), else SQLite."""
    if not settings.response_store_seconds:
        return NoStore()
    if redis is not None:
        return RedisResponses(redis, settings.response_store_seconds)
    return SQLiteResponses(settings.data_dir, settings.response_store_seconds)
