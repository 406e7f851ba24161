"""The Flask application factory: config, backends, blueprints, and the one error handler."""

import logging
import uuid

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from gateway import metrics
from gateway.config import Config, load_config
from gateway.errors import GatewayError, InternalError, MethodNotAllowed, NotFound, RequestTooLarge, error_json
from gateway.inbound import Cors, KeyCheck
from gateway.observe import RequestRecord, setup_access_log
from gateway.runtime import Gateway

log = logging.getLogger("gateway")


def close_record(record: RequestRecord) -> None:
    if record.finish() and record.chat:
        metrics.observe(record)


def create_app(config: Config | None = None) -> Flask:
    """Builds the app for `config`, or for the config file the environment names (see README)."""
    config = config or load_config()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.gateway.max_request_bytes
    app.extensions["gateway"] = Gateway(config)
    app.extensions["api_keys"] = KeyCheck(config.gateway.api_keys)
    cors = Cors(config.gateway.cors_origins)
    setup_access_log()

    from gateway import api, status

    # Users type either base URL into Open WebUI: serve the API with and without /v1.
    app.register_blueprint(api.bp, url_prefix="/v1")
    app.register_blueprint(api.bp, url_prefix="", name="api_unprefixed")
    app.register_blueprint(status.bp)

    @app.before_request
    def start_record():
        g.request_id = uuid.uuid4().hex
        g.record = RequestRecord(g.request_id, request.method, request.path)
        if request.method == "OPTIONS":  # CORS preflight: browsers send it without credentials
            return Response(status=204, headers=cors.preflight_headers(request.headers.get("Access-Control-Request-Headers")))

    @app.after_request
    def finish_response(response):
        response.headers["X-Request-Id"] = g.request_id
        cors.decorate(response, request.headers.get("Origin"))
        record = g.record
        record.status = response.status_code
        if not response.is_streamed:
            record.mark_first_byte()
        # Runs when the server closes the response: after a stream's last byte, or its client left.
        response.call_on_close(lambda: close_record(record))
        return response

    def answer(error: GatewayError) -> Response:
        if "record" in g:
            g.record.failed(error)
        response = Response(error_json(error, config.secrets), status=error.status, mimetype="application/json")
        response.headers.update(error.headers)
        return response

    @app.errorhandler(GatewayError)
    def gateway_error(error):
        return answer(error)

    @app.errorhandler(HTTPException)
    def http_error(error):
        if error.code == 413:
            limit = config.gateway.max_request_bytes
            return answer(RequestTooLarge(f"Invalid request: the body is larger than this gateway accepts ({limit} bytes, max_request_bytes)."))
        if error.code == 405:
            return answer(MethodNotAllowed(f"Invalid request: {request.method} is not allowed on {request.path}."))
        if error.code == 404:
            return answer(NotFound(f"Invalid request: there is nothing at {request.path}; the API is at /v1/chat/completions and /v1/models."))
        generic = GatewayError(f"Invalid request: {error.description}")
        generic.status, generic.type, generic.kind = error.code or 400, "invalid_request_error", "invalid_request"
        return answer(generic)

    @app.errorhandler(Exception)
    def unexpected(error):
        request_id = g.get("request_id", "")
        log.exception("unexpected failure in request %s", request_id)
        return answer(InternalError(f"The gateway failed unexpectedly (request id {request_id}); its log has the details."))

    return app
