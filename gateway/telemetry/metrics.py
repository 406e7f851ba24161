"""The gateway's numbers, shared by all gunicorn workers: prometheus_client in multiprocess mode.

Each worker writes its values to memory-mapped files in PROMETHEUS_MULTIPROC_DIR (set fresh by
gunicorn.conf.py at start-up); whichever worker answers /metrics, /status.json or the status page
reads them all. Values are recorded once per request, when it finishes, and the in-flight gauge
when a backend slot is taken and freed: nothing per relayed event.

The status page needs counts for the last 5 and 60 minutes, which Prometheus leaves to its
server. Each worker keeps them in gauges with one slot per minute of the hour (`_WINDOW`, "all"
mode: per process), resetting a slot when a new minute reuses it; the reader sums the slots whose
minute is recent. Those gauges are for the page only and are left out of /metrics.
"""

import glob
import os
import time

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from .record import BACKEND_ERROR, CLIENT_GONE, COMPLETED, INTERNAL_ERROR, TIMEOUT

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_WINDOW_NAME = "llm_gateway_status_window"

REQUESTS = Counter("llm_gateway_requests", "Chat completion requests answered.", ["model", "backend", "status", "stream"])
TIME_TO_FIRST_BYTE = Histogram(
    "llm_gateway_time_to_first_byte_seconds", "From request received to the first byte sent.", ["backend"], buckets=_LATENCY_BUCKETS
)
DURATION = Histogram(
    "llm_gateway_request_duration_seconds", "From request received to the response closed.", ["backend"], buckets=_LATENCY_BUCKETS
)
IN_FLIGHT = Gauge("llm_gateway_in_flight_requests", "Backend requests in flight now.", ["backend"], multiprocess_mode="livesum")
BACKEND_ERRORS = Counter("llm_gateway_backend_errors", "Backend failures, by kind.", ["backend", "kind"])
CLIENT_DISCONNECTS = Counter("llm_gateway_client_disconnects", "Streams whose client went away before the end.", ["backend"])
KEEPALIVES = Counter("llm_gateway_keepalives_sent", "': keep-alive' comments sent while a backend was silent.", ["backend"])
LAST_SUCCESS = Gauge(
    "llm_gateway_backend_last_success_timestamp_seconds", "When a backend last answered a request in full.", ["backend"], multiprocess_mode="max"
)
LAST_ERROR = Gauge(
    "llm_gateway_backend_last_error_timestamp_seconds", "When a backend last failed, by kind.", ["backend", "kind"], multiprocess_mode="max"
)
FAILOVERS = Counter("llm_gateway_failovers", "Requests passed on from a backend to the model's next one.", ["model", "backend"])
COOLDOWN_UNTIL = Gauge(
    "llm_gateway_backend_cooldown_until_timestamp_seconds", "Until when a backend's circuit breaker skips it (0: closed).", ["backend"], multiprocess_mode="livemax"
)
# Chat requests a gateway limit refused, by limit (counted by gateway/limits/web.py).
LIMIT_REFUSALS = Counter("llm_gateway_limit_refusals", "Chat requests a gateway limit refused, by limit.", ["limit"])
_WINDOW = Gauge(_WINDOW_NAME, "Per-minute counts for the status page (not exported).", ["backend", "slot", "field"], multiprocess_mode="all")

_window_minute = {}  # (backend, slot) -> the minute this process's slot currently counts


