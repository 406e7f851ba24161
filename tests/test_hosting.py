"""The gateway as operators host it: real gunicorn processes on unix sockets in a temp directory.

- With this repository's gunicorn.conf.py (what `make run` starts), two workers, bound to
  `unix:PATH`, the access log in a file: the socket is 0660 and serves, the umask touches nothing
  else, each worker opens the access log once and writes `ts`-first JSON lines to it, the config's
  warnings are logged once (by the master) though two workers built the app, and the status page
  says gunicorn, gevent, all workers.
- With plain gunicorn and no config file of ours (sync or threaded workers): the app itself
  logs the warnings, and the status page says which worker model serves and that its numbers are
  this process's only.
"""

import http.client
import json
import os
import re
import socket
import signal
import stat
import subprocess
import sys
import time
from importlib import metadata

import pytest

from gateway import hosting
from gateway.telemetry.record import timestamp
from tests import secret_scan
from tests.backends import wait_until
from tests.configs import backend, gateway_toml, model
from tests.gunicorn_server import GUNICORN, PROXY_VARIABLES, ROOT, fd_targets

GUNICORN_VERSION = metadata.version("gunicorn")
# No api_keys, an id Open WebUI rewrites, verify = false: three start-up warnings.
WARNED_CONFIG = gateway_toml(
    backends={"demo": backend("demo://echo", streaming=True), "insecure": backend("https://127.0.0.1:9/v1", verify=False)},
    models=[model("o3-mini", "demo"), model("echo", "demo")],
)
WARNINGS = ("look like OpenAI reasoning models", "has verify = false", "inbound authentication is off")


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def over_socket(path, method, url, body=None) -> tuple[int, bytes]:
    connection = UnixHTTPConnection(str(path))
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, url, body=json.dumps(body) if body is not None else None, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class Gunicorn:
    """gunicorn started with `args`, listening on <workdir>/gw.sock, started with umask 022."""

    def __init__(self, workdir, args, env):
        self.workdir = workdir
        self.sock_path = workdir / "gw.sock"
        self.log_path = workdir / "gateway.stderr"
        secret_scan.watch_log(self.log_path)  # searched for the suite's secrets at the end
        (workdir / "gateway.toml").write_text(WARNED_CONFIG, encoding="utf-8")
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith("GATEWAY_") and k.lower() not in PROXY_VARIABLES and k != "PROMETHEUS_MULTIPROC_DIR"}
        environ.update({"GATEWAY_CONFIG": str(workdir / "gateway.toml"), "PYTHONPATH": str(ROOT), **env})
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [str(GUNICORN), *args, "wsgi:app"], cwd=workdir, env=environ, stdout=self._log, stderr=subprocess.STDOUT,
            preexec_fn=lambda: os.umask(0o022),  # a usual umask: without gunicorn's, the socket would be 0755
        )

    def wait_ready(self):
        def healthy():
            assert self.process.poll() is None, self.log()
            try:
                return over_socket(self.sock_path, "GET", "/healthz")[0] == 200
            except OSError:  # not bound yet, or accepted before a worker booted
                return False

        wait_until(healthy, timeout=30, interval=0.05, message="the gateway on its unix socket")
        return self

    def get(self, url):
        return over_socket(self.sock_path, "GET", url)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def workers(self) -> list:
        children = f"/proc/{self.process.pid}/task/{self.process.pid}/children"
        with open(children, encoding="ascii") as handle:
            return [int(pid) for pid in handle.read().split()]

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def open_files(pid: int, path) -> int:
    """How many of the process's file descriptors point at `path`."""
    return fd_targets(pid).count(str(path))


# --- gunicorn.conf.py, as `make run` starts it ------------------------------------------------------------


@pytest.fixture(scope="module")
def hosted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("hosted")
    server = Gunicorn(workdir, ["-c", str(ROOT / "gunicorn.conf.py")], {
        "GATEWAY_BIND": f"unix:{workdir / 'gw.sock'}",
        "GATEWAY_WORKERS": "2",
        "GATEWAY_ACCESS_LOG": str(workdir / "access.log"),
    })
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def both_workers_built_the_app(server) -> list:
    """The worker pids, once each holds the access log open: create_app opens it after the
    start-up messages, so from then on anything a worker would log at start-up is logged."""
    def built():
        workers = server.workers()
        return len(workers) == 2 and all(open_files(pid, server.workdir / "access.log") for pid in workers) and workers

    return wait_until(built, timeout=30, message="both workers to build the app")


def test_unix_socket_is_0660_and_serves(hosted):
    mode = os.stat(hosted.sock_path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o660  # owner and group only: not world-writable
    status, body = over_socket(hosted.sock_path, "POST", "/v1/chat/completions",
                               {"model": "echo", "messages": [{"role": "user", "content": "over a socket"}]})
    assert status == 200
    assert "over a socket" in json.loads(body)["choices"][0]["message"]["content"]


def test_the_umask_touches_only_the_socket(hosted):
    both_workers_built_the_app(hosted)
    # Created by the workers after start-up: the umask they were started with (022) applies.
    assert stat.S_IMODE(os.stat(hosted.workdir / "access.log").st_mode) == 0o644


def test_access_log_lines_go_to_the_file_ts_first(hosted):
    before = timestamp(time.time())
    for _ in range(3):
        assert hosted.get("/v1/models")[0] == 200
    after = timestamp(time.time())
    path = hosted.workdir / "access.log"
    # Each line is on disk as soon as it is written (flushed per line, the file still open).
    def models_lines():
        lines = [json.loads(line) for line in path.read_text().splitlines() if '"/v1/models"' in line]
        return lines if len(lines) >= 3 else None

    lines = wait_until(models_lines, message="three access-log lines")
    assert len(lines) == 3
    for line in lines:
        assert list(line)[0] == "ts"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])
        assert before <= line["ts"] <= after
        assert line["path"] == "/v1/models" and line["status"] == 200
    assert '"request_id"' not in hosted.log()  # nothing on stderr


