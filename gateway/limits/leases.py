"""Global slots: `global_max_concurrency` across every worker of every instance sharing Redis.

A slot is a lease: an id in the backend's sorted set in Redis, scored by when it expires. Taking
one is one script (drop expired leases, count, add if under the limit); giving it back is one
ZREM. While a request runs, this worker's `LeaseKeeper` renews all its leases together, one
round trip every third of the lease time (never a timer per stream, nothing per relayed event),
so a worker killed mid-stream gives its slots back by itself when they expire.

`Backend.acquire()` calls `GlobalSlots.take()` after its own per-worker check, which uses the
slot the request's admission took ahead (same script as the user's window, admission.py) or
takes one; the `Slot` it returns calls `Lease.release()` on every way a request ends
(Slot.release is idempotent), and the ZREM goes out in the background.
With Redis unreachable, "open" gives a lease that only this worker knows (registered in Redis
at the first renewal after it is back, so the global count stays true), "closed" refuses (503).

`LeaseCount` reads how many leases are in use, in the background, for `least_busy` models.
"""

import contextvars
import os
import threading
import time
import uuid

from ..concurrency import carry_into_readers, in_background, start_daemon
from ..errors import GlobalBusy, LimitsUnavailable
from . import scripts
from .store import Unavailable

# How long a lease lives without renewal. Tests shorten it (GATEWAY_LEASE_SECONDS) to see a
# killed worker's slots come back quickly; in production 30 s, the contract's bound.
LEASE_SECONDS = float(os.environ.get("GATEWAY_LEASE_SECONDS") or 30)
RENEW_EVERY = LEASE_SECONDS / 3  # a renewal may fail once and the lease still lives

# End users read this; the operator's log names Redis (store.py).
REDIS_UNAVAILABLE_MESSAGE = "The gateway's shared limits are unavailable right now, so it cannot admit requests; retry shortly."

# Leases the request's admission already took (admission.py: the user's window and the first
# backend's slot in one script), by key, until Backend.acquire() asks for them. Greenlet-local
# (thread-local without gevent); emptied when the request's answer is settled (web.py).
_taken_ahead = contextvars.ContextVar("llm_gateway_leases_taken_ahead", default=None)
carry_into_readers(_taken_ahead)  # a stream's first attempt runs in its reader


def take_ahead(lease) -> None:
    _taken_ahead.set({**(_taken_ahead.get() or {}), lease.key: lease})


def drop_taken_ahead() -> None:
    """Gives back what the request took ahead and never used (its local slot was full, say)."""
    ahead = _taken_ahead.get()
    if ahead:
        _taken_ahead.set(None)
        for lease in ahead.values():
            lease.release()


class Lease:
    __slots__ = ("_keeper", "key", "id")

    def __init__(self, keeper, key: str, lease_id: str):
        self._keeper, self.key, self.id = keeper, key, lease_id

    def release(self) -> None:
        """Gives the slot back; idempotent."""
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.release(self)


class LeaseKeeper:
    """This worker's live leases, all backends together: renewed in one round trip per tick."""

    def __init__(self, store, lease_seconds: float = LEASE_SECONDS):
        self.store = store
        self.lease_ms = int(lease_seconds * 1000)
        self._live = {}  # key -> set of lease ids held by requests running in this worker
        self._lock = threading.Lock()
        self._renewing = False
        self._released_while_renewing = []  # (key, id): removed again after the renewal that may have re-added them
        self._prefix = f"{os.getpid()}-"  # a lease id says which process holds it (for people reading Redis)
        store.on_tick(self.renew)

    def new_id(self) -> str:
        return self._prefix + uuid.uuid4().hex[:16]

    def hold(self, key: str, lease_id: str) -> Lease:
        with self._lock:
            self._live.setdefault(key, set()).add(lease_id)
        return Lease(self, key, lease_id)

    def release(self, lease: Lease) -> None:
        with self._lock:
            held = self._live.get(lease.key)
            if held is not None:
                held.discard(lease.id)
                if not held:
                    del self._live[lease.key]
            if self._renewing:
                self._released_while_renewing.append((lease.key, lease.id))
        # In the background: a stream's backend reader gives its slot back as it ends, and is
        # killed when the response closes, maybe while waiting for a Redis connection (the ZREM
        # would never be sent); and the answer need not wait for it.
        in_background(self._remove, lease.key, lease.id)

    def _remove(self, key: str, lease_id: str) -> None:
        try:
            self.store.command("ZREM", key, lease_id)
        except Unavailable:
            pass  # it expires by itself (or was never in Redis)

    def renew(self) -> None:
        """Extends every lease this worker holds (and registers those taken while Redis was away)."""
        with self._lock:
            if not self._live:
                return
            held = {key: list(ids) for key, ids in self._live.items()}
            self._renewing = True
        try:
            args = [self.lease_ms]
            for ids in held.values():
                args += [len(ids), *ids]
            self.store.script("RENEW_LEASES", list(held), args)
        finally:
            with self._lock:
                self._renewing = False
                late, self._released_while_renewing = self._released_while_renewing, []
            for key, lease_id in late:  # released while the renewal was on its way: not held any more
                try:
                    self.store.command("ZREM", key, lease_id)
                except Unavailable:
                    break  # then they expire by themselves

    def held(self) -> int:
        with self._lock:
            return sum(len(ids) for ids in self._live.values())


