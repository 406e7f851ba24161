"""The processes the benchmark starts: gunicorn (the gateway, the floor), redis-server, and their config.

Every gunicorn runs this repository's gunicorn.conf.py with ONE worker (the soak's instances: two),
in the run's temporary folder, logging to bench/out/logs/<label>.log. `Servers` holds what a run
started and stops it, last started first, however the run ends.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import gevent

from bench.harness.paths import ROOT

BIN = Path(sys.executable).parent
HEARTBEAT = 1.0  # the bench config's heartbeat_seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, process, what, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            gevent.sleep(0.05)
    raise SystemExit(f"{what} did not start listening in {timeout} s")


def gunicorn(app: str, port: int, env: dict, workdir: Path, log: Path, workers: int = 1) -> subprocess.Popen:
    environ = {**os.environ, **env, "GATEWAY_BIND": f"127.0.0.1:{port}", "GATEWAY_WORKERS": str(workers), "PYTHONPATH": str(ROOT),
               "GATEWAY_LOG_LEVEL": "warning"}
    log = open(log, "wb")
    return subprocess.Popen([str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), app], cwd=workdir, env=environ,
                            stdout=log, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen, sig=signal.SIGTERM) -> None:
    """Signals the process (gunicorn: SIGTERM is a graceful shutdown, SIGINT a quick one) and waits."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def worker_pid(master: subprocess.Popen) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = open(f"/proc/{master.pid}/task/{master.pid}/children").read().split()
        if children:
            return int(children[0])
        gevent.sleep(0.05)
    raise SystemExit("no gunicorn worker")


def redis_server(port: int, workdir: Path, log: Path):
    """A throwaway redis-server on loopback (section `redis`), or None when it is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    log = open(log, "wb")
    return subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                            stdout=log, stderr=subprocess.STDOUT)


def _backend_of(model: str) -> str:
    return "thinking" if model.startswith("slow-") else "embed" if model.startswith("embed-") else "fast"


def bench_config(backend_url: str, models) -> str:
    entries = "".join(
        f'\n[[models]]\nid = "{m}"\nbackend = "{_backend_of(m)}"\n' + ('kind = "embeddings"\n' if m.startswith("embed-") else "")
        for m in models
    )
    return f"""
[gateway]
heartbeat_seconds = {HEARTBEAT}

[backends.fast]
url = "{backend_url}"
streaming = true
max_concurrency = 4000
read_timeout = 60

[backends.thinking]
url = "{backend_url}"
streaming = false
max_concurrency = 4000

[backends.embed]
url = "{backend_url}"
embeddings_url = "{backend_url.replace("/chat/completions", "/embeddings")}"
read_timeout = 120
{entries}"""


class Servers:
    """The processes a run started; on exit from `with`, each is stopped, the last started first.

    A run that failed or was interrupted stops them with SIGINT: a graceful shutdown would keep
    gunicorn waiting on the connections the interrupted measurement left open (up to keepalive)."""

    def __init__(self):
        self._processes = []

    def add(self, process: subprocess.Popen) -> subprocess.Popen:
        self._processes.append(process)
        return process

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        for process in reversed(self._processes):
            stop(process, signal.SIGTERM if exc_type is None else signal.SIGINT)
