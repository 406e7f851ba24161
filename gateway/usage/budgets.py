"""Token budgets per UTC day and month: which apply to a request, and the refusal when one is used up.

A budget belongs to a named key (`[keys.NAME] tokens_per_day`, `tokens_per_month`) or to a user
(`[limits] per_user_tokens_per_day`, `per_user_tokens_per_month`, with `[limits.users."x"]`
exceptions; 0 is unlimited). It counts total tokens (input + output) as the backends reported
them. A request is admitted while the budget has room; its tokens count when its answer ends, so
answers running at once (a stream above all) may take a budget past its limit by what they use:
the next request is refused.

The counts come from Redis when `redis_url` is set (checked in the limits' one round trip:
limits/scripts.py ADMIT), else from the usage ledger (`LedgerBudgets` here: what the database holds
plus what this worker has not written yet, refreshed every second, so a used-up budget binds on
every worker of the instance within 3 s). No Flask here.
"""

import dataclasses
import hashlib

from ..errors import KeyBudgetExceeded, UserBudgetExceeded
from .periods import day_of, month_of, next_start, seconds_until_reset

BUDGET_PREFIX = "llm-gateway:budget:"
_WORDS = {"day": ("today", "tokens_per_day"), "month": ("this month", "tokens_per_month")}


@dataclasses.dataclass(frozen=True, slots=True)
class Budget:
    whose: str  # "key" or "user"
    name: str  # the key's NAME, or the user as the ledger names them
    period: str  # "day" or "month"
    period_id: str  # "2026-12-06" or "2026-12" (UTC)
    limit: int

    @property
    def subject(self) -> str:
        return f"{self.whose}:{self.name}"

    @property
    def redis_key(self) -> str:
        """Its counter in Redis: the subject only as a hash (no email or id in clear), per period."""
        digest = hashlib.sha256(self.subject.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return f"{BUDGET_PREFIX}{{{digest}}}:{self.period_id}"

    @property
    def redis_ttl(self) -> int:
        """Seconds a counter outlives its period (a day or a month), for clocks that disagree."""
        return 2 * 86400 if self.period == "day" else 33 * 86400


def applicable(config, key, user: str, user_names, now: float) -> list:
    """The budgets of a request by `key` (a KeyConfig or None) for `user` (known by any of
    `user_names` in [limits.users]) at `now`: the key's, then the user's, day before month."""
    day, month = day_of(now), month_of(now)
    found = []
    if key is not None:
        if key.tokens_per_day:
            found.append(Budget("key", key.name, "day", day, key.tokens_per_day))
        if key.tokens_per_month:
            found.append(Budget("key", key.name, "month", month, key.tokens_per_month))
    settings = config.limits.for_user(user_names)
    if settings["tokens_per_day"]:
        found.append(Budget("user", user, "day", day, settings["tokens_per_day"]))
    if settings["tokens_per_month"]:
        found.append(Budget("user", user, "month", month, settings["tokens_per_month"]))
    return found


def refusal(budget: Budget, now: float):
    """The 429 for a used-up budget: Retry-After until it resets, and a message saying when."""
    seconds = seconds_until_reset(budget.period, now)
    when, setting = _WORDS[budget.period]
    resets = next_start(budget.period, now).strftime("%Y-%m-%d %H:%M UTC")
    hours, rest = divmod(seconds, 3600)
    wait = f"{hours} h {rest // 60} min" if hours else f"{max(1, rest // 60)} min"
    if budget.whose == "key":
        return KeyBudgetExceeded(
            f"The API key '{budget.name}' has used its {budget.limit} tokens for {when} ({setting} of [keys.{budget.name}]); "
            f"its budget resets at {resets} (in {wait}).",
            headers={"Retry-After": str(seconds)},
        )
    return UserBudgetExceeded(
        f"You have used your {budget.limit} tokens for {when} (the gateway's per-user {setting}); "
        f"your budget resets at {resets} (in {wait}).",
        headers={"Retry-After": str(seconds)},
    )


def subjects_of(user: str, key_name: str | None, day: str, month: str) -> tuple:
    """The (period, subject) counters one request's tokens add to: its user's and its key's, per day and month."""
    pairs = ((day, f"user:{user}"), (month, f"user:{user}"))
    if key_name:
        pairs += ((day, f"key:{key_name}"), (month, f"key:{key_name}"))
    return pairs


class LedgerBudgets:
    """Budgets checked against the ledger's counts (without Redis, or while it is unreachable)."""

    def __init__(self, ledger):
        self._ledger = ledger
        self.tokens_used = ledger.tokens_used  # (period id, subject) -> tokens: also Redis's seed for a missing counter

    def first_used_up(self, budgets) -> Budget | None:
        used = self._ledger.tokens_used
        for budget in budgets:
            if used(budget.period_id, budget.subject) >= budget.limit:
                return budget
        return None
