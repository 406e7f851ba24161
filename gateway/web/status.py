"""The status blueprint: an HTML page for people, /status.json, /metrics and health for machines.

Only what is safe to show: a backend's scheme, host and port, never its path, query, headers or
tickets. The numbers come from all workers (telemetry/metrics.py), whichever one answers.
"""

import os
import time

from flask import Blueprint, Response, render_template, request

from .. import __version__
from ..hosting import describe_server
from ..limits.web import add_status as add_limits_status, redis_state
from ..registry import ModelRegistry
from ..telemetry import metrics
from ..telemetry.lifecycle import shutting_down
from .charts import calls_chart, latency_chart
from .responses import json_response, registry

bp = Blueprint("status", __name__)
bp.add_app_template_global(calls_chart)
bp.add_app_template_global(latency_chart)


def _rounded(value):
    return None if value is None else round(value, 4)


def breaker_state(cooldown_until: float, health: dict | None = None) -> dict:
    """`ok`, or `cooling_down` with the seconds left, as any worker's circuit breaker has it; a
    backend whose health checks fail is cooling down until they pass (no time is known)."""
    left = cooldown_until - time.time()
    if health is not None and health["state"] == "failing":
        return {"state": "cooling_down", "cooldown_left": None}
    if left > 0:
        return {"state": "cooling_down", "cooldown_left": round(left, 1)}
    return {"state": "ok", "cooldown_left": None}


def share(names, numbers: dict) -> dict:
    """Each backend's part of the calls made to the model's backends in the last 5 minutes (calls
    counted per backend: one that also serves other models counts theirs too); null before any."""
    calls = {name: (numbers.get(name) or {}).get("requests_5m", 0) for name in names}
    total = sum(calls.values())
    return {name: round(count / total, 3) if total else None for name, count in calls.items()}


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
        n = numbers.get(name) or metrics.snapshot_of_nothing()
        health = models.health.status(name) if models.health else None  # the prober's verdict, as this worker applied it
        backends.append({
            "name": name,
            "location": b.location,
            "streaming": b.streaming,
            "verify": b.verify,
            "tls": tls_state(b),
            **breaker_state(n["cooldown_until"], health),
            "health": health["state"] if health else None,  # "ok" | "failing"; null without health_url
            "health_check": health,
            "weight": b.weight,
            "failovers": n["failovers"],
            "connect_timeout": b.connect_timeout,
            "read_timeout": b.read_timeout,
            "max_concurrency": b.max_concurrency,
            "in_flight": n["in_flight"],
            "requests_5m": n["requests_5m"],
            "errors_5m": n["errors_5m"],
            "requests_60m": n["requests_60m"],
            "errors_60m": n["errors_60m"],
            # over the last 5 minutes (the page's history window), not since start
            "ttfb_seconds": {k: _rounded(v) for k, v in n["ttfb_seconds"].items()},
            "duration_seconds": {k: _rounded(v) for k, v in n["duration_seconds"].items()},
            "last_hour": {k: [_rounded(v) for v in values] for k, values in n["last_hour"].items()},
            "last_error": n["last_error"],
            "last_success": n["last_success"],
            "discovery": models.discovery.status(name) if models.discovery else None,  # this worker's view
        })
    body = {
        "version": __version__,
        "now": time.time(),
        "uptime_seconds": round(time.time() - models.started, 1),
        "mode": "demo" if config.demo else "config",
        "config": config.source,
        "inbound_auth": bool(config.gateway.api_keys or config.keys),
        "heartbeat_seconds": config.gateway.heartbeat_seconds,
        "backends": backends,
        "models": [
            {"id": m.id, "name": m.name, "backend": m.backend, "backends": list(m.backends), "kind": m.kind, "discovered": m.id not in config.models,
             "strategy": m.strategy, "weights": {name: config.backends[name].weight for name in m.backends}, "share_5m": share(m.backends, numbers)}
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
    return Response(metrics.exposition(), content_type="text/plain; version=0.0.4; charset=utf-8")


@bp.get("/healthz")
def healthz():
    return json_response({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """Whether this process can serve: its config is loaded and it is not shutting down. Nothing
    here reads the shared metrics files (a bad one must never take a healthy instance out of a
    load balancer); backends are shown as this worker sees them, not judged."""
    models = registry()
    backends = {}
    for name, b in models.backends.items():
        state, left = b.breaker.state()
        backends[name] = {
            "location": b.config.location,
            "streaming": b.streaming,
            "verify": b.config.verify,
            "in_flight": b.in_flight,  # this worker's
            "state": state,  # this worker's circuit breaker
            "cooldown_left": round(left, 1) if left else None,
            # the health probes' verdict as this worker applies it (null without health_url)
            "health": ("failing" if b.breaker.probe_failing is not None else "ok") if b.config.health_url else None,
        }
    ready = not shutting_down()
    body = {"status": "ready" if ready else "shutting_down", "config": models.config.source, "worker_pid": os.getpid(), "backends": backends}
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
