"""What happened to each request: one record per request, written as one JSON access-log line.

The record is filled along the way (the view names the model and backend, the stream body notes
its first byte, usage and how it ended) and finished once, when the server closes the response,
which for a stream is after its last byte or when the client went away. No message content and
no header values ever go in: only ids, names, numbers and outcomes.
"""

import json
import logging
import os
import time

import orjson

from ..chat.chunks import HAS_USAGE
from ..config import ConfigError
from ..errors import AllBackendsFailed, BackendError, BackendTimeout, GatewayError, InternalError, ShuttingDown


class AccessLog:
    """Where the access-log lines go: stderr, or a file opened for appending. Each line goes out in
    one write of its own, at once: none waits in a buffer when a worker dies, and lines of several
    workers do not mix (a file opened for appending takes each write whole; a pipe, each of up to
    4 KiB, which every line fits: LINE_LIMIT below). Not through `logging`: under gevent, its
    record, its lookup of the caller and its handler's lock took ~30 µs a request, more than the
    rest of the line."""

    def __init__(self):
        self.fd = None  # opened once per process (setup_access_log); stderr until then
        self.path = None  # the file's, when it is one
        self._failing = False

    def open(self, destination: str) -> None:
        """`-`: stderr; anything else: a file path, appended to (created as `open(path, "a")`
        would). A path that cannot be opened stops start-up with one message (the app factory's
        ConfigError), not a traceback."""
        self.fd = 2 if destination == "-" else _appending(destination)
        self.path = None if destination == "-" else destination

    def reopen(self) -> None:
        """The file opened anew (after logrotate moved it: SIGUSR1, as gunicorn reopens its own
        logs), onto the same descriptor: every writer goes on, into the new file."""
        if self.path is None:
            return
        try:
            fresh = _appending(self.path)
        except ConfigError as exc:
            logging.getLogger("gateway").error("the access log was not reopened, it goes on in the old file: %s", exc)
            return
        os.dup2(fresh, self.fd)
        os.close(fresh)

    def write(self, line: bytes) -> None:
        """One line (ASCII JSON, no newline), written whole with its newline."""
        data = line + b"\n"
        fd = 2 if self.fd is None else self.fd
        try:
            while data:  # a signal may cut a write short
                data = data[os.write(fd, data):]
            self._failing = False
        except OSError as exc:  # a full disk, a closed stderr: the request is not failed for it
            if not self._failing:
                self._failing = True
                logging.getLogger("gateway").error("the access log cannot be written (%s): lines are lost until it can", exc.strerror or exc)


access_log = AccessLog()


COMPLETED = "completed"
CLIENT_GONE = "client_gone"
BACKEND_ERROR = "backend_error"
TIMEOUT = "timeout"
REJECTED = "rejected"  # the client's request was refused before any backend was called
INTERNAL_ERROR = "internal_error"
SHUTTING_DOWN = "shutting_down"  # a stream the worker ended as its graceful timeout ran out


def setup_access_log() -> None:
    """One JSON object per line: on stderr, or appended to the file GATEWAY_ACCESS_LOG names
    (opened once per process)."""
    if access_log.fd is None:
        access_log.open(os.environ.get("GATEWAY_ACCESS_LOG") or "-")


def _appending(path: str) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise ConfigError(f"GATEWAY_ACCESS_LOG: cannot open {path} for appending: {exc.strerror or exc}") from None


# The last whole second `timestamp` wrote, with its text (most lines share it): one tuple, replaced
# whole, so that threads (another WSGI server) never see one second's number with another's text.
_last_second = (None, "")


def timestamp(wall_time: float) -> str:
    """ISO-8601 UTC with milliseconds and Z: 2026-11-26T10:21:52.123Z."""
    global _last_second
    seconds, millis = divmod(int(wall_time * 1000), 1000)  # one rounding for both parts
    second = _last_second
    if second[0] != seconds:
        second = _last_second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{second[1]}.{millis:03d}Z"


