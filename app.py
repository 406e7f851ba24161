"""The Flask application factory: `create_app` reads as the table of contents of the gateway.

config → this worker's models and backends → what every request passes through (its record,
inbound keys and CORS) → the blueprints → the error handlers. Each piece registers itself.
"""

from flask import Flask

from gateway.config import Config, load_config
from gateway.limits import web as limits
from gateway.registry import ModelRegistry
from gateway.telemetry import metrics, request_log
from gateway.web import access, api, error_handlers, status


def create_app(config: Config | None = None) -> Flask:
    """Builds the app for `config`, or for the config file the environment names (see README)."""
    config = config or load_config()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.gateway.max_request_bytes
    app.extensions["registry"] = ModelRegistry(config, on_slot_change=metrics.in_flight_counter)
    limits.init_app(app, config, app.extensions["registry"])  # Redis-shared limits (gateway/limits/)

    request_log.init_app(app)  # first: every later step, preflights included, has a record
    access.init_app(app, config.gateway)

    # Users type either base URL into Open WebUI: serve the API with and without /v1.
    app.register_blueprint(api.bp, url_prefix="/v1")
    app.register_blueprint(api.bp, url_prefix="", name="api_unprefixed")
    app.register_blueprint(status.bp)

    error_handlers.init_app(app, config)
    return app
