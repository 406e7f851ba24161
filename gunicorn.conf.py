"""gunicorn settings for llm-gateway: plain assignments, each saying what it means for gevent workers.

Nothing here may import requests, ssl or the app: the gevent worker monkey-patches the standard
library when it starts, and anything the master imported before that stays unpatched (blocking).
The config check and the start-up messages below import only gateway.config and
gateway.startup, which are kept free of those imports.
"""

import contextlib
import glob
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gateway import boot_signals, gevent_plugins  # noqa: E402 - needs the path above
from gateway.startup import announce_for_workers, cpus_available  # noqa: E402

# `gunicorn --check-config` (systemctl reload's first step) loads the app once, here, without
# gevent: it must not warn that streams would run on threads (gateway.concurrency.threads_note).
if "--check-config" in sys.argv:
    os.environ["GATEWAY_CHECK_ONLY"] = "1"

# Where to listen: GATEWAY_BIND (host:port, unix:PATH or fd://N).
bind = [os.environ.get("GATEWAY_BIND", "127.0.0.1:8000")]

# One process per CPU this process may use (affinity and cgroup quota: in a container,
# os.cpu_count() is the host's); each serves many requests at once on greenlets.
workers = int(os.environ.get("GATEWAY_WORKERS") or cpus_available())

# The gevent worker: requests to backends block only their own greenlet.
worker_class = "gevent"

# Open connections one worker handles at once (each open chat stream holds one).
worker_connections = int(os.environ.get("GATEWAY_WORKER_CONNECTIONS", "2000"))

# With async workers this is a liveness heartbeat of the worker process, not a request limit:
# a stream may run for many minutes.
timeout = 30

# On SIGTERM, in-flight streams get this long to finish before the worker is stopped.
graceful_timeout = int(os.environ.get("GATEWAY_GRACEFUL_TIMEOUT", "60"))

# A unix:PATH bind is created 0660 (owner and group), not world-writable. gunicorn applies this
# only around the socket's bind and its workers' heartbeat files (mkstemp, 0600 anyway), never to
# the processes: files the gateway itself creates keep the umask it was started with.
umask = 0o117

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


RUN_DIR_PREFIX = "llm-gateway-"  # <tmp>/llm-gateway-<master pid>-xxxx: the workers' metrics files


def _remove_run_dirs_of_dead_masters(server):
    """Run directories whose master is gone without its on_exit (SIGKILL, a crashed host)."""
    for path in glob.glob(os.path.join(tempfile.gettempdir(), RUN_DIR_PREFIX + "*-*")):
        pid = os.path.basename(path)[len(RUN_DIR_PREFIX):].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
            server.log.info("removed %s, left behind by a gateway that is no longer running", path)
        except PermissionError:
            pass  # another user's process, alive


def _fresh_run_dir(server):
    """One directory per master, removed on exit. This file's module state does not survive a
    reload (gunicorn runs it again), so the path is kept in the environment, as the workers see it:
    prometheus_client's multiprocess files, empty at each start (values of a previous run would
    be added to this one's), unless the operator named PROMETHEUS_MULTIPROC_DIR."""
    _remove_run_dirs_of_dead_masters(server)
    run_dir = tempfile.mkdtemp(prefix=f"{RUN_DIR_PREFIX}{os.getpid()}-")
    os.environ["GATEWAY_RUN_DIR"] = run_dir
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
    else:
        path = os.path.join(run_dir, "metrics")
        os.makedirs(path)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    os.environ["GATEWAY_STARTED_AT"] = str(time.time())  # uptime on the status page, whichever worker answers


def _checked_config():
    """The config file as it is now, checked exactly as a worker checks it: (text, config)."""
    from gateway.config import parse_config, read_config_text

    text, source = read_config_text()
    return text, parse_config(text, source)


def _keep_as_last_good(text):
    from gateway.config import SNAPSHOT_VARIABLE

    os.environ[SNAPSHOT_VARIABLE] = text  # the workers spawned from now on load this