def _count_in_window(backend: str, failed: bool, now: float) -> None:
    minute = int(now // 60)
    slot = str(minute % 60)
    if _window_minute.get((backend, slot)) != minute:
        _window_minute[(backend, slot)] = minute
        _WINDOW.labels(backend, slot, "requests").set(0)
        _WINDOW.labels(backend, slot, "errors").set(0)
        _WINDOW.labels(backend, slot, "minute").set(minute)
    _WINDOW.labels(backend, slot, "requests").inc()
    if failed:
        _WINDOW.labels(backend, slot, "errors").inc()


def observe(record) -> None:
    """Records one finished chat request (a `record.RequestRecord`)."""
    backend = record.backend or ""
    REQUESTS.labels(record.model or "", backend, str(record.status), "true" if record.stream else "false").inc()
    if not backend:
        return  # refused before a model was chosen: nothing to say about a backend
    now = time.time()
    if record.first_byte is not None:
        TIME_TO_FIRST_BYTE.labels(backend).observe(record.first_byte - record.started)
    DURATION.labels(backend).observe(record.finished - record.started)
    if record.keepalives:
        KEEPALIVES.labels(backend).inc(record.keepalives)
    # A backend's errors are its own failures (and ours while serving it), not requests refused
    # before it was called (a bad user token, its concurrency limit: those show in the status label).
    failed = record.outcome in (BACKEND_ERROR, TIMEOUT, INTERNAL_ERROR)
    if record.outcome == CLIENT_GONE:
        CLIENT_DISCONNECTS.labels(backend).inc()
    if failed:
        kind = record.error or "unknown"
        BACKEND_ERRORS.labels(backend, kind).inc()
        LAST_ERROR.labels(backend, kind).set(now)
    elif record.outcome == COMPLETED:
        LAST_SUCCESS.labels(backend).set(now)
    _count_in_window(backend, failed, now)


def count_failover(model: str, backend: str) -> None:
    FAILOVERS.labels(model, backend).inc()


def cooldown_setter(backend: str):
    """What a backend's circuit breaker calls with the end of its cooldown (0.0 when closed)."""
    return COOLDOWN_UNTIL.labels(backend).set
def limit_refused(limit: str) -> None:
    """One chat request refused by `limit` (max_concurrency, global_concurrency, user_requests, ...)."""
    LIMIT_REFUSALS.labels(limit).inc()


def limit_refusals() -> dict:
    """Limit -> requests it refused, all workers of this instance together."""
    totals = {}
    for family in _registry().collect():
        if family.name == "llm_gateway_limit_refusals":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    totals[sample.labels["limit"]] = totals.get(sample.labels["limit"], 0) + sample.value
    return totals


def in_flight_counter(backend: str):
    """What a backend calls with +1 / -1 as its slots are taken and freed."""
    return IN_FLIGHT.labels(backend).inc


# --- reading -------------------------------------------------------------------------------------


class _WorkersFiles(MultiProcessCollector):
    """prometheus_client's reader of every worker's files, less those still empty: a worker creates
    its file and only then sizes it, and a reader that opens it in between fails the whole
    collection (struct.error: /metrics, /status.json and the page answered 500; a worker killed in
    that moment leaves the empty file for good). prometheus/client_python#1199, open in 0.26.0.
    An empty file holds no value yet."""

    def collect(self):
        return self.merge([path for path in glob.glob(os.path.join(self._path, "*.db")) if _has_values(path)], accumulate=True)


def _has_values(path) -> bool:
    try:
        return os.path.getsize(path) > 0
    except FileNotFoundError:  # a dead worker's live gauge, removed since the glob
        return False


def _registry():
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        _WorkersFiles(registry)
        return registry
    return REGISTRY  # one process (tests of the app alone, a plain `flask run`)


class _Exported:
    """The registry as /metrics shows it: without the status page's per-minute gauges."""

    def __init__(self, registry):
        self._registry = registry

    def collect(self):
        return (family for family in self._registry.collect() if family.name != _WINDOW_NAME)


def exposition() -> bytes:
    """The Prometheus text format of every worker's metrics together."""
    return generate_latest(_Exported(_registry()))


def _quantile(q: float, buckets: dict) -> float | None:
    """Like PromQL's histogram_quantile: linear within the bucket that holds the q-th observation."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0
    if not total:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 0)
        lower, below = bound, count
    return lower


def snapshot() -> dict:
    """Per backend: the numbers for the status page, /status.json and /readyz, from all workers."""
    now_minute = int(time.time() // 60)
    backends = {}
    histograms = {}
    windows = {}  # (pid, backend, slot) -> {field: value}

    def entry(name):
        return backends.setdefault(name, {
            "requests_5m": 0, "errors_5m": 0, "requests_60m": 0, "errors_60m": 0, "in_flight": 0,
            "last_success": None, "last_error": None, "ttfb_seconds": {}, "duration_seconds": {},
            "failovers": 0, "cooldown_until": 0.0,
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
            elif sample.name.endswith("_bucket") and family.name in ("llm_gateway_time_to_first_byte_seconds", "llm_gateway_request_duration_seconds"):
                key = (backend, "ttfb_seconds" if "first_byte" in family.name else "duration_seconds")
                bound = float(labels["le"])
                histograms.setdefault(key, {})
                histograms[key][bound] = histograms[key].get(bound, 0) + sample.value
            elif family.name == _WINDOW_NAME:
                windows.setdefault((labels.get("pid"), backend, labels["slot"]), {})[labels["field"]] = sample.value

    for (backend, which), buckets in histograms.items():
        entry(backend)[which] = {"p50": _quantile(0.5, buckets), "p95": _quantile(0.95, buckets)}
    for (_pid, backend, _slot), fields in windows.items():
        age = now_minute - int(fields.get("minute", -10**9))
        for span in (5, 60):
            if 0 <= age < span:
                entry(backend)[f"requests_{span}m"] += int(fields.get("requests", 0))
                entry(backend)[f"errors_{span}m"] += int(fields.get("errors", 0))
    return backends
