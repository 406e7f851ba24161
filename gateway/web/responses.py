"""What views answer with: JSON and SSE responses, and the registry of this worker's models."""

from flask import Response, current_app

from ..concurrency import LARGE_BYTES, run_if_large
from ..jsonio import dumps, dumps_in_pieces
from ..registry import ModelRegistry

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def registry() -> ModelRegistry:
    return current_app.extensions["registry"]


def json_response(data, status=200, size_hint: int = 0) -> Response:
    """`size_hint`: about how many bytes `data` makes; a large answer is written off the event
    loop, in pieces (jsonio.py), and sent piece by piece, so no stream of the worker waits for it."""
    if size_hint <= LARGE_BYTES:
        return Response(dumps(data), status=status, mimetype="application/json")
    pieces = run_if_large(size_hint, dumps_in_pieces, data)
    response = Response(pieces, status=status, mimetype="application/json")
    response.content_length = sum(map(len, pieces))
    return response


def answered_by(response: Response, attempts) -> Response:
    """Names the backend whose answer this is (unknown yet when a keep-alive went out first)."""
    if attempts.answered_by is not None:
        response.headers["X-Gateway-Backend"] = attempts.answered_by.name
    return response


def sse_response(stream) -> Response:
    """A streamed response for a started `ChatStream`; closing it stops the stream."""
    response = Response(stream.body(), mimetype="text/event-stream", headers=SSE_HEADERS)
    response.call_on_close(stream.close)  # a body that never started does not run its `finally`
    return response
