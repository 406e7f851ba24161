"""The soak's traffic: who asks what, with which injected fault, and the gateway config it runs on.

Each simulated user asks one thing at a time (`pick`): mostly chat streams from the backend that
streams (`chat`), non-streaming chats, built streams from the backend that does not stream
(`corp`), embeddings (`embed`) and a failover model whose first backend refuses every connection
(`chat-failover`). About 5 % of requests carry an injected fault, decided here, by the client,
and written into the body's `x_soak` plan, which the test backend (bench/backend.py) obeys; so
the soak knows for each request which answer or which error is right (bench/harness/verdicts.py).
About 5 % of the fault-free streams are left by their client after a few events.

Faults: `5xx` (the backend answers 500), `drop` (it closes the connection halfway through its
answer), `stall` (silent past read_timeout), `slow` (first byte after 2.5 s: keep-alives, then a
full answer) and `refused` (model `gone`: nothing listens on its backend's port).

429s happen on purpose: backend `fast` takes fewer requests at once across the cluster
(`global_max_concurrency`) than the light users sometimes send it, and a few heavy users (scripts
that barely pause, and retry a second after a 429) go past `[limits]`' requests per minute, which
light users, pausing between requests, stay far under.
"""

import dataclasses
import json

HEARTBEAT = 1  # heartbeat_seconds: keep-alives while a backend thinks
READ_TIMEOUT = 10  # both backends' read_timeout: above the longest silence but a stall's, with room to spare
SLOW_MS = 2500  # fault `slow`: the first byte after this (past a heartbeat, within read_timeout)
STALL_MS = 12000  # fault `stall`: silent past read_timeout, then the backend closes
REQUESTS_PER_MINUTE = 40  # [limits] per user
# Backend fast's global_max_concurrency, per light user: a little above what they keep in flight
# there on average (about 0.77 each, measured), so at times more.
FAST_GLOBAL_PER_USER = 0.82
MAX_CONCURRENCY = 120  # per worker, every backend: what holds while Redis is away
WORDS_EVERY_MS = 150  # `chat`'s pace when it streams: a word every 150 ms, 10 to 60 words (1.5 to 9 s)
THINK_EVERY_MS = 60  # the time per word before a non-streamed answer: at most 3.6 s of silence (6.1 s when slow)

FAULT_SHARE = 0.05
LEAVE_SHARE = 0.05
CHAT_FAULTS = ("5xx", "drop", "stall", "slow", "refused")
EMBEDDINGS_FAULTS = ("5xx", "drop", "stall", "slow")

LIGHT_THINK = (0.2, 1.0)  # seconds a light user pauses between requests
HEAVY_THINK = 0.1
HEAVY_RETRY = 1.0  # a heavy user waits this long after a 429, whatever Retry-After said


@dataclasses.dataclass(frozen=True)
class Ask:
    """One request of one user, and what its backend is told to do."""

    user: str
    heavy: bool
    model: str  # chat | chat-failover | corp | embed | gone
    stream: bool = False
    include_usage: bool = False
    size: int = 1  # words of the answer (chat), or inputs (embeddings)
    every_ms: int = 0  # the backend's time per word (a non-streamed answer takes size * every_ms)
    fault: str | None = None  # None or one of CHAT_FAULTS / EMBEDDINGS_FAULTS
    leave_after: int | None = None  # the client hangs up after this many stream items

    @property
    def embeddings(self) -> bool:
        return self.model == "embed"

    @property
    def path(self) -> str:
        return "/v1/embeddings" if self.embeddings else "/v1/chat/completions"

    @property
    def shape(self) -> str:
        """What kind of request this is, for the table of unexpected outcomes."""
        if self.embeddings:
            return "embed"
        return f"{self.model} {'stream' if self.stream else 'non-stream'}"

    def plan(self) -> dict:
        """The backend's instructions (bench/backend.py, `x_soak`)."""
        first, fault = 0, None
        if self.fault == "slow":
            first = SLOW_MS
        elif self.fault == "stall":
            first, fault = STALL_MS, "silent"
        elif self.fault in ("5xx", "drop"):
            fault = self.fault
        return {"events": self.size, "every_ms": self.every_ms, "first_ms": first, "fault": fault}

    def body(self) -> bytes:
        if self.embeddings:
            body = {"model": self.model, "input": [f"text {i}" for i in range(self.size)]}
        else:
            body = {"model": self.model, "messages": [{"role": "user", "content": "Say a few words."}], "stream": self.stream}
            if self.include_usage:
                body["stream_options"] = {"include_usage": True}
        body["x_soak"] = self.plan()
        return json.dumps(body).encode()

    def headers(self) -> dict:
        return {"X-OpenWebUI-User-Id": self.user}

    def describe(self) -> str:
        parts = [self.user, self.shape, f"{self.size} {'inputs' if self.embeddings else 'words'}"]
        if self.include_usage:
            parts.append("include_usage")
        if self.fault:
            parts.append(f"fault {self.fault}")
        if self.leave_after:
            parts.append(f"leaves after {self.leave_after} items")
        return ", ".join(parts)


