"""What views answer with: JSON and SSE responses, and the registry of this worker's models."""

from flask import Response, current_app

from ..jsonio import dumps
from ..registry import ModelRegistry

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def registry() -> ModelRegistry:
    return current_app.extensions["registry"]


def json_response(data, status=200) -> Response:
    return Response(dumps(data), status=status, mimetype="application/json")


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
