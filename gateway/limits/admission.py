"""The limits as the rest of the gateway sees them: `Limits`, one per worker.

- `admit(user, request_id, backend, ...)` at the start of a chat request: one round trip to Redis
  (or the worker's own windows) checks the user's [limits], the named key's requests_per_minute
  and the token budgets of the key and the user (gateway/usage/budgets.py), counts the request,
  and in the same script takes the backend's global slot when it has one (Backend.acquire() then
  uses it). Raises 429 `user_rate_limit`, `key_rate_limit`, `key_budget_exceeded`,
  `user_budget_exceeded` or, with Redis unreachable and `redis_failure = "closed"`, 503. It
  returns an `Admission` whose `finish(refused, total_tokens)` runs when the answer has ended, in
  the background: a request refused after all (no backend slot) is taken back; an answered one
  adds its tokens (to the user's window and, in Redis, to the budgets' counters).
- `slots[backend]`: the `GlobalSlots` of each backend with `global_max_concurrency` (leases.py),
  which `Backend.acquire()` takes from; for `least_busy` models, their use across instances is
  counted in the background (`LeaseCount`).
- `global_in_flight()`, `redis_state()`: for the status page.

Without `redis_url`, [limits] and requests_per_minute are held by each worker alone (local.py), and
budgets are checked against the usage ledger (`local_budgets`, set by gateway/usage/web.py).
"""

import hashlib
import math
import time