def test_each_worker_opens_the_access_log_once_and_the_master_not_at_all(hosted):
    for pid in both_workers_built_the_app(hosted):
        assert open_files(pid, hosted.workdir / "access.log") == 1
    assert open_files(hosted.process.pid, hosted.workdir / "access.log") == 0


def test_start_up_warnings_are_logged_once_though_two_workers_built_the_app(hosted):
    both_workers_built_the_app(hosted)
    log = hosted.log()
    for warning in WARNINGS:
        assert len([line for line in log.splitlines() if warning in line]) == 1, log
    assert "anyone who can reach unix:" in log  # the master names where it listens
    assert log.count("llm-gateway config: ") == 1


def test_status_says_gunicorn_gevent_all_workers(hosted):
    status, body = hosted.get("/status.json")
    assert status == 200
    assert json.loads(body)["server"] == {"software": f"gunicorn {GUNICORN_VERSION}", "worker": "gevent", "figures": "all workers"}
    page = hosted.get("/")[1].decode()
    assert f"Served by <code>gunicorn {GUNICORN_VERSION}</code>" in page
    assert "gevent workers: each process serves many streams at once" in page
    assert "The numbers below are the totals of all workers." in page


def test_after_logrotate_sigusr1_makes_each_worker_write_to_a_fresh_file(hosted):
    """logrotate moves the file, then signals the master (postrotate: kill -USR1), which passes it
    on: every worker goes on in a new file at the same path, and the moved one gets nothing more."""
    workers = both_workers_built_the_app(hosted)
    path = hosted.workdir / "access.log"
    rotated = path.with_name("access.log.1")
    path.rename(rotated)
    hosted.process.send_signal(signal.SIGUSR1)
    wait_until(lambda: all(open_files(pid, path) == 1 for pid in workers), message="each worker to hold the fresh file")
    kept = rotated.read_text()
    for _ in range(6):
        assert hosted.get("/v1/models")[0] == 200

    def six_lines():
        lines = path.read_text().splitlines()
        return lines if len(lines) >= 6 else None

    lines = wait_until(six_lines, message="six lines")
    assert [json.loads(line)["path"] for line in lines] == ["/v1/models"] * 6
    assert rotated.read_text() == kept


# --- plain gunicorn, no gunicorn.conf.py: the app on its own -------------------------------------------


@pytest.mark.parametrize("worker_args, worker, words", [
    (["-k", "sync"], "sync", "one request at a time per process"),
    (["-k", "gthread", "--threads", "4"], "threads", "each open stream holds one thread"),
])
def test_plain_gunicorn_status_and_warnings_come_from_the_app(tmp_path, worker_args, worker, words):
    server = Gunicorn(tmp_path, ["--no-control-socket", "-w", "1", "-b", f"unix:{tmp_path / 'gw.sock'}", *worker_args], {})
    try:
        server.wait_ready()
        status, body = server.get("/status.json")
        assert json.loads(body)["server"] == {"software": f"gunicorn {GUNICORN_VERSION}", "worker": worker, "figures": "this process"}
        page = server.get("/")[1].decode()
        assert words in page and "this process's only" in page
        log = server.log()
        assert "llm-gateway config: " in log
        for warning in WARNINGS:
            assert len([line for line in log.splitlines() if warning in line]) == 1, log
    finally:
        server.stop()


# --- reading the WSGI environ -------------------------------------------------------------------------


class _Patched:
    @staticmethod
    def is_module_patched(name):
        return name == "socket"


@pytest.mark.parametrize("environ, software", [
    ({"SERVER_SOFTWARE": "gunicorn/27.0.1"}, "gunicorn 27.0.1"),
    ({"SERVER_SOFTWARE": "gevent/26.9.0 gunicorn/27.0.1"}, "gevent 26.9.0 gunicorn 27.0.1"),
    ({"SERVER_SOFTWARE": "gunicorn"}, f"gunicorn {GUNICORN_VERSION}"),  # a bare name gets its installed version
    ({"SERVER_SOFTWARE": "no-such-server-xyz"}, "no-such-server-xyz"),
    ({"uwsgi.version": b"2.0.30"}, "uWSGI 2.0.30"),
    ({"mod_wsgi.version": (5, 0, 0)}, "mod_wsgi 5.0.0"),
    ({}, "unknown"),
])
def test_software_from_the_environ(environ, software):
    assert hosting.describe_server(environ)["software"] == software


def test_worker_model_from_patching_and_the_environ(monkeypatch):
    monkeypatch.delitem(sys.modules, "gevent.monkey", raising=False)
    assert hosting.describe_server({"wsgi.multithread": False})["worker"] == "sync"
    assert hosting.describe_server({"wsgi.multithread": True})["worker"] == "threads"
    monkeypatch.setitem(sys.modules, "gevent.monkey", _Patched)
    assert hosting.describe_server({"wsgi.multithread": True})["worker"] == "gevent"


def test_figures_follow_prometheus_multiproc_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert hosting.describe_server({})["figures"] == "this process"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert hosting.describe_server({})["figures"] == "all workers"
