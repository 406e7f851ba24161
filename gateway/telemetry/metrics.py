"""The gateway's numbers, shared by all gunicorn workers: prometheus_client in multiprocess mode.

Each worker writes its values to memory-mapped files in PROMETHEUS_MULTIPROC_DIR (set fresh by
gunicorn.conf.py at start-up); whichever worker answers /metrics, /status.json or the status page
reads them all (metric_files.py: a file that cannot be read is skipped, and dead workers' files
are folded together). Values are recorded once per backend call as it ends (errors count for the
backend that failed, whether or not another backend then answered), once per request as it
finishes, and the in-flight gauge as a backend slot is taken and freed: nothing per relayed event.

The status page's per-minute history of the last hour (calls, errors, latency) is window.py's.
"""

import os
import time

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import values as _values

from . import window
from .metric_files import SafeMultiProcessCollector
from .record import CLIENT_GONE, COMPLETED

_LATENCY_BUCKETS = window.BUCKETS

# In multiprocess mode every value written asks for the process id (a fork since means files of
# its own): os.getpid(), a system call, about ten per request. The id is kept here instead and
# taken anew in a forked child. Set before the first value exists (all of them are made below or
# by `labels()`): two value classes would write one file through two maps.
_process = [os.getpid()]


def _this_process() -> int:
    return _process[0]


def _forked() -> None:
    _process[0] = os.getpid()


if "PROMETHEUS_MULTIPROC_DIR" in os.environ or "prometheus_multiproc_dir" in os.environ:
    os.register_at_fork(after_in_child=_forked)
    _values.ValueClass = _values.MultiProcessValue(process_identifier=_this_process)

REQUESTS = Counter(
    "llm_gateway_requests", "Model requests answered, by endpoint (chat, embeddings, responses).", ["model", "backend", "status", "stream", "endpoint"]
)
TIME_TO_FIRST_BYTE = Histogram(
    "llm_gateway_time_to_first_byte_seconds", "From request received to the first byte sent.", ["backend"], buckets=_LATENCY_BUCKETS
)
DURATION = Histogram(
    "llm_gateway_request_duration_seconds", "From request received to the response closed.", ["backend"], buckets=_LATENCY_BUCKETS
)
IN_FLIGHT = Gauge("llm_gateway_in_flight_requests", "Backend requests in flight now.", ["backend"], multiprocess_mode="livesum")
BACKEND_ERRORS = Counter("llm_gateway_backend_errors", "Failed calls to a backend, by kind (failed-over ones included).", ["backend", "kind"])
CLIENT_DISCONNECTS = Counter("llm_gateway_client_disconnects", "Streams whose client went away before the end.", ["backend"])
KEEPALIVES = Counter("llm_gateway_keepalives_sent", "': keep-alive' comments sent while a backend was silent.", ["backend"])
LAST_SUCCESS = Gauge(
    "llm_gateway_backend_last_success_timestamp_seconds", "When a backend last answered a request in full.", ["backend"], multiprocess_mode="max"
)
LAST_ERROR = Gauge(
    "llm_gateway_backend_last_error_timestamp_seconds", "When a call to a backend last failed, by kind.", ["backend", "kind"], multiprocess_mode="max"
)
FAILOVERS = Counter("llm_gateway_failovers", "Requests passed on from a backend to the model's next one.", ["model", "backend"])
COOLDOWN_UNTIL = Gauge(
    "llm_gateway_backend_cooldown_until_timestamp_seconds", "Until when a backend's circuit breaker skips it (0: closed).", ["backend"], multiprocess_mode="livemax"
)
# Replicas (backends/health.py): each probed backend's verdict as the workers apply it; every
# worker sets it when its verdict changes, so the most recent value of a live worker is the verdict.
BACKEND_HEALTH = Gauge(
    "llm_gateway_backend_health", "Whether a backend's health checks pass (1) or fail (0); only backends with health_url.", ["backend"],
    multiprocess_mode="livemostrecent",
)
# Chat requests a gateway limit refused, by limit (counted by gateway/limits/web.py).
LIMIT_REFUSALS = Counter("llm_gateway_limit_refusals", "Chat requests a gateway limit refused, by limit.", ["limit"])
# The usage ledger's rows dropped because the database stayed down past its memory bound (gateway/usage/ledger.py).
USAGE_ROWS_DROPPED = Counter("llm_gateway_usage_rows_dropped", "Usage ledger rows dropped: the database was down and the memory bound was hit.")
FILES_SKIPPED = Counter("llm_gateway_metrics_files_skipped", "Metrics files of workers that could not be read (left out of the totals).")

_children = {}  # (metric, label values) -> its child: see _labelled


def _labelled(metric, *values):
    """`metric.labels(*values)`, kept: prometheus_client checks the values and takes a lock on
    every labels() call (~5 µs, four times per request here); the child it returns is the same
    object each time (it keeps every child itself, so keeping them here holds nothing more)."""
    child = _children.get((metric, values))
    if child is None:
        child = _children[(metric, values)] = metric.labels(*values)
    return child


