"""The interface every backend implements, in the gateway's own terms (no HTTP in it)."""

from ..config import BackendConfig
from ..forwarding import UpstreamCall


class Backend:
    """A place chat requests go. Failures are raised as `errors.BackendError`, translated once here."""

    def __init__(self, config: BackendConfig):
        self.config = config
        self.name = config.name

    @property
    def streaming(self) -> bool:
        return self.config.streaming

    def complete(self, call: UpstreamCall) -> dict:
        """The backend's whole answer as a checked `chat.completion` dict (`call.stream` is false)."""
        raise NotImplementedError

    def stream(self, call: UpstreamCall):
        """A generator of `chat.completion.chunk` payloads (JSON bytes, `[DONE]` not included).

        It ends normally only when the backend finished its answer; a stream that stops short
        raises. Closing the generator closes the backend request.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Releases pooled connections (worker shutdown, tests)."""
