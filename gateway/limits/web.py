"""The limits in the Flask app: built per worker, checked in the chat view, shown on the status page.

- `init_app` builds this worker's `Limits`, hands each backend with `global_max_concurrency` its
  global slots (`Backend.global_slots`, taken inside `Backend.acquire()`), and starts watching Redis.
- `admit_request(asker, backend, caller, user)` is the chat view's one line: the user's [limits],
  the named key's requests_per_minute, the key's and the user's token budgets (429 / 503), and,
  when the answer has ended, the request taken back if it was refused after all, or its tokens
  counted.
  Every limit's refusals are counted here, once per request (`/metrics`, the status page).
- `add_status(body)` adds Redis's state, the limits and the global in-flight counts.
"""

import time

from flask import Flask, after_this_request, current_app, g, request

from ..telemetry import metrics
from ..telemetry.record import REJECTED
from ..usage.budgets import applicable
from ..usage.ledger import total_of
from .admission import Limits, user_key
from .leases import drop_taken_ahead

# The error kind of each refusal, and the `limit` label /metrics counts it under.
REFUSALS = {
    "concurrency_limit": "max_concurrency",
    "global_concurrency_limit": "global_concurrency",
    "user_requests_limit": "user_requests",
    "user_tokens_limit": "user_tokens",
    "limits_unavailable": "redis_unavailable",
    "key_requests_limit": "key_requests",
    "key_budget": "key_budget",
    "user_budget": "user_budget",
}


def init_app(app: Flask, config, registry) -> Limits:
    limits = Limits(config)
    app.extensions["limits"] = limits
    app.extensions["limits_config"] = config
    for name, backend in registry.backends.items():
        backend.global_slots = slots = limits.slots.get(name)
        if slots is not None:  # least_busy's count across instances, corrected by this worker's own
            slots.in_flight_here = lambda backend=backend: backend.in_flight
    limits.start()
    return limits


def _limits() -> Limits:
    return current_app.extensions["limits"]


def admit_request(asker: dict, backend=None, caller=None, user: str | None = None) -> None:
    """At the start of a chat request, once it is known to be valid: raises 429 `user_rate_limit`,
    `key_rate_limit`, `key_budget_exceeded`, `user_budget_exceeded` or 503 `limits_unavailable`;
    otherwise the request counts (until it turns out refused). `backend`: the one the request goes
    to first, whose global slot is taken in the same round trip; `caller`: its inbound key
    (web/access.py); `user`: whom the usage ledger counts it for (a per-user budget's subject)."""
    record = g.record
    admission = None

    @after_this_request
    def settle(response):
        drop_taken_ahead()  # a slot taken ahead that Backend.acquire() never asked for
        refused = record.outcome == REJECTED
        if refused and record.error in REFUSALS:
            metrics.limit_refused(REFUSALS[record.error])
        if admission is not None:
            # When the answer has ended (a stream's last byte, or its client gone): tokens known.
            response.call_on_close(lambda: admission.finish(refused, _total_tokens(record.usage)))
        return response

    config, limits = current_app.extensions["limits_config"], _limits()
    key = caller.named if caller is not None else None
    names = (asker.get("user.email"), asker.get("user.id"), user)
    per_minute = None
    if config.limits.users:  # an exception may change this user's per-minute limits
        settings = config.limits.for_user(names)
        per_minute = (settings["requests_per_minute"], settings["tokens_per_minute"])
    budgets = applicable(config, key, user, names, time.time()) if user is not None else ()
    hashed = user_key(asker, request.headers.get("Authorization"), request.remote_addr)
    admission = limits.admit(hashed, g.request_id, getattr(backend, "name", None), per_minute=per_minute,
                             key=key if key is not None and key.requests_per_minute else None, budgets=budgets)


def _total_tokens(usage):
    """The answer's tokens: the backend's total_tokens, else prompt + completion (usage/ledger.py)."""
    return total_of(usage)


def add_status(body: dict) -> None:
    """Adds to /status.json's body (and so the page's): `redis`, `limits`, and per backend its
    `global_max_concurrency` and `global_in_flight` (across all instances; null when unknown)."""
    limits = _limits()
    in_flight = limits.global_in_flight()
    refused = metrics.limit_refusals()
    body["redis"] = limits.redis_state()
    body["limits"] = {
        "shared": limits.shared,
        "per_user_requests_per_minute": limits.settings.per_user_requests_per_minute,
        "per_user_tokens_per_minute": limits.settings.per_user_tokens_per_minute,
        "refused": {label: int(refused.get(label, 0)) for label in REFUSALS.values()},
    }
    for backend in body["backends"]:
        slots = limits.slots.get(backend["name"])
        backend["global_max_concurrency"] = slots.limit if slots else None
        backend["global_in_flight"] = in_flight.get(backend["name"])


def redis_state() -> dict | None:
    """For /readyz's body: shown, not judged (every instance shares the one Redis)."""
    return _limits().redis_state()