_window = window.RecentWindow(os.environ.get("GATEWAY_RUN_DIR") if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else None)


def call_ended(backend: str, error_kind: str | None) -> None:
    """One call to `backend` has ended: answered (`error_kind` None, the client's leaving
    included), or failed as `error_kind`, whether or not another backend then took the request."""
    now = time.time()
    if error_kind is not None:
        _labelled(BACKEND_ERRORS, backend, error_kind).inc()
        _labelled(LAST_ERROR, backend, error_kind).set(now)
    _window.count_call(backend, error_kind is not None, now)


def observe(record) -> None:
    """Records one finished model request (a `record.RequestRecord`): chat, embeddings or responses."""
    backend = record.backend or ""
    _labelled(REQUESTS, record.model or "", backend, str(record.status), "true" if record.stream else "false", record.endpoint or "").inc()
    if not backend:
        return  # refused before a model was chosen: nothing to say about a backend
    now = time.time()
    ttfb = None if record.first_byte is None else record.first_byte - record.started
    duration = record.finished - record.started
    if ttfb is not None:
        _labelled(TIME_TO_FIRST_BYTE, backend).observe(ttfb)
    _labelled(DURATION, backend).observe(duration)
    _window.count_latency(backend, ttfb, duration, now)
    if record.keepalives:
        _labelled(KEEPALIVES, backend).inc(record.keepalives)
    if record.outcome == CLIENT_GONE:
        _labelled(CLIENT_DISCONNECTS, backend).inc()
    elif record.outcome == COMPLETED:
        _labelled(LAST_SUCCESS, backend).set(now)


def flush() -> None:
    """Writes what this worker counted for the status page's history (at its exit)."""
    _window.flush()


def count_failover(model: str, backend: str) -> None:
    _labelled(FAILOVERS, model, backend).inc()


def cooldown_setter(backend: str):
    """What a backend's circuit breaker calls with the end of its cooldown (0.0 when closed)."""
    return _labelled(COOLDOWN_UNTIL, backend).set


def health_changed(backend: str, ok: bool) -> None:
    """A probed backend's verdict, as this worker now applies it (backends/health.py)."""
    _labelled(BACKEND_HEALTH, backend).set(1 if ok else 0)


def limit_refused(limit: str) -> None:
    """One chat request refused by `limit` (max_concurrency, global_concurrency, user_requests, ...)."""
    _labelled(LIMIT_REFUSALS, limit).inc()


def limit_refusals() -> dict:
    """Limit -> requests it refused, all workers of this instance together."""
    totals = {}
    for family in _registry().collect():
        if family.name == "llm_gateway_limit_refusals":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    totals[sample.labels["limit"]] = totals.get(sample.labels["limit"], 0) + sample.value
    return totals


def usage_row_dropped() -> None:
    USAGE_ROWS_DROPPED.inc()


def in_flight_counter(backend: str):
    """What a backend calls with +1 / -1 as its slots are taken and freed."""
    return _labelled(IN_FLIGHT, backend).inc


# --- reading -------------------------------------------------------------------------------------


def _registry():
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        registry = CollectorRegistry()
        registry.register(SafeMultiProcessCollector(path, FILES_SKIPPED.inc))
        return registry
    return REGISTRY  # one process (tests of the app alone, a plain `flask run`)


def exposition() -> bytes:
    """The Prometheus text format of every worker's metrics together."""
    return generate_latest(_registry())


def snapshot_of_nothing() -> dict:
    """A backend's figures before anything happened to it."""
    return {"in_flight": 0, "last_success": None, "last_error": None, "failovers": 0, "cooldown_until": 0.0, **window.summary({}, time.time())}


def snapshot() -> dict:
    """Per backend: the numbers for the status page and /status.json, from all workers."""
    now = time.time()
    backends = {}

    def entry(name):
        return backends.setdefault(name, {
            "in_flight": 0, "last_success": None, "last_error": None, "failovers": 0, "cooldown_until": 0.0,
        })

    for family in _registry().collect():
        for sample in family.samples:
            labels = sample.labels
            backend = labels.get("backend")
            if not backend:
                continue
            if family.name == "llm_gateway_in_flight_requests":
                entry(backend)["in_flight"] += int(sample.value)
            elif sample.name == "llm_gateway_failovers_total":
                entry(backend)["failovers"] += int(sample.value)
            elif family.name == "llm_gateway_backend_cooldown_until_timestamp_seconds":
                entry(backend)["cooldown_until"] = max(entry(backend)["cooldown_until"], sample.value)
            elif family.name == "llm_gateway_backend_last_success_timestamp_seconds":
                entry(backend)["last_success"] = sample.value or None
            elif family.name == "llm_gateway_backend_last_error_timestamp_seconds":
                last = entry(backend)["last_error"]
                if sample.value and (last is None or sample.value > last["at"]):
                    entry(backend)["last_error"] = {"kind": labels["kind"], "at": sample.value}
    recent = _window.read()
    for name in set(backends) | set(recent):
        entry(name).update(window.summary(recent.get(name, {}), now))
    return backends
