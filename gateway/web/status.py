"""The status blueprint: an HTML page for people, /status.json, /metrics and health for machines.

Only what is safe to show: a backend's scheme, host and port, never its path, query, headers or
tickets. The numbers come from all workers (telemetry/metrics.py), whichever one answers.
"""

import time

from flask import Blueprint, Response, render_template, request

from .. import __version__
from ..hosting import describe_server
from ..limits.web import add_status as add_limits_status, redis_state
from ..registry import ModelRegistry
from ..telemetry import metrics
from ..telemetry.lifecycle import shutting_down
from .responses import json_response, registry

bp = Blueprint("status", __name__)


def _rounded(value):
    return None if value is None else round(value, 4)


def breaker_state(cooldown_until: float) -> dict:
    """`ok`, or `cooling_down` with the seconds left, as any worker's circuit breaker has it."""
    left = cooldown_until - time.time()
    if left > 0:
        return {"state": "cooling_down", "cooldown_left": round(left, 1)}
    return {"state": "ok", "cooldown_left": None}


def tls_state(backend) -> str:
    """What protects the connection to a backend, in the contract's words."""
    if not backend.url.startswith("https:"):
        return "plain http"
    return "verified" if backend.verify else "unverified"


def status_data(models: ModelRegistry, environ=None) -> dict:
    config = models.config
    numbers = metrics.snapshot()
    backends = []
    for name, b in config.backends.items():
        n = numbers.get(name, {})
        backends.append({
            "name": name,
            "location": b.location,
            "streaming": b.streaming,
            "verify": b.verify,
            "tls": tls_state(b),
            **breaker_state(n.get("cooldown_until", 0.0)),
            "failovers": n.get("failovers", 0),
            "connect_timeout": b.connect_timeout,
            "read_timeout": b.read_timeout,
            "max_concurrency": b.max_concurrency,
            "in_flight": n.get("in_flight", 0),
            "requests_5m": n.get("requests_5m", 0),
            "errors_5m": n.get("errors_5m", 0),
            "requests_60m": n.get("requests_60m", 0),
            "errors_60m": n.get("errors_60m", 0),
            "ttfb_seconds": {k: _rounded(v) for k, v in n.get("ttfb_seconds", {}).items()} or {"p50": None, "p95": None},
            "duration_seconds": {k: _rounded(v) for k, v in n.get("duration_seconds", {}).items()} or {"p50": None, "p95": None},
            "last_error": n.get("last_error"),
            "last_success": n.get("last_success"),
            "discovery": models.discovery.status(name) if models.discovery else None,  # this worker's view
        })
    body = {
        "version": __version__,
        "now": time.time(),
        "uptime_seconds": round(time.time() - models.started, 1),
        "mode": "demo" if config.demo else "config",
        "config": config.source,
        "inbound_auth": bool(config.gateway.api_keys),
        "heartbeat_seconds": config.gateway.heartbeat_seconds,
        "backends": backends,
        "models": [
            {"id": m.id, "name": m.name, "backend": m.backend, "backends": list(m.backends), "kind": m.kind, "discovered": m.id not in config.models}
            for m in models.listed_models()
        ],
        "server": describe_server(environ or {}),  # which server and worker model answered, whose numbers
    }
    add_limits_status(body)  # "redis", "limits", per backend global_max_concurrency / global_in_flight
    return body


@bp.get("/")
def page():
    return render_template("status.html", status=status_data(registry(), request.environ))


@bp.get("/status.json")
def status_json():
    return json_response(status_data(registry(), request.environ))


@bp.get("/metrics")
def prometheus_metrics():
    return Response(metrics.exposition(), mimetype="text/plain; version=0.0.4; charset=utf-8")


@bp.get("/healthz")
def healthz():
    return json_response({"status": "ok"})


@bp.get("/readyz")
def readyz():
    models = registry()
    numbers = metrics.snapshot()
    backends = {}
    for name, b in models.backends.items():  # shown, not judged: a slow backend does not make us unready
        n = numbers.get(name, {})
        backends[name] = {
            "location": b.config.location,
            "streaming": b.streaming,
            "verify": b.config.verify,
            "in_flight": b.in_flight,  # this worker's
            "last_success": n.get("last_success"),
            "last_error": n.get("last_error"),
        }
    ready = not shutting_down()
    body = {"status": "ready" if ready else "shutting_down", "config": models.config.source, "backends": backends}
    body["redis"] = redis_state()  # shown, not judged: every instance shares the one Redis (gateway/limits/)
    return json_response(body, status=200 if ready else 503)


@bp.app_template_filter("ago")
def _ago(timestamp) -> str:
    if not timestamp:
        return "never"
    seconds = max(0, time.time() - timestamp)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


@bp.app_template_filter("ms")
def _ms(seconds) -> str:
    return "–" if seconds is None else f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


@bp.app_template_filter("duration")
def _duration(seconds) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    return " ".join(f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")) if v) or "0s"