def outcome_of(error: GatewayError) -> str:
    if isinstance(error, BackendTimeout):
        return TIMEOUT
    if isinstance(error, AllBackendsFailed):  # failover: the backends' failure, unless none was called
        if not error.backends_failed:
            return REJECTED
        return TIMEOUT if error.status == 504 else BACKEND_ERROR
    if isinstance(error, BackendError):
        return BACKEND_ERROR
    if isinstance(error, InternalError):
        return INTERNAL_ERROR
    if isinstance(error, ShuttingDown):
        return SHUTTING_DOWN
    return REJECTED


class RequestRecord:
    __slots__ = (
        "request_id", "method", "path", "started", "started_at", "model", "backend", "stream", "status",
        "first_byte", "finished", "outcome", "error", "usage", "keepalives", "counted", "attempts", "upstream_of",
        "endpoint", "dropped_tools", "ignored_fields", "unknown_fields", "key", "user",
        "route",
    )

    def __init__(self, request_id: str, method: str, path: str):
        self.request_id = request_id
        self.method = method
        self.path = path
        self.started = time.monotonic()
        self.started_at = time.time()  # wall clock, for the log line's "ts"; durations use `started`
        self.model = self.backend = self.stream = self.status = None
        self.first_byte = self.finished = self.outcome = self.error = self.usage = None
        self.keepalives = 0
        self.counted = False  # a model request (chat, embeddings, responses): the ones metrics count
        self.attempts = None  # failover.Attempts: which backends were tried, which one answered
        self.upstream_of = None  # the model's upstream_for(backend name): its name at that backend
        self.endpoint = None  # "chat", "embeddings" or "responses": the model requests metrics count
        # The Responses API's translation (names only, never values): hosted tools left out, fields
        # with no chat meaning, and fields this gateway does not know, none of which reached the backend.
        self.dropped_tools = self.ignored_fields = self.unknown_fields = ()
        self.route = None  # a model with several backends: (strategy, the backends in this request's order, its key kind)
        self.key = None  # the named inbound key's NAME ([keys.NAME]); never the key itself
        self.user = None  # who the usage ledger counts this request for (gateway/usage/); not logged

    def mark_first_byte(self) -> None:
        if self.first_byte is None:
            self.first_byte = time.monotonic()

    def failed(self, error: GatewayError) -> None:
        self.outcome = outcome_of(error)
        self.error = error.kind

    def note_payload(self, payload: bytes) -> None:
        """Picks the token counts out of a usage chunk; every other event costs one regex miss."""
        if HAS_USAGE.search(payload):
            try:
                chunk = json.loads(payload)
            except (ValueError, RecursionError):
                return
            if isinstance(chunk, dict):
                self.note_usage(chunk.get("usage"))

    def note_usage(self, usage) -> None:
        if isinstance(usage, dict):
            self.usage = usage

    def finish(self) -> bool:
        """Writes the access-log line; True the first time only (it is called from two places)."""
        if self.finished is not None:
            return False
        now = self.finished = time.monotonic()
        tried = self.attempts.tried if self.attempts is not None else ()
        if tried:
            answered = self.attempts.answered_by
            self.backend = answered.name if answered is not None else tried[-1][0]
        if self.outcome is None:
            # A stream whose body never ran was closed by a client that had already left.
            self.outcome = CLIENT_GONE if self.stream and self.first_byte is None else COMPLETED
        line = {
            "ts": timestamp(self.started_at),
            "request_id": self.request_id,
            "pid": os.getpid(),  # the worker that served it (stored responses, shared state: which one)
            "method": self.method,
            "path": self.path,
            "model": self.model,
            "upstream_model": self.upstream_of(self.backend) if self.upstream_of and self.backend else None,
            "backend": self.backend,
            "status": self.status,
            "stream": self.stream,
            "ttfb_ms": round((self.first_byte - self.started) * 1000, 1) if self.first_byte else None,
            "duration_ms": round((now - self.started) * 1000, 1),
            "outcome": self.outcome,
        }
        if self.key:
            line["key"] = self.key
        if self.error:
            line["error"] = self.error
        if self.usage:
            for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
                if isinstance(self.usage.get(key), int):
                    line[key] = self.usage[key]
        for key in ("dropped_tools", "ignored_fields", "unknown_fields"):
            if getattr(self, key):
                line[key] = list(getattr(self, key))
        if self.route is not None:  # several backends: the strategy and its order for this request
            strategy, order, key = self.route
            line["route"] = strategy
            line["order"] = [backend.name for backend in order]
            if key is not None:
                line["affinity_key"] = key  # which key, never its value
        if len(tried) > 1:  # failover: every attempt, in order
            line["attempts"] = [{"backend": name, "result": result} for name, result in tried]
        access_log.write(_fitted(line))
        return True