class GlobalSlots:
    """One backend's `global_max_concurrency`, as `Backend.acquire()` sees it."""

    def __init__(self, keeper: LeaseKeeper, backend: str, limit: int):
        self.keeper = keeper
        self.backend = backend
        self.limit = limit
        self.key = scripts.lease_key(backend)
        # For least_busy (backends/strategies.py), counted in the background by `LeaseCount`:
        # the leases in use across every instance at the last count (None: not counted, or
        # Redis away), and this worker's requests in flight for the backend at that moment.
        self.counted = None
        self.here_at_count = 0
        self.in_flight_here = _none  # set by limits/web.py: the backend's in-flight count in this worker

    def take(self) -> Lease:
        """A lease, or GlobalBusy (429) when `limit` are in flight everywhere, or LimitsUnavailable
        (503) when Redis is unreachable and redis_failure = "closed"."""
        ahead = _taken_ahead.get()
        if ahead and self.key in ahead:
            return ahead.pop(self.key)  # taken with the request's admission, in the same round trip
        keeper = self.keeper
        store = keeper.store
        lease_id = keeper.new_id()
        try:
            taken = store.script("TAKE_LEASE", [self.key], [self.limit, lease_id, keeper.lease_ms])
        except Unavailable:
            if store.failure == "closed":
                raise LimitsUnavailable(REDIS_UNAVAILABLE_MESSAGE, headers={"Retry-After": "1"}) from None
            taken = True  # "open": this worker's max_concurrency is the limit meanwhile
        if not taken:
            raise GlobalBusy(
                f"Backend '{self.backend}' already has {self.limit} requests in flight across all gateway instances "
                "(global_max_concurrency); retry shortly.",
                headers={"Retry-After": "1"},
            )
        return keeper.hold(self.key, lease_id)


def _none() -> int:
    return 0


COUNT_EVERY = 0.5  # seconds between two counts of the leases in use, for least_busy


class LeaseCount:
    """How busy some backends are across every instance, for least_busy: one round trip every
    COUNT_EVERY seconds in the background (never one per request). A strategy adds this worker's
    own changes since the count (`GlobalSlots.counted + in flight now - here_at_count`), so its
    own requests count at once and other workers' and instances' within COUNT_EVERY."""

    def __init__(self, store, slots: list):
        self.store = store
        self.slots = slots
        self._stopped = False

    def start(self) -> None:
        start_daemon(self._count_forever)

    def stop(self) -> None:
        self._stopped = True

    def _count_forever(self) -> None:
        while not self._stopped:
            time.sleep(COUNT_EVERY)
            self.count()

    def count(self) -> None:
        counts = None
        if self.store.up:
            try:
                counts = self.store.script("COUNT_LEASES", [slots.key for slots in self.slots], [])
            except Unavailable:
                pass  # store.py has said so; this worker's own counts meanwhile
        for index, slots in enumerate(self.slots):
            if counts is None:
                slots.counted = None
            else:
                slots.counted, slots.here_at_count = int(counts[index]), slots.in_flight_here()
