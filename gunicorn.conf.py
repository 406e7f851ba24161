"""gunicorn settings for llm-gateway: plain assignments, each saying what it means for gevent workers.

Nothing here may import requests, ssl or the app: the gevent worker monkey-patches the standard
library when it starts, and anything the master imported before that stays unpatched (blocking).
The config check below imports only gateway.config, which is kept free of those imports.
"""

import glob
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Where to listen: GATEWAY_BIND (host:port, unix:PATH or fd://N).
bind = [os.environ.get("GATEWAY_BIND", "127.0.0.1:8000")]

# One process per CPU; each serves many requests at once on greenlets.
workers = int(os.environ.get("GATEWAY_WORKERS") or os.cpu_count() or 1)

# The gevent worker: requests to backends block only their own greenlet.
worker_class = "gevent"

# Open connections one worker handles at once (each open chat stream holds one).
worker_connections = int(os.environ.get("GATEWAY_WORKER_CONNECTIONS", "2000"))

# With async workers this is a liveness heartbeat of the worker process, not a request limit:
# a stream may run for many minutes.
timeout = 30

# On SIGTERM, in-flight streams get this long to finish before the worker is stopped.
graceful_timeout = int(os.environ.get("GATEWAY_GRACEFUL_TIMEOUT", "60"))

# Seconds an idle client connection is kept open for its next request.
keepalive = 5

# Never preload: the app imports requests, which must be imported after gevent patches.
preload_app = False

# gunicorn 27 opens a control socket at a fixed path in the home directory; several servers on
# one machine (tests, benchmarks) would fight over it.
control_socket_disable = True

# Our own access log comes from the app (one JSON line per request); gunicorn's stays off.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("GATEWAY_LOG_LEVEL", "info")


_created_metrics_dir = []  # removed again on exit; a directory the operator named is left alone


def _fresh_metrics_dir(server):
    """prometheus_client's multiprocess mode: one directory all workers write to, empty at each
    start (values of a previous run would be added to this one's). Set before any worker forks."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
    else:
        path = tempfile.mkdtemp(prefix="llm-gateway-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        _created_metrics_dir.append(path)
    os.environ["GATEWAY_STARTED_AT"] = str(time.time())  # uptime on the status page, whichever worker answers


def on_starting(server):
    """Checks the config before any worker starts, so a bad file stops start-up with one message."""
    from gateway.config import ConfigError, config_path, ids_open_webui_rewrites, load_config, unverified_backends

    try:
        config = load_config()
    except ConfigError as exc:
        # gunicorn prints a RuntimeError raised here as "Error: ..." and exits with status 1.
        raise RuntimeError(f"llm-gateway cannot start: {exc}") from None
    _fresh_metrics_dir(server)
    where = config_path() or "the built-in demo config (no GATEWAY_CONFIG, no gateway.toml)"
    server.log.info("llm-gateway config: %s; models: %s", where, ", ".join(config.models))
    risky = ids_open_webui_rewrites(config)
    if risky:
        server.log.warning(
            "model ids %s look like OpenAI reasoning models to Open WebUI, which then renames max_tokens "
            "and changes the system role in their requests; prefer other ids (upstream keeps the backend's name)",
            ", ".join(risky),
        )
    for name in unverified_backends(config):
        server.log.warning(
            "backend '%s' has verify = false: its TLS certificate is NOT checked, so anyone who can "
            "intercept the connection sees every prompt and the backend's credentials",
            name,
        )
    if not config.gateway.api_keys:
        server.log.warning("inbound authentication is off: no api_keys in the config, anyone who can reach %s may use the models", ", ".join(bind))


def post_worker_init(worker):
    """Lets the app see when this worker starts shutting down (/readyz answers 503 from then on)."""
    from gateway.telemetry.lifecycle import attach_worker

    attach_worker(worker)


def child_exit(server, worker):
    """A worker is gone: drop its live gauges (in-flight) from the totals.

    This is what prometheus_client.multiprocess.mark_process_dead does; importing that module here
    would import ssl in the master before the workers' gevent patching (see the top of this file).
    """
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        for live in glob.glob(os.path.join(path, f"gauge_live*_{worker.pid}.db")):
            os.remove(live)


def on_exit(server):
    for path in _created_metrics_dir:
        shutil.rmtree(path, ignore_errors=True)


def worker_exit(server, worker):
    """Closes this worker's pooled backend connections as it goes."""
    app = getattr(worker, "wsgi", None)
    registry = getattr(app, "extensions", {}).get("registry")
    if registry is not None:
        registry.close()
