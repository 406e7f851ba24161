"""A retiring worker (a good reload, a SIGTERM) takes no new request over the connections it
already has: idle kept-alive connections are closed at once, busy ones when their answer ends, so
clients and nginx reconnect to the live workers and no new stream is cut at the old worker's
graceful deadline (gateway/retiring.py)."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import requests

from tests.backends import chunk_json, wait_until
from tests.configs import backend, gateway_toml, model
from tests.gunicorn_server import ROOT, GatewayServer, fd_targets
from tests.nginx_server import NGINX, Nginx, require
from tests.sse_client import data_payloads, read_events

GRACEFUL = 3  # seconds a retiring worker keeps its in-flight streams


def config_for(url: str, *model_ids: str) -> str:
    return gateway_toml(backends={"llm": backend(url, streaming=True)}, models=[model(m, "llm") for m in model_ids])


def chat(model_id: str = "paced") -> dict:
    return {"model": model_id, "stream": True, "messages": [{"role": "user", "content": "count"}]}


def closed_by_the_server(sock: socket.socket) -> bool:
    """True once the server has closed (or reset) the connection; False while it is open."""
    sock.settimeout(0.05)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def new_worker_booted(server, old_workers: set) -> bool:
    return bool(server.worker_pids() - old_workers)


@pytest.fixture
def paced(openai_backend):
    openai_backend.respond_with(lambda exchange: exchange.paced_reply([str(i) for i in range(6)], 0.25))
    return openai_backend


def test_a_retiring_worker_closes_idle_connections_at_once_and_busy_ones_after_their_answer(paced, tmp_path):
    server = GatewayServer(config_for(paced.url, "paced"), tmp_path, env={"GATEWAY_GRACEFUL_TIMEOUT": str(GRACEFUL)}).wait_ready()
    idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    busy = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        idle.request("GET", "/healthz")
        assert idle.getresponse().read() and idle.sock is not None  # kept alive, waiting for its next request
        busy.request("POST", "/v1/chat/completions", body=json.dumps(chat()), headers={"Content-Type": "application/json"})
        answer = busy.getresponse()
        assert answer.status == 200
        wait_until(lambda: paced.requests, message="the stream to reach the backend")
        old = server.worker_pids()
        server.process.send_signal(signal.SIGHUP)  # a good reload: the worker retires
        # gunicorn keeps an idle connection for `keepalive` (5 s): closed well before that.
        wait_until(lambda: closed_by_the_server(idle.sock), timeout=2, message="the idle connection to be closed")
        body = answer.read()  # the stream that was running finishes...
        assert body.rstrip().endswith(b"data: [DONE]") and b"error" not in body
        wait_until(lambda: closed_by_the_server(busy.sock), timeout=2, message="the busy connection to be closed after its answer")
        wait_until(lambda: new_worker_booted(server, old), message="the new worker")
    finally:
        idle.close()
        busy.close()
        server.stop()


def test_streams_started_after_a_reload_over_nginx_kept_connections_run_to_their_end(openai_backend, tmp_path):
    """nginx's `keepalive 32` keeps idle connections to the gateway. After a good reload the old
    worker must not take new streams over them: those would be cut at its graceful deadline."""
    require(NGINX, "nginx", "apt-get install nginx")
    server = GatewayServer(config_for(openai_backend.url, "paced", "warm"), tmp_path / "gateway",
                           env={"GATEWAY_GRACEFUL_TIMEOUT": str(GRACEFUL)}).wait_ready()
    proxy = Nginx(tmp_path / "nginx", f"127.0.0.1:{server.port}")
    long_answer = [str(i) for i in range(20)]  # 20 × 0.25 s = 5 s: longer than the graceful 3 s
    late_streams = 4

    def answer(exchange):
        if exchange.body["model"] == "long":
            exchange.paced_reply(long_answer, 0.25)
            return
        if exchange.body["model"] == "warm":
            exchange.paced_reply(["x"] * 2, 0.2)
            return
        # The stream that holds the old worker: it runs until every late stream has reached the
        # backend (so they were sent while the old worker was still there), then ends, well
        # within the graceful deadline however long the reload took on a busy machine.
        exchange.start_sse()
        deadline = time.monotonic() + 20
        while sum(r.body["model"] == "long" for r in openai_backend.requests) < late_streams and time.monotonic() < deadline:
            exchange.event(chunk_json(delta={"content": "x"}))
            time.sleep(0.05)
        exchange.event(chunk_json(delta={}, finish_reason="stop"))
        exchange.event("[DONE]")
        exchange.end_sse()

    openai_backend.respond_with(answer)
    results = {}

    def stream(name, model_id):
        with requests.post(proxy.url + "/v1/chat/completions", json=chat(model_id), stream=True, timeout=30) as response:
            results[name] = (response.status_code, data_payloads(read_events(response)))

    def run_all(threads):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

    try:
        # Streams at once, each on a connection of its own, which nginx then keeps: idle
        # connections to the (old) worker, as many as there will be late streams, and one more.
        run_all([threading.Thread(target=stream, args=(f"warm-{i}", "warm")) for i in range(late_streams + 1)])
        holding = threading.Thread(target=stream, args=("holding", "paced"))  # keeps the old worker retiring, not gone
        holding.start()
        wait_until(lambda: any(r.body["model"] == "paced" for r in openai_backend.requests), message="the holding stream to reach the backend")
        old = server.worker_pids()
        (tmp_path / "gateway" / "gateway.toml").write_text(config_for(openai_backend.url, "paced", "warm", "long"), encoding="utf-8")
        server.process.send_signal(signal.SIGHUP)
        wait_until(lambda: new_worker_booted(server, old), message="the new worker")
        # Asked of the gateway itself: through nginx, each ask would take one of its kept
        # connections to the old worker, which then closes it (gunicorn's `Connection: close`
        # while retiring), and the late streams would find none left to be wrongly served over.
        wait_until(lambda: "long" in [m["id"] for m in requests.get(server.url + "/v1/models", timeout=5).json()["data"]],
                   message="the new config")
        run_all([threading.Thread(target=stream, args=(f"late-{i}", "long")) for i in range(late_streams)])
        holding.join(timeout=30)
        for name, (status, payloads) in results.items():
            assert status == 200, name
            assert payloads[-1] == "[DONE]" and not any("error" in p for p in payloads if isinstance(p, dict)), (name, payloads[-3:])
        assert len(results) == 2 * late_streams + 2
    finally:
        proxy.stop()
        server.stop()


def test_a_stopping_worker_waits_for_the_work_its_requests_left_running():
    """A retiring worker exits once its connections have ended and after what their requests left
    running in the background (their budget counts and lease releases in Redis): `_drain` returns
    only then. In a process of its own, patched by gevent as a worker is."""
    probe = textwrap.dedent("""
        from gevent import monkey; monkey.patch_all()
        import gevent
        from gateway import concurrency, retiring
        done = []
        concurrency.in_background(lambda: (gevent.sleep(0.2), done.append("written")))
        retiring._drain([])
        print(done)
    """)
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "['written']", result.stdout + result.stderr


LEAVING = """
{prelude}
import atexit, sys, threading
from gateway import retiring

