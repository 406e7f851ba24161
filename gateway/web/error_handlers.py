"""The one place a failure becomes a response: OpenAI's error shape, the right status, redacted.

Flask's own HTTP errors (404, 405, 413) are answered in the same shape, and anything unexpected
is logged with its traceback and answered as a 500 naming the request id, never the traceback.
"""

import logging
import socket

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from ..config import Config
from ..errors import GatewayError, InternalError, MethodNotAllowed, NotFound, error_json

log = logging.getLogger("gateway")


def _end_connection(client_socket):
    """After the answer: no further request on a connection whose body was left unread (the
    server would otherwise wait for, and discard, the rest of it first)."""

    def shut_reading():
        if client_socket is not None:
            try:
                client_socket.shutdown(socket.SHUT_RD)
            except OSError:
                pass  # already gone

    return shut_reading


def init_app(app: Flask, config: Config) -> None:
    def answer(error: GatewayError) -> Response:
        if "record" in g:
            g.record.failed(error)
        response = Response(error_json(error, config.secrets), status=error.status, mimetype="application/json")
        response.headers.update(error.headers)
        if getattr(error, "answered", False):  # a backend's own answer, passed on (a 4xx, a 5xx...)
            response.headers["X-Gateway-Backend"] = error.backend
        if error.closes_connection:
            response.call_on_close(_end_connection(request.environ.get("gunicorn.socket")))
        return response

    @app.errorhandler(GatewayError)
    def gateway_error(error):
        return answer(error)

    @app.errorhandler(HTTPException)
    def http_error(error):
        if error.code == 405:
            return answer(MethodNotAllowed(f"Invalid request: {request.method} is not allowed on {request.path}."))
        if error.code == 404:
            return answer(NotFound(f"Invalid request: there is nothing at {request.path}; the API is at /v1/chat/completions, /v1/responses, /v1/embeddings and /v1/models."))
        generic = GatewayError(f"Invalid request: {error.description}")
        generic.status, generic.type, generic.kind = error.code or 400, "invalid_request_error", "invalid_request"
        return answer(generic)

    @app.errorhandler(Exception)
    def unexpected(error):
        request_id = g.get("request_id", "")
        log.exception("unexpected failure in request %s", request_id)
        return answer(InternalError(f"The gateway failed unexpectedly (request id {request_id}); its log has the details."))