from ..concurrency import in_background
from ..config import Config
from ..errors import KeyRateLimited, LimitsUnavailable, UserRateLimited
from ..usage.budgets import refusal
from . import scripts
from .leases import REDIS_UNAVAILABLE_MESSAGE, RENEW_EVERY, GlobalSlots, LeaseCount, LeaseKeeper, take_ahead
from .local import WINDOW_SECONDS, LocalWindows
from .store import RedisStore, Unavailable

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

    __slots__ = ("_limits", "_user", "_request_id", "_in_redis", "_done", "_key", "_budgets", "_token_limit")

    def __init__(self, limits, user: str, request_id: str, in_redis: bool, key=None, budgets=(), token_limit=0):
        self._limits, self._user, self._request_id, self._in_redis = limits, user, request_id, in_redis
        self._key, self._budgets, self._token_limit = key, budgets, token_limit
        self._done = False

    def finish(self, refused: bool, total_tokens) -> None:
        """`refused`: no backend was called after all (it does not count); else the answer's
        `total_tokens` as the backend reported it (None when it reported none). Once only."""
        if self._done:
            return
        self._done = True
        if refused:
            in_background(self._limits._take_back, self)
        elif isinstance(total_tokens, int) and not isinstance(total_tokens, bool) and total_tokens > 0:
            # After the answer: nothing (the next request on the connection included) waits for it.
            in_background(self._limits._count_tokens, self, total_tokens)


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
        self.key_windows = LocalWindows(config.limits)  # named keys' requests_per_minute, per worker
        self.local_budgets = None  # budgets against the usage ledger (gateway/usage/web.py sets it)

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

    def admit(self, user: str, request_id: str, backend: str | None = None, *, per_minute=None, key=None, budgets=()) -> Admission | None:
        """`backend`: where the request goes first; its global slot is taken ahead when free.
        `per_minute`: the user's (requests, tokens) per minute when an exception changes them;
        `key`: the named key (KeyConfig) when it has requests_per_minute; `budgets`: the
        usage/budgets.py Budgets that apply. None when nothing applies."""
        settings = self.settings
        request_limit, token_limit = per_minute or (settings.per_user_requests_per_minute, settings.per_user_tokens_per_minute)
        key_limit = key.requests_per_minute if key is not None else 0
        if not (request_limit or token_limit or key_limit or budgets):
            return None
        store = self.store
        if store is not None:
            keys = [*scripts.user_keys(user), scripts.key_requests_key(key.name) if key_limit else scripts.user_keys(user)[0]]
            keys += [budget.redis_key for budget in budgets]
            args = [request_limit, token_limit, request_id, WINDOW_MS, key_limit, len(budgets)]
            seed = self.local_budgets.tokens_used if self.local_budgets is not None else None
            for budget in budgets:
                args += [budget.limit, seed(budget.period_id, budget.subject) if seed else 0, budget.redis_ttl]
            slots = self.slots.get(backend)
            if slots is not None:
                lease_id = slots.keeper.new_id()
                keys.append(slots.key)
                args += [slots.limit, lease_id, slots.keeper.lease_ms]
            try:
                admitted, wait_ms, which, leased, index = store.script("ADMIT", keys, args)
            except Unavailable:
                if store.failure == "closed":
                    raise LimitsUnavailable(REDIS_UNAVAILABLE_MESSAGE, headers={"Retry-After": "1"}) from None
            else:
                if not admitted:
                    which = which.decode() if isinstance(which, bytes) else which
                    if which == "budget":
                        raise refusal(budgets[int(index) - 1], time.time())
                    self._refuse(which, math.ceil(wait_ms / 1000), request_limit, token_limit, key)
                if leased:
                    take_ahead(slots.keeper.hold(slots.key, lease_id))
                return Admission(self, user, request_id, True, key if key_limit else None, budgets, token_limit)
        # Per worker: budgets first (nothing counted), then the key's window, then the user's.
        if budgets and self.local_budgets is not None:
            used_up = self.local_budgets.first_used_up(budgets)
            if used_up is not None:
                raise refusal(used_up, time.time())
        if key_limit:
            which, seconds = self.key_windows.admit(f"key:{key.name}", request_id, key_limit, 0)
            if which:
                self._refuse("key_requests", seconds, request_limit, token_limit, key)
        if request_limit or token_limit:
            which, seconds = self.local.admit(user, request_id, request_limit, token_limit)
            if which:
                if key_limit:
                    self.key_windows.cancel(f"key:{key.name}", request_id)
                self._refuse(which, seconds, request_limit, token_limit, key)
        return Admission(self, user, request_id, False, key if key_limit else None, budgets, token_limit)

    def _refuse(self, which: str, seconds: int, request_limit: int, token_limit: int, key):
        seconds = max(1, int(seconds))
        if which == "key_requests":
            raise KeyRateLimited(
                f"The API key '{key.name}' has sent {key.requests_per_minute} requests in the last 60 s, its limit "
                f"(requests_per_minute of [keys.{key.name}]); retry in {seconds} s.",
                headers={"Retry-After": str(seconds)},
            )
        if which == "requests":
            error = UserRateLimited(
                f"You have sent {request_limit} requests in the last 60 s, the gateway's "
                f"per-user limit (per_user_requests_per_minute); retry in {seconds} s.",
                headers={"Retry-After": str(seconds)},
            )
        else:
            error = UserRateLimited(
                f"Your answers in the last 60 s used at least {token_limit} tokens, the "
                f"gateway's per-user limit (per_user_tokens_per_minute); retry in {seconds} s.",
                headers={"Retry-After": str(seconds)},
            )
            error.kind = "user_tokens_limit"
        raise error

    def _take_back(self, admission: Admission) -> None:
        user, request_id, key = admission._user, admission._request_id, admission._key
        if not admission._in_redis:
            self.local.cancel(user, request_id)
            if key is not None:
                self.key_windows.cancel(f"key:{key.name}", request_id)
            return
        try:
            self.store.command("ZREM", scripts.user_keys(user)[0], request_id)
            if key is not None:
                self.store.command("ZREM", scripts.key_requests_key(key.name), request_id)
        except Unavailable:
            pass  # it leaves the window by itself within 60 s

    def _count_tokens(self, admission: Admission, tokens: int) -> None:
        user, request_id, store = admission._user, admission._request_id, self.store
        if admission._budgets and admission._in_redis:
            # Without Redis the budgets read the usage ledger, which counts every answer itself.
            budgets = admission._budgets
            try:
                store.script("COUNT_BUDGETS", [budget.redis_key for budget in budgets], [tokens, *(budget.redis_ttl for budget in budgets)])
            except Unavailable:
                pass  # the ledger has it; a counter missing later is seeded from the ledger
        if not admission._token_limit:
            return
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
