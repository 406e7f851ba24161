"""[limits] held by one worker alone: `LocalWindows`, the same rules as the Redis scripts.

Used without `redis_url` (then the status page says the limits hold per worker), and with
`redis_failure = "open"` while Redis is unreachable. Per user: the times of admitted requests and
the tokens of finished answers over the last 60 s, trimmed as they are read.
"""

import collections
import math
import threading
import time

WINDOW_SECONDS = 60.0
_SWEEP_EVERY = 1000  # admissions between sweeps that forget users with nothing left in their window


class _Window:
    __slots__ = ("requests", "tokens", "token_sum")

    def __init__(self):
        self.requests = collections.deque()  # (when, request id), oldest first
        self.tokens = collections.deque()  # (when, tokens), oldest first
        self.token_sum = 0

    def trim(self, since: float) -> None:
        requests, tokens = self.requests, self.tokens
        while requests and requests[0][0] <= since:
            requests.popleft()
        while tokens and tokens[0][0] <= since:
            self.token_sum -= tokens.popleft()[1]


class LocalWindows:
    def __init__(self, settings, clock=time.monotonic):
        self.request_limit = settings.per_user_requests_per_minute
        self.token_limit = settings.per_user_tokens_per_minute
        self._clock = clock
        self._users = {}
        self._lock = threading.Lock()  # greenlets never need it; gthread or sync servers do
        self._admitted = 0

    def admit(self, user: str, request_id: str, request_limit=None, token_limit=None):
        """(None, 0) when admitted (and counted), else ("requests" | "tokens", whole seconds until
        the window frees). The limits are the settings' unless given (a per-user exception)."""
        request_limit = self.request_limit if request_limit is None else request_limit
        token_limit = self.token_limit if token_limit is None else token_limit
        with self._lock:
            now = self._clock()
            since = now - WINDOW_SECONDS
            window = self._users.get(user)
            if window is None:
                window = self._users[user] = _Window()
            window.trim(since)
            if request_limit and len(window.requests) >= request_limit:
                frees = window.requests[len(window.requests) - request_limit][0] + WINDOW_SECONDS
                return "requests", _seconds(frees - now)
            if token_limit and window.token_sum >= token_limit:
                left = window.token_sum
                for when, tokens in window.tokens:
                    left -= tokens
                    if left < token_limit:
                        return "tokens", _seconds(when + WINDOW_SECONDS - now)
            if request_limit:
                window.requests.append((now, request_id))
            self._admitted += 1
            if self._admitted % _SWEEP_EVERY == 0:
                self._sweep(since)
            return None, 0

    def cancel(self, user: str, request_id: str) -> None:
        """The request was refused after all (no backend slot): it does not count."""
        with self._lock:
            window = self._users.get(user)
            if window is not None:
                for entry in reversed(window.requests):
                    if entry[1] == request_id:
                        window.requests.remove(entry)
                        break

    def count_tokens(self, user: str, tokens: int) -> None:
        with self._lock:
            window = self._users.get(user)
            if window is None:
                window = self._users[user] = _Window()
            window.tokens.append((self._clock(), tokens))
            window.token_sum += tokens

    def _sweep(self, since: float) -> None:
        for user, window in list(self._users.items()):
            window.trim(since)
            if not window.requests and not window.tokens:
                del self._users[user]


def _seconds(delay: float) -> int:
    """Retry-After: whole seconds, at least 1."""
    return max(1, math.ceil(delay))
