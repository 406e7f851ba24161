"""What views answer with: JSON and SSE responses, a backend's whole answer or its stream, and the
registry of this worker's models."""

from flask import Response, current_app, request

from ..concurrency import LARGE_BYTES, run_if_large
from ..jsonio import dismantle, dumps, dumps_in_pieces
from ..registry import ModelRegistry
from ..streaming.chat_stream import ChatStream
from ..streaming.client_watch import ClientLeft, abandoned_if_client_leaves
from ..streaming.framing import CHAT
from ..telemetry.record import CLIENT_GONE

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def registry() -> ModelRegistry:
    return current_app.extensions["registry"]


def json_response(data, status=200, size_hint: int = 0) -> Response:
    """`size_hint`: about how many bytes `data` makes; a large answer is written off the event
    loop, in pieces (jsonio.py), and sent piece by piece, so no stream of the worker waits for it.
    A large `data` is dismantled as it is written (the caller must not need it afterwards): freed
    at once later, on the loop, its objects would stall the worker too."""
    if size_hint <= LARGE_BYTES:
        return Response(dumps(data), status=status, mimetype="application/json")
    pieces = run_if_large(size_hint, _written_and_dismantled, data)
    response = Response(pieces, status=status, mimetype="application/json")
    response.content_length = sum(map(len, pieces))
    return response


def _written_and_dismantled(data) -> list:
    pieces = dumps_in_pieces(data)
    dismantle(data)
    return pieces


def answered_by(response: Response, attempts) -> Response:
    """Names the backend whose answer this is. When a keep-alive went out first it is not known
    yet, unless the model has one backend: the only one that can answer (Open WebUI's chats with a
    backend that thinks longer than a heartbeat, the usual case, get the header too)."""
    backend = attempts.answered_by or attempts.only_backend
    if backend is not None:
        response.headers["X-Gateway-Backend"] = backend.name
    return response


def sse_response(stream) -> Response:
    """A streamed response for a started `ChatStream`; closing it stops the stream."""
    response = Response(stream.body(), mimetype="text/event-stream", headers=SSE_HEADERS)
    response.call_on_close(stream.close)  # a body that never started does not run its `finally`
    return response


def whole_answer(attempts, record) -> dict | None:
    """The first whole answer of the attempts (`stream: false`), its usage noted; None when the
    client left meanwhile. Open WebUI's title and tag tasks are such calls: when their client
    leaves, the backend request is closed at once instead of computing an answer nobody reads."""
    try:
        with abandoned_if_client_leaves(request.environ.get("gunicorn.socket")):
            completion = attempts.complete()
    except ClientLeft:
        record.outcome = CLIENT_GONE
        return None
    record.note_usage(completion.get("usage"))
    return completion


def nobody_reads() -> Response:
    """The answer to a client that left: the server's write of it fails quietly."""
    return Response(status=499)


def started_stream(attempts, record, framing=CHAT) -> ChatStream:
    """The attempts' stream, started: it has its first event or heartbeat, so a failure known by
    then is still raised here (a real HTTP status)."""
    settings = registry().settings
    stream = ChatStream(
        attempts.events(),
        heartbeat=settings.heartbeat_seconds,
        record=record,
        secrets=registry().config.secrets,
        client_socket=request.environ.get("gunicorn.socket"),
        stalled_after=settings.stalled_client_seconds,
        framing=framing,
    )
    stream.start()
    return stream