def pick(rng, user: str, heavy: bool) -> Ask:
    """What `user` asks next."""
    if heavy:
        return Ask(user, True, "chat", size=1)  # a script: short non-streamed chats, back to back
    r = rng.random()
    if r < 0.15:
        ask = Ask(user, False, "embed", size=rng.randint(1, 16))
    elif r < 0.30:
        ask = Ask(user, False, "corp", stream=r < 0.25, size=rng.randint(5, 30), every_ms=100)  # 0.5 to 3 s of thinking
    elif r < 0.32:
        stream = rng.random() < 0.5
        ask = Ask(user, False, "chat-failover", stream=stream, size=rng.randint(10, 60), every_ms=WORDS_EVERY_MS if stream else THINK_EVERY_MS)
    else:
        stream = r < 0.85
        ask = Ask(user, False, "chat", stream=stream, size=rng.randint(10, 60), every_ms=WORDS_EVERY_MS if stream else THINK_EVERY_MS)
    if ask.stream:
        ask = dataclasses.replace(ask, include_usage=rng.random() < 0.5)
    if ask.model != "chat-failover" and rng.random() < FAULT_SHARE:
        fault = rng.choice(EMBEDDINGS_FAULTS if ask.embeddings else CHAT_FAULTS)
        return dataclasses.replace(ask, fault=fault, model="gone" if fault == "refused" else ask.model)
    if ask.stream and rng.random() < LEAVE_SHARE:
        return dataclasses.replace(ask, leave_after=rng.randint(1, max(1, ask.size // 2)))
    return ask


def think_seconds(rng, ask: Ask, answer_status: int, retry_after) -> float:
    """How long the user pauses before its next request."""
    if answer_status == 429:
        if ask.heavy:
            return HEAVY_RETRY
        try:
            return min(float(retry_after), 10.0)
        except (TypeError, ValueError):
            return 1.0
    return HEAVY_THINK if ask.heavy else rng.uniform(*LIGHT_THINK)


def soak_config(fast_url: str, corp_url: str, gone_url: str, redis_url: str, users: int) -> str:
    """The gateway config both instances run: the models `pick` asks for, limits set to refuse some
    of what `users` light users ask."""
    return f"""
[gateway]
heartbeat_seconds = {HEARTBEAT}
redis_url = "{redis_url}"
redis_failure = "open"

[backends.fast]
url = "{fast_url}/v1/chat/completions"
streaming = true
read_timeout = {READ_TIMEOUT}
max_concurrency = {MAX_CONCURRENCY}
global_max_concurrency = {round(users * FAST_GLOBAL_PER_USER)}

[backends.corp]
url = "{corp_url}/v1/chat/completions"
embeddings_url = "{corp_url}/v1/embeddings"
streaming = false
read_timeout = {READ_TIMEOUT}
max_concurrency = {MAX_CONCURRENCY}
global_max_concurrency = 1000

[backends.gone]
url = "{gone_url}/v1/chat/completions"
connect_timeout = 1
max_concurrency = {MAX_CONCURRENCY}
global_max_concurrency = 1000

[[models]]
id = "chat"
backend = "fast"
upstream = "soak"

[[models]]
id = "chat-failover"
backends = ["gone", "fast"]
upstream = "soak"

[[models]]
id = "corp"
backend = "corp"
upstream = "soak"

[[models]]
id = "embed"
backend = "corp"
kind = "embeddings"
upstream = "soak"

[[models]]
id = "gone"
backend = "gone"

[limits]
per_user_requests_per_minute = {REQUESTS_PER_MINUTE}
# counted after every answer (one script each), never reached
per_user_tokens_per_minute = 100000000
"""
