"""Routing strategies: for one request, the order a model's backends are tried in.

`[[models]] strategy` picks one per model; `Attempts` (failover.py) then tries the order it is
given, so failover works the same under every strategy.

- `ordered`: the config's list, always (the primary first; the others only on failover).
- `round_robin`: smooth weighted round robin (nginx's): each backend gets its `weight`'s share of
  the requests, interleaved (weights 2:1:1 give a b c a a b c a, never a a b c). Per worker.
- `least_busy`: the backend with the fewest requests in flight relative to its capacity × weight:
  `max_concurrency` and this worker's count, or with `global_max_concurrency` (Redis) the count
  across every instance, read in the background (limits/leases.py, `LeaseCount`: at most ~0.5 s
  old, corrected at once for this worker's own requests). Ties are broken by weighted round robin.
- `affinity`: the same conversation goes to the same backend while requests don't skip it, so its
  prefix (KV) cache is reused. The key is Open WebUI's chat id, else the user, else the system
  message(s) and first user message (which don't change from turn to turn); it is hashed at
  once and never kept. Weighted rendezvous hashing: each backend scores the key, the highest
  first; losing a backend moves only its own conversations (to their second choice), and they
  come back when it does. A request with no key at all goes round robin.

A strategy chooses among the backends requests don't skip now (circuit breaker, failing health
probes: `CircuitBreaker.skips`); when every one is skipped it chooses among all, and `Attempts`
gives each one's reason. After its choice come the others (the config's order from the choice on;
for `affinity`, its ranking), for failover.

Choosing costs microseconds (with three backends on this project's machine: 0.2 for `ordered`,
0.8 for `round_robin`, 1.6 for `least_busy`, 6 for `affinity`, 11 when its key is a 2 KB
conversation start): no I/O, and the orders of
`ordered`, `round_robin` and `least_busy` are built once, a request only picks one. Under
threads (other WSGI servers) two requests may pick at once; the running scores may then be off
by one for a moment, never the order a request gets.
"""

import hashlib
import math

from ..upstream.conversation import text_of

_MASK = (1 << 64) - 1
_UNIT = 2.0 ** -53


class Ordered:
    name = "ordered"

    def __init__(self, backends: list):
        self.backends = tuple(backends)

    def route(self, asker: dict, body: dict) -> tuple:
        """(the backends in the order to try them, what the choice was keyed on: None here)."""
        return self.backends, None


class RoundRobin(Ordered):
    name = "round_robin"

    def __init__(self, backends: list):
        super().__init__(backends)
        self.weights = [backend.config.weight for backend in backends]
        self.breakers = [backend.breaker for backend in backends]
        self.current = [0] * len(backends)  # smooth weighted round robin's running scores
        self.indices = tuple(range(len(backends)))
        # The order starting at each backend, built once: a request only picks one.
        self.rotations = tuple(self.backends[i:] + self.backends[:i] for i in self.indices)

    def route(self, asker: dict, body: dict) -> tuple:
        return self.rotations[self.pick(self.indices)], None

    def pick(self, among) -> int:
        """The index of the next backend among `among` (indices: all, or least_busy's ties),
        leaving out those requests skip now, unless every one is skipped."""
        current, weights, breakers = self.current, self.weights, self.breakers
        best, total = -1, 0
        for i in among:
            breaker = breakers[i]
            if (breaker.cooling_until or breaker.probe_failing is not None) and breaker.skips():
                continue
            current[i] += weights[i]
            total += weights[i]
            if best < 0 or current[i] > current[best]:
                best = i
        if best < 0:  # every one is skipped: choose as if none were (Attempts says why each is skipped)
            for i in among:
                current[i] += weights[i]
                total += weights[i]
                if best < 0 or current[i] > current[best]:
                    best = i
        current[best] -= total
        return best


