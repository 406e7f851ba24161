"""The status blueprint: an HTML page for people, health endpoints for machines.

Only what is safe to show: a backend's scheme, host and port, never its path, query, headers or
tickets.
"""

import time

from flask import Blueprint, current_app, render_template

from . import __version__
from .api import json_response
from .lifecycle import shutting_down
from .runtime import Gateway

bp = Blueprint("status", __name__)


def _gateway() -> Gateway:
    return current_app.extensions["gateway"]


def status_data(gw: Gateway) -> dict:
    config = gw.config
    return {
        "version": __version__,
        "uptime_seconds": round(time.time() - gw.started, 1),
        "mode": "demo" if config.demo else "config",
        "config": config.source,
        "inbound_auth": bool(config.gateway.api_keys),
        "heartbeat_seconds": config.gateway.heartbeat_seconds,
        "backends": [
            {
                "name": b.name,
                "location": b.location,
                "streaming": b.streaming,
                "verify": b.verify,
                "connect_timeout": b.connect_timeout,
                "read_timeout": b.read_timeout,
                "max_concurrency": b.max_concurrency,
            }
            for b in config.backends.values()
        ],
        "models": [{"id": m.id, "name": m.name, "backend": m.backend} for m in config.models.values()],
    }


@bp.get("/")
def page():
    return render_template("status.html", status=status_data(_gateway()))


@bp.get("/status.json")
def status_json():
    return json_response(status_data(_gateway()))


@bp.get("/healthz")
def healthz():
    return json_response({"status": "ok"})


@bp.get("/readyz")
def readyz():
    gw = _gateway()
    backends = {
        name: {"location": b.config.location, "streaming": b.streaming, "in_flight": b.in_flight}
        for name, b in gw.backends.items()
    }
    if shutting_down():
        return json_response({"status": "shutting_down", "config": gw.config.source, "backends": backends}, status=503)
    return json_response({"status": "ready", "config": gw.config.source, "backends": backends})