class TornDown:
    def __del__(self):
        print("the interpreter took its modules apart", file=sys.stderr, flush=True)

kept_until_teardown = TornDown()
atexit.register(lambda: print("exit handlers ran", file=sys.stderr))
sys.stdout.write("written, not yet flushed")
{before}
try:
    {exit_with}
finally:
    {leave}
"""
GEVENT_WORKER = "from gevent import monkey; monkey.patch_all()"  # as gunicorn's gevent worker patches


def leaving(exit_with: str, before: str = "", prelude: str = "", leave: str = "retiring.leave()") -> subprocess.CompletedProcess:
    probe = LEAVING.format(prelude=prelude, exit_with=exit_with, before=before, leave=leave)
    return subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("exit_with, status", [("sys.exit(3)", 3), ("sys.exit()", 0), ("sys.exit('cannot go on')", 1)])
def test_a_leaving_worker_keeps_its_exit_status_exit_handlers_and_output_and_skips_the_teardown(exit_with, status):
    """`leave` ends the process from within gunicorn's SystemExit, as the interpreter would have,
    less the teardown of its modules (which would print the last line here)."""
    result = leaving(exit_with)
    assert result.returncode == status
    assert result.stdout == "written, not yet flushed"
    assert "exit handlers ran" in result.stderr and "took its modules apart" not in result.stderr
    assert ("cannot go on" in result.stderr) == (status == 1)


@pytest.mark.parametrize("exit_with, before, status, last", [
    ("sys.exit(2**32 + 3)", "", 3, "took its modules apart"),  # the system takes 3 of it: the interpreter says how
    ("sys.exit(4)", "threading.Thread(target=lambda: (__import__('time').sleep(0.3), print('thread finished', file=sys.stderr))).start()",
     4, "thread finished"),  # a thread that is not a daemon: the interpreter waits for it
])
def test_where_the_interpreter_would_do_more_leave_lets_it(exit_with, before, status, last):
    result = leaving(exit_with, before)
    assert result.returncode == status and last in result.stderr and "exit handlers ran" in result.stderr


def test_a_worker_leaving_without_the_drain_gives_its_requests_last_writes_a_moment():
    """Its graceful deadline, a quick stop or max_requests end a worker without `_drain`: a Redis
    count its last request started in the background is still written."""
    last_write = "import gevent; from gateway import concurrency; concurrency.in_background(lambda: (gevent.sleep(0.1), print('last write', file=sys.stderr)))"
    result = leaving("sys.exit(0)", before=last_write, prelude=GEVENT_WORKER)
    assert result.returncode == 0 and "last write" in result.stderr, result.stderr


def test_gunicorn_conf_has_a_gevent_worker_leave_at_the_end_of_worker_exit():
    conf = GEVENT_WORKER + "\nimport runpy, types\nconf = runpy.run_path('gunicorn.conf.py')"
    result = leaving("sys.exit(5)", prelude=conf, leave="conf['worker_exit'](None, types.SimpleNamespace(wsgi=None))")
    assert result.returncode == 5 and "exit handlers ran" in result.stderr and "took its modules apart" not in result.stderr, result.stderr


def test_leave_is_not_a_way_out_of_anything_but_an_exit():
    probe = textwrap.dedent("""
        from gateway import retiring
        try:
            raise ValueError("not an exit")
        except ValueError:
            retiring.leave()
        print("still here")
    """)
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "still here" and result.returncode == 0


def accepted_by(pid: int, client: socket.socket, server_port: int) -> bool:
    """Whether the worker `pid` has accepted the connection `client` opened (until then the kernel
    holds it in the listening socket's queue, with no file of its own)."""
    local = f"0100007F:{server_port:04X}"
    remote = f"0100007F:{client.getsockname()[1]:04X}"
    with open("/proc/net/tcp") as table:
        inodes = {fields[9] for fields in (line.split() for line in table) if fields[1] == local and fields[2] == remote}
    held = set(fd_targets(pid))
    return any(f"socket:[{inode}]" in held for inode in inodes if inode != "0")


def test_a_connection_accepted_before_retiring_is_answered_if_its_first_request_comes_soon(openai_backend, tmp_path):
    """A client that has just connected when the worker starts retiring sends its request
    meanwhile: it is answered (`Connection: close`), where it used to be shut down without an
    answer (a reload's RemoteDisconnected). One that stays silent is shut down after the grace."""
    from gateway.retiring import FIRST_REQUEST_GRACE

    server = GatewayServer(config_for(openai_backend.url, "m"), tmp_path, env={"GATEWAY_GRACEFUL_TIMEOUT": "30"}).wait_ready()
    (worker,) = server.worker_pids()
    probe = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    fresh = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        probe.request("GET", "/healthz")
        assert probe.getresponse().read()  # kept alive: shut down at once when the worker retires
        wait_until(lambda: accepted_by(worker, fresh, server.port) and accepted_by(worker, silent, server.port),
                   message="the worker to accept both connections")
        server.process.send_signal(signal.SIGTERM)  # a graceful stop: the worker retires
        wait_until(lambda: closed_by_the_server(probe.sock), timeout=5, message="the worker to start retiring")
        retiring_since = time.monotonic()
        fresh.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        answer = http.client.HTTPResponse(fresh)
        answer.begin()
        assert answer.status == 200 and answer.getheader("Connection") == "close" and answer.read()
        wait_until(lambda: closed_by_the_server(silent), timeout=FIRST_REQUEST_GRACE + 5, message="the silent one to be shut down")
        assert time.monotonic() - retiring_since >= FIRST_REQUEST_GRACE - 0.5  # not at once: after the grace
    finally:
        probe.close()
        fresh.close()
        silent.close()
        server.stop()
