"""The interface every backend implements, in the gateway's own terms (no HTTP in it)."""

from ..config import BackendConfig
from ..errors import GatewayBusy
from ..forwarding import UpstreamCall
from ..metrics import in_flight_gauge


class Slot:
    """One of a backend's `max_concurrency` places, held while a request to it is in flight."""

    __slots__ = ("_backend",)

    def __init__(self, backend):
        self._backend = backend

    def release(self) -> None:
        """Idempotent: a stream releases from whichever of its two cleanup paths runs first."""
        if self._backend is not None:
            self._backend.in_flight -= 1
            self._backend.in_flight_gauge.dec()
            self._backend = None


class Backend:
    """A place chat requests go. Failures are raised as `errors.BackendError`, translated once here."""

    def __init__(self, config: BackendConfig):
        self.config = config
        self.name = config.name
        # Per worker; greenlets of one process never run at the same time, so no lock is needed.
        self.in_flight = 0
        self.in_flight_gauge = in_flight_gauge(config.name)  # the same count, summed over workers

    def acquire(self) -> Slot:
        """A slot for one request, or GatewayBusy (429) when `max_concurrency` are in flight."""
        if self.in_flight >= self.config.max_concurrency:
            raise GatewayBusy(
                f"The gateway is already running {self.config.max_concurrency} requests for backend '{self.name}' "
                "(max_concurrency); retry shortly.",
                headers={"Retry-After": "1"},
            )
        self.in_flight += 1
        self.in_flight_gauge.inc()
        return Slot(self)

    @property
    def streaming(self) -> bool:
        return self.config.streaming

    def complete(self, call: UpstreamCall) -> dict:
        """The backend's whole answer as a checked `chat.completion` dict (the call has `stream: false`)."""
        raise NotImplementedError

    def stream(self, call: UpstreamCall):
        """A generator of `chat.completion.chunk` payloads (JSON bytes, `[DONE]` not included).

        It ends normally only when the backend finished its answer; a stream that stops short
        raises. Closing the generator closes the backend request.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Releases pooled connections (worker shutdown, tests)."""
