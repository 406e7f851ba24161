"""The interface every backend implements, in the gateway's own terms (no HTTP in it).

A backend answers a call in one of two ways: `complete` (one whole `chat.completion`) or
`stream` (its own events, relayed); `embed` answers an Embeddings call. `events` decides once which of the two a streamed answer
uses, so the stream machinery sees only payloads.
"""

from ..chat.chunks import UsageNote, completion_chunks
from ..config import BackendConfig
from ..errors import GatewayBusy
from .breaker import CircuitBreaker
from ..upstream.call import UpstreamCall


class Slot:
    """One of a backend's `max_concurrency` places, held while a request to it is in flight
    (with its `global_max_concurrency` lease, when it has one: gateway/limits/leases.py)."""

    __slots__ = ("_backend", "_lease")

    def __init__(self, backend, lease=None):
        self._backend = backend
        self._lease = lease

    def release(self) -> None:
        """Idempotent: a stream releases from whichever of its two cleanup paths runs first."""
        backend, self._backend = self._backend, None
        if backend is not None:
            backend._slot_freed()
            if self._lease is not None:  # the global slot (gateway/limits): one ZREM
                self._lease.release()


def _ignore(change: int) -> None:
    pass


class Backend:
    """A place chat requests go. Failures are raised as `errors.BackendError`s."""

    def __init__(self, config: BackendConfig, on_slot_change=None, on_cooldown=None):
        self.config = config
        self.name = config.name
        # Per worker; greenlets of one process never run at the same time, so no lock is needed.
        self.in_flight = 0
        # Told +1 / -1 as slots are taken and freed (the registry passes the in-flight metric).
        self._on_slot_change = on_slot_change or _ignore
        # `on_cooldown(until)`: told when the breaker opens or closes (the registry passes a metric).
        self.breaker = CircuitBreaker(config.name, config.failure_threshold, config.cooldown_seconds, on_cooldown)
        # With `global_max_concurrency`: its gateway/limits GlobalSlots, set by limits/web.py.
        self.global_slots = None

    def acquire(self) -> Slot:
        """A slot for one request, or GatewayBusy (429) when `max_concurrency` are in flight.
        With `global_max_concurrency`, also a lease across all instances (429 GlobalBusy when they
        are all in use, 503 LimitsUnavailable when Redis is away and redis_failure = "closed")."""
        if self.in_flight >= self.config.max_concurrency:
            busy = GatewayBusy(
                f"The gateway is already running {self.config.max_concurrency} requests for backend '{self.name}' "
                "(max_concurrency); retry shortly.",
                headers={"Retry-After": "1"},
            )
            busy.reason = f"has no free slot ({self.config.max_concurrency} in flight, max_concurrency)"
            raise busy
        self.in_flight += 1  # taken before the global slot, which waits on Redis
        lease = None
        if self.global_slots is not None:
            try:
                lease = self.global_slots.take()
            except BaseException:
                self.in_flight -= 1
                raise
        self._on_slot_change(1)
        return Slot(self, lease)

    def _slot_freed(self) -> None:
        self.in_flight -= 1
        self._on_slot_change(-1)

    @property
    def streaming(self) -> bool:
        return self.config.streaming

    def events(self, call: UpstreamCall):
        """The `chat.completion.chunk` payloads (JSON bytes) of a streamed answer: the backend's
        own events when it was asked to stream, else chunks built from its whole answer.
        Nothing is called until the first payload is asked for. A built answer's usage comes
        first as a `UsageNote` (not sent) when the client did not ask for a usage chunk."""
        if call.streams:
            yield from self.stream(call)
        else:
            completion = self.complete(call)
            if not call.include_usage and completion.get("usage"):
                yield UsageNote(completion["usage"])
            yield from completion_chunks(completion, call.include_usage)

    def complete(self, call: UpstreamCall) -> dict:
        """The backend's whole answer as a checked `chat.completion` dict (the call has `stream: false`)."""
        raise NotImplementedError

    def stream(self, call: UpstreamCall):
        """A generator of `chat.completion.chunk` payloads (JSON bytes, `[DONE]` not included).

        It ends normally only when the backend finished its answer; a stream that stops short
        raises. Closing the generator closes the backend request.
        """
        raise NotImplementedError

    def embed(self, call) -> dict:
        """The backend's Embeddings answer for an `upstream.embeddings.EmbeddingsCall`, checked and
        in the form the client asked for. Only backends with `embeddings_url` get such calls."""
        raise NotImplementedError

    def probe(self, headers: dict) -> str | None:
        """One health probe of `health_url` (backends/health.py): None when it passes, else why
        not. Only backends with `health_url` (never the demo one: config.py) are probed."""
        raise NotImplementedError

    def close(self) -> None:
        """Releases pooled connections (worker shutdown, tests)."""