# A pipe takes a write of up to PIPE_BUF bytes (4 KiB on Linux) whole; a longer one may be split
# around other workers' lines, and a log shipper then reads two broken records. What a client
# chooses (its path, the names of the fields and hosted tools it sent) is shortened, marked
# `"truncated": true`, so that a line, its newline included, takes at most LINE_LIMIT bytes; a line
# still longer (an operator's hundred backends, a backend's 4,000-digit token count) is written
# with its core fields alone.
LINE_LIMIT = 4096
PATH_LIMIT = 512  # bytes of a path, as written (escaped); no route of ours comes near
NAME_LIMIT = 64  # bytes of a name in a list the client chose (escaped)
NAMES_LIMIT = 16  # names kept of such a list
CLIENT_LISTS = ("dropped_tools", "unknown_fields")  # ignored_fields holds the gateway's own names
CORE_FIELDS = (
    "ts", "request_id", "pid", "method", "path", "model", "upstream_model", "backend", "status", "stream",
    "ttfb_ms", "duration_ms", "outcome", "key", "error", "prompt_tokens", "completion_tokens", "total_tokens",
)
CORE_TEXT_LIMIT = 200  # bytes of each text among the core fields, when only they are written
ESCAPED_AT_MOST = 12  # bytes one character may take escaped: a character beyond the BMP is two \uXXXX


def _encoded(line: dict) -> bytes:
    """The line as JSON in printable ASCII."""
    try:
        data = orjson.dumps(line)  # 2 us, where json.dumps took 8 (25 to 30 in a busy worker)
    except TypeError:  # what orjson does not write: a token count beyond 64 bits, a lone surrogate
        data = None
    if data is None or not data.isascii() or b"\x7f" in data:  # json's way, escaped: lines stay printable ASCII
        data = json.dumps(line, separators=(",", ":")).encode()
    return data


def _clipped(text: str, limit: int) -> str:
    """`text`, or its start followed by "...", taking at most `limit` bytes as JSON (quotes aside).
    A text too short to pass the limit however escaped (our routes' paths) costs one comparison."""
    if len(text) * ESCAPED_AT_MOST <= limit or len(json.dumps(text)) - 2 <= limit:
        return text
    kept = text[:limit]
    while len(json.dumps(kept)) - 2 > limit - 3:
        kept = kept[:len(kept) * 3 // 4]
    return kept + "..."


def _fitted(line: dict) -> bytes:
    """The line, encoded, in at most LINE_LIMIT - 1 bytes (see above)."""
    path = line["path"]
    line["path"] = _clipped(path, PATH_LIMIT)
    if line["path"] is not path:
        line["truncated"] = True
    for key in CLIENT_LISTS:
        names = line.get(key)
        if names is not None:
            kept = [_clipped(name, NAME_LIMIT) if name.__class__ is str else name for name in names[:NAMES_LIMIT]]
            if len(names) > NAMES_LIMIT or any(a is not b for a, b in zip(kept, names)):
                line[key] = kept
                line["truncated"] = True
    data = _encoded(line)
    if len(data) < LINE_LIMIT:
        return data
    core = {}
    for key in CORE_FIELDS:
        if key not in line:
            continue
        value = line[key]
        if value.__class__ is str:
            value = _clipped(value, CORE_TEXT_LIMIT)
        elif value.__class__ is int and not -2 ** 63 <= value < 2 ** 63:
            continue  # a token count no backend really gave
        core[key] = value
    core["truncated"] = True
    return _encoded(core)
