"""The limits as the rest of the gateway sees them: `Limits`, one per worker.

- `admit(user, request_id, backend)` at the start of a chat request: one round trip to Redis (or
  the worker's own windows) checks the user's [limits] and counts the request, and in the same
  script takes the backend's global slot when it has one (Backend.acquire() then uses it). Raises
  429 `user_rate_limit` or, with Redis unreachable and `redis_failure = "closed"`, 503. It returns
  an `Admission` whose `finish(refused, total_tokens)` runs when the answer has ended, in the
  background: a request refused after all (no backend slot) is taken back; an answered one adds
  its tokens.
- `slots[backend]`: the `GlobalSlots` of each backend with `global_max_concurrency` (leases.py),
  which `Backend.acquire()` takes from; for `least_busy` models, their use across instances is
  counted in the background (`LeaseCount`).
- `global_in_flight()`, `redis_state()`: for the status page.

Without `redis_url`, [limits] are held by each worker alone (local.py).
"""

import hashlib
import math

from ..config import Config
from ..errors import LimitsUnavailable, UserRateLimited
from . import scripts
from .leases import REDIS_UNAVAILABLE_MESSAGE, RENEW_EVERY, GlobalSlots, LeaseCount, LeaseKeeper, take_ahead
from .local import WINDOW_SECONDS, LocalWindows
from .store import RedisStore, Unavailable, in_background

WINDOW_MS = int(WINDOW_SECONDS * 1000)


def user_key(asker: dict, authorization: str | None, client_address: str | None) -> str:
    """Whom a per-user limit counts: {user.id}, else {user.email}, else the inbound key, else the
    client address. A hash: no key, email or id is kept in Redis, nor in the worker's memory."""
    for name in ("user.id", "user.email"):
        if asker.get(name):
            return _hash(name, asker[name])
    key = (authorization or "").partition(" ")[2].strip()
    if key:
        return _hash("key", key)
    return _hash("address", client_address or "")


def _hash(kind: str, value: str) -> str:
    return hashlib.sha256(f"{kind}\0{value}".encode("utf-8", "surrogatepass")).hexdigest()[:32]


class Admission:
    """One admitted request, until its answer has ended."""

    __slots__ = ("_limits", "_user", "_request_id", "_in_redis", "_done")

    def __init__(self, limits, user: str, request_id: str, in_redis: bool):
        self._limits, self._user, self._request_id, self._in_redis = limits, user, request_id, in_redis
        self._done = False

    def finish(self, refused: bool, total_tokens) -> None:
        """`refused`: no backend was called after all (it does not count); else the answer's
        `total_tokens` as the backend reported it (None when it reported none). Once only."""
        if self._done:
            return
        self._done = True
        if refused:
            in_background(self._limits._take_back, self._user, self._request_id, self._in_redis)
        elif isinstance(total_tokens, int) and not isinstance(total_tokens, bool) and total_tokens > 0:
            # After the answer: nothing (the next request on the connection included) waits for it.
            in_background(self._limits._count_tokens, self._user, self._request_id, total_tokens)