def _what_only_a_worker_finds(config):
    """TLS files OpenSSL rejects (a certificate that does not match its key, a key with a pass
    phrase): the master must not load ssl (see the top), so a worker's own check runs in a child
    process, as `make check` does. None when it is fine, else the one-line reason."""
    if not any(b.ca_bundle or b.client_cert for b in config.backends.values()):
        return None
    import subprocess

    try:
        result = subprocess.run(
            [sys.executable, "-m", "gateway", "check", config.source], capture_output=True, text=True, timeout=60,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the TLS check could not run ({exc})"
    if result.returncode == 0:
        return None
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return lines[-1].removeprefix("Error: llm-gateway cannot start: ") if lines else "the TLS check failed"


def on_starting(server):
    """Checks the config before any worker starts, so a bad file stops start-up with one message."""
    from gateway.config import ConfigError

    try:
        text, config = _checked_config()
    except ConfigError as exc:
        # gunicorn prints a RuntimeError raised here as "Error: ..." and exits with status 1.
        raise RuntimeError(f"llm-gateway cannot start: {exc}") from None
    _fresh_run_dir(server)
    _keep_as_last_good(text)
    announce_for_workers(config, server.log, ", ".join(bind))


def _config_to_reload(log):
    """The config file as it is now, if the gateway can serve it: (text, config); else None, and
    one error line saying why the reload is refused."""
    from gateway.config import ConfigError

    try:
        text, config = _checked_config()
    except ConfigError as exc:
        problem = str(exc)
    else:
        problem = _what_only_a_worker_finds(config)
        if problem is None:
            return text, config
    log.error("llm-gateway reload refused, still serving the previous config: %s", problem)
    return None


def when_ready(server):
    """kill -HUP is checked before gunicorn acts on it. gunicorn's own reload always spawns new
    workers and retires the running ones (cutting streams longer than the graceful timeout), and
    its on_reload hook runs too late to stop that: a bad file must leave the running workers alone.

    And every worker is forked with the stop signals blocked, so none sent while it boots is lost
    (gateway/boot_signals.py). Runs before the first worker is forked."""
    reload = server.handle_hup

    def handle_hup():
        if _config_to_reload(server.log) is not None:
            reload()

    server.handle_hup = handle_hup
    server.spawn_worker = boot_signals.forking_with_stop_signals_blocked(server.spawn_worker)


def post_fork(server, worker):
    """The new worker's first steps: a stop signal is held until its own handlers exist, and a
    gevent worker's patching reads the installed packages once, not 25 times."""
    boot_signals.hold_stop_signals()
    if type(worker).__module__ == "gunicorn.workers.ggevent":
        gevent_plugins.look_up_plugins_once()


def on_reload(arbiter):
    """Within a reload the checks above let through: the new workers serve the file as it is now.
    Checked again (the file may have changed since): a bad one keeps the last good snapshot, so
    nothing stops the service (a worker failing to boot would halt gunicorn)."""
    checked = _config_to_reload(arbiter.log)
    if checked is not None:
        text, config = checked
        _keep_as_last_good(text)
        announce_for_workers(config, arbiter.log, ", ".join(bind))


def post_worker_init(worker):
    """Lets the app see when this worker starts shutting down (/readyz answers 503 from then on),
    makes a retiring gevent worker take no new request over its kept-alive connections, and has
    SIGUSR1 (logrotate's postrotate) reopen the access-log file with gunicorn's own logs."""
    from gateway import retiring
    from gateway.concurrency import cooperative
    from gateway.telemetry.lifecycle import attach_worker
    from gateway.telemetry.record import access_log

    attach_worker(worker)
    reopen_gunicorns_logs = worker.log.reopen_files

    def reopen_files():
        reopen_gunicorns_logs()
        access_log.reopen()

    worker.log.reopen_files = reopen_files
    if cooperative():
        retiring.attach(worker)
    boot_signals.deliver_held_signals()  # a stop signal sent while this worker booted acts now


def child_exit(server, worker):
    """A worker is gone: drop its live gauges (in-flight) from the totals.

    This is what prometheus_client.multiprocess.mark_process_dead does; importing that module here
    would import ssl in the master before the workers' gevent patching (see the top of this file).
    """
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        for live in glob.glob(os.path.join(path, f"gauge_live*_{worker.pid}.db")):
            # A worker reading the metrics may have folded the dead worker's files already: an
            # exception here would end gunicorn's main loop, and the whole gateway with it.
            with contextlib.suppress(FileNotFoundError):
                os.remove(live)


def on_exit(server):
    run_dir = os.environ.get("GATEWAY_RUN_DIR")
    if run_dir:
        shutil.rmtree(run_dir, ignore_errors=True)


def worker_exit(server, worker):
    """Closes this worker's pooled backend connections as it goes, and writes what it counted:
    the status page's history, and the usage ledger's last batch (a SIGTERM loses no usage).
    Then a gevent worker leaves at once, without taking its interpreter apart (retiring.leave)."""
    from gateway import retiring
    from gateway.concurrency import cooperative
    from gateway.telemetry import metrics
    from gateway.usage.web import close_app

    metrics.flush()
    app = getattr(worker, "wsgi", None)
    close_app(app)
    registry = getattr(app, "extensions", {}).get("registry")
    if registry is not None:
        registry.close()
    if cooperative():
        retiring.leave()