class LeastBusy(RoundRobin):
    name = "least_busy"

    def route(self, asker: dict, body: dict) -> tuple:
        return self.rotations[self.pick_least_busy()], None

    def pick_least_busy(self) -> int:
        backends, weights, breakers = self.backends, self.weights, self.breakers
        lowest, ties = None, []
        for i in self.indices:
            breaker = breakers[i]
            if (breaker.cooling_until or breaker.probe_failing is not None) and breaker.skips():
                continue
            load = busy(backends[i]) / weights[i]
            if lowest is None or load < lowest:
                lowest, ties = load, []
            if load == lowest:
                ties.append(i)
        if not ties:
            return self.pick(self.indices)  # every one skipped: round robin over all, Attempts says why
        return ties[0] if len(ties) == 1 else self.pick(ties)


def busy(backend) -> float:
    """The part of its capacity in use: across every instance with global_max_concurrency and its
    count from Redis (refreshed in the background, plus this worker's changes since), else this
    worker's requests in flight over max_concurrency."""
    slots = backend.global_slots
    if slots is not None and slots.counted is not None:
        return max(0, slots.counted + backend.in_flight - slots.here_at_count) / slots.limit
    return backend.in_flight / backend.config.max_concurrency


class Affinity(Ordered):
    name = "affinity"

    def __init__(self, backends: list):
        super().__init__(backends)
        self.weights = [backend.config.weight for backend in backends]
        self.seeds = [_digest(backend.name.encode("utf-8")) for backend in backends]
        self.without_key = RoundRobin(backends)

    def route(self, asker: dict, body: dict) -> tuple:
        key, kind = affinity_key(asker, body)
        if key is None:
            return self.without_key.route(asker, body)[0], kind
        return self.ranking(_digest(key)), kind

    def ranking(self, digest: int) -> tuple:
        """The backends by their weighted rendezvous score for `digest`, highest first; those
        requests skip now go last (in the same ranking), so the first is the best one available."""
        scores = [_score(digest ^ seed, weight) for seed, weight in zip(self.seeds, self.weights)]
        order = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)
        backends = self.backends
        ranked = [backends[i] for i in order]
        if ranked[0].breaker.skips():
            ranked = [b for b in ranked if not b.breaker.skips()] + [b for b in ranked if b.breaker.skips()]
        return tuple(ranked)


def affinity_key(asker: dict, body: dict) -> tuple:
    """(bytes to hash, which key it is): Open WebUI's chat id, else the user ({user.id}, else
    {user.email}, else the body's `user`), else the conversation's start; (None, "none") without any."""
    chat = asker.get("chat_id")
    if chat:
        return b"chat\0" + _bytes(chat), "chat"
    user_id, email = asker.get("user.id"), asker.get("user.email")
    from_body = getattr(asker, "sources", {}).get("user.id") == "user"  # identity.py: the body's `user`
    user = email if email and (from_body or not user_id) else user_id
    if user:
        return b"user\0" + _bytes(user), "user"
    start = conversation_start(body.get("messages"))
    if start:
        return b"conversation\0" + _bytes(start), "conversation"
    return None, "none"


def conversation_start(messages) -> str:
    """The system message(s) and the first user message, as text: what stays the same turn after turn."""
    parts = []
    for message in messages if isinstance(messages, list) else ():
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            parts.append(text_of(message.get("content")))
        elif role == "user":
            parts.append(text_of(message.get("content")))
            break
    return "\x1e".join(parts)


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _digest(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _score(x: int, weight: float) -> float:
    """Weighted rendezvous score of a mixed key: weight / -ln(u), u uniform in (0, 1) from
    splitmix64's finaliser, so each backend wins a key with probability weight / sum of weights."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    x ^= x >> 31
    return weight / -math.log(((x >> 11) + 0.5) * _UNIT)


STRATEGIES = {cls.name: cls for cls in (Ordered, RoundRobin, LeastBusy, Affinity)}


def strategy_for(name: str, backends: list):
    """The routing of one model: `name` is its `strategy` (checked by config.py)."""
    return STRATEGIES[name](backends)