class Limits:
    def __init__(self, config: Config):
        gateway = config.gateway
        self.settings = config.limits
        self.store = None
        self.slots = {}
        self.counter = None
        if gateway.redis_url:
            self.store = RedisStore(gateway.redis_url, gateway.redis_failure, config.secrets, tick_seconds=RENEW_EVERY)
            keeper = LeaseKeeper(self.store)
            self.slots = {
                name: GlobalSlots(keeper, name, backend.global_max_concurrency)
                for name, backend in config.backends.items()
                if backend.global_max_concurrency
            }
            # least_busy models weigh their backends by the leases in use across instances.
            counted = {name for model in config.models.values() if model.strategy == "least_busy" for name in model.backends}
            if counted & set(self.slots):
                self.counter = LeaseCount(self.store, [slots for name, slots in self.slots.items() if name in counted])
        self.local = LocalWindows(config.limits)

    def start(self) -> None:
        """In the worker: starts watching Redis (renewals, reconnecting)."""
        if self.store is not None:
            self.store.start()
        if self.counter is not None:
            self.counter.start()

    def close(self) -> None:
        if self.counter is not None:
            self.counter.stop()
        if self.store is not None:
            self.store.close()

    @property
    def shared(self) -> bool:
        """Whether limits hold across workers and instances right now."""
        return self.store is not None and self.store.up

    # --- per user ---------------------------------------------------------------------------

    def admit(self, user: str, request_id: str, backend: str | None = None) -> Admission | None:
        """`backend`: where the request goes first; its global slot is taken ahead when free."""
        settings = self.settings
        if not settings.on:
            return None
        store = self.store
        if store is not None:
            keys = list(scripts.user_keys(user))
            args = [settings.per_user_requests_per_minute, settings.per_user_tokens_per_minute, request_id, WINDOW_MS]
            slots = self.slots.get(backend)
            if slots is not None:
                lease_id = slots.keeper.new_id()
                keys.append(slots.key)
                args += [slots.limit, lease_id, slots.keeper.lease_ms]
            try:
                admitted, wait_ms, which, leased = store.script("ADMIT", keys, args)
            except Unavailable:
                if store.failure == "closed":
                    raise LimitsUnavailable(REDIS_UNAVAILABLE_MESSAGE, headers={"Retry-After": "1"}) from None
            else:
                if not admitted:
                    self._refuse(which.decode() if isinstance(which, bytes) else which, math.ceil(wait_ms / 1000))
                if leased:
                    take_ahead(slots.keeper.hold(slots.key, lease_id))
                return Admission(self, user, request_id, True)
        which, seconds = self.local.admit(user, request_id)
        if which:
            self._refuse(which, seconds)
        return Admission(self, user, request_id, False)

    def _refuse(self, which: str, seconds: int):
        seconds = max(1, int(seconds))
        if which == "requests":
            error = UserRateLimited(
                f"You have sent {self.settings.per_user_requests_per_minute} requests in the last 60 s, the gateway's "
                f"per-user limit (per_user_requests_per_minute); retry in {seconds} s.",
                headers={"Retry-After": str(seconds)},
            )
        else:
            error = UserRateLimited(
                f"Your answers in the last 60 s used at least {self.settings.per_user_tokens_per_minute} tokens, the "
                f"gateway's per-user limit (per_user_tokens_per_minute); retry in {seconds} s.",
                headers={"Retry-After": str(seconds)},
            )
            error.kind = "user_tokens_limit"
        raise error

    def _take_back(self, user: str, request_id: str, in_redis: bool) -> None:
        if not self.settings.per_user_requests_per_minute:
            return  # no request was counted
        if not in_redis:
            self.local.cancel(user, request_id)
            return
        try:
            self.store.command("ZREM", scripts.user_keys(user)[0], request_id)
        except Unavailable:
            pass  # it leaves the window by itself within 60 s

    def _count_tokens(self, user: str, request_id: str, tokens: int) -> None:
        if not self.settings.per_user_tokens_per_minute:
            return
        store = self.store
        if store is not None:
            try:
                _requests, entries, total = scripts.user_keys(user)
                store.script("COUNT_TOKENS", [entries, total], [f"{request_id}:{tokens}", tokens, WINDOW_MS])
                return
            except Unavailable:
                if store.failure == "closed":
                    return  # nothing is admitted meanwhile; the count is lost with the outage
        self.local.count_tokens(user, tokens)

    # --- what the status page shows ---------------------------------------------------------

    def global_in_flight(self) -> dict:
        """Backend -> leases in use across all instances now; empty when Redis is unreachable."""
        if not self.slots or not self.shared:
            return {}
        names = list(self.slots)
        try:
            counts = self.store.script("COUNT_LEASES", [self.slots[name].key for name in names], [])
        except Unavailable:
            return {}
        return dict(zip(names, (int(count) for count in counts)))

    def redis_state(self) -> dict | None:
        if self.store is None:
            return None
        return {"state": "ok" if self.store.up else "unreachable", "failure": self.store.failure}
