"""The Flask application factory: `create_app` reads as the table of contents of the gateway.

config → this worker's models and backends (and the models those list themselves) → what every
request passes through (its record, inbound keys and CORS) → the blueprints → the error handlers.
Each piece registers itself.
"""

import inspect
import logging

from flask import Flask

from gateway import discovery, gunicorn_settings, header_parsing, socket_writes
from gateway.concurrency import cooperative, threads_note
from gateway.backends import health
from gateway.config import Config, load_config
from gateway.limits import web as limits
from gateway.registry import ModelRegistry
from gateway.startup import announce_once, setup_gateway_log
from gateway.telemetry import metrics, request_log
from gateway.upstream import identity
from gateway.usage import web as usage
from gateway.web import access, admin, api, embeddings, error_handlers, responses_api, status


class GatewayFlask(Flask):
    """Flask, asking more cheaply whether a view or a hook is a coroutine. It asks for every hook
    of every request (`inspect.iscoroutinefunction`: seven or eight times, ~17 µs of a request's
    CPU in a busy worker, sampled); a plain function's or method's code flags say it at once.
    Anything else (a partial, a callable object, a function marked a coroutine) is asked Flask's way."""

    def ensure_sync(self, func):
        code = getattr(func, "__code__", None)
        if code is not None and not code.co_flags & inspect.CO_COROUTINE and not hasattr(func, "_is_coroutine_marker"):
            return func
        return super().ensure_sync(func)


def create_app(config: Config | None = None) -> Flask:
    """Builds the app for `config`, or for the config file the environment names (see README)."""
    config = config or load_config()
    setup_gateway_log()  # first: what the steps below log (a prober elected, discovery) is not lost
    app = GatewayFlask(__name__)
    app.extensions["registry"] = ModelRegistry(config, on_slot_change=metrics.in_flight_counter, on_cooldown=metrics.cooldown_setter)
    discovery.start(app.extensions["registry"])  # backends' own model lists: waits at most connect_timeout
    health.start(app.extensions["registry"], on_verdict=metrics.health_changed)  # health_url probes: one prober per instance
    announce_once(config)  # under any WSGI server; under gunicorn.conf.py the master already did
    if note := threads_note():  # each process that streams on threads says what that means
        logging.getLogger("gateway").warning(note)
    header_parsing.install()  # a backend's response head read without the email parser
    gunicorn_settings.install()  # a worker's settings, read as plain attributes after the first time
    if cooperative():
        socket_writes.install()  # a small write the kernel takes whole: one system call, not gevent's three
    if config.gateway.user_jwt_secret:
        identity.load_verifier()  # only gateways that verify Open WebUI's signed user import PyJWT
    limits.init_app(app, config, app.extensions["registry"])  # Redis-shared limits (gateway/limits/)
    responses_api.init_app(app, config)  # stored Responses API answers: in that Redis, else SQLite in data_dir
    usage.init_app(app, config)  # the usage ledger (SQLite in data_dir, or PostgreSQL) and the budgets it counts

    request_log.init_app(app)  # first: every later step, preflights included, has a record
    access.init_app(app, config)

    # Users type either base URL into Open WebUI: serve the API with and without /v1.
    app.register_blueprint(api.bp, url_prefix="/v1")
    app.register_blueprint(api.bp, url_prefix="", name="api_unprefixed")
    app.register_blueprint(embeddings.bp, url_prefix="/v1")
    app.register_blueprint(embeddings.bp, url_prefix="", name="embeddings_unprefixed")
    app.register_blueprint(responses_api.bp, url_prefix="/v1")
    app.register_blueprint(responses_api.bp, url_prefix="", name="responses_api_unprefixed")
    app.register_blueprint(status.bp)
    admin.init_app(app, config)  # /admin/usage for admin_keys (404 without them)

    error_handlers.init_app(app, config)
    return app
