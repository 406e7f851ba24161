"""Streams stream under every WSGI server, not only gunicorn's gevent worker.

Without gevent's patching the backend reader is a real thread (gateway/concurrency.py): events go
out as they arrive, keep-alives flow while a backend thinks, and a client that leaves is noticed
at the next write, which closes the backend request. Each server is started for real, on a free
loopback port, with this repository's `wsgi:app`.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.backends import TestBackend, chunk_json, completion_json, free_port, wait_until
from tests.configs import backend, gateway_toml, model
from tests.sse_client import _parse, content_of, data_payloads

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HEARTBEAT = 0.3
PACE = 0.3


class Hosted:
    def __init__(self, url: str, log: Path):
        self.url, self.log = url, log


# --no-control-socket: gunicorn's control socket is one fixed path per user, which servers started
# at the same time (by parallel test processes, or anyone else) would take from each other.
SERVERS = {
    "gunicorn-sync": lambda port: [str(BIN / "gunicorn"), "--no-control-socket", "-k", "sync", "-w", "1", "-b", f"127.0.0.1:{port}", "wsgi:app"],
    "gunicorn-gthread": lambda port: [str(BIN / "gunicorn"), "--no-control-socket", "-k", "gthread", "--threads", "8", "-w", "1",
                                      "-b", f"127.0.0.1:{port}", "wsgi:app"],
    "waitress": lambda port: [str(BIN / "waitress-serve"), "--listen", f"127.0.0.1:{port}", "--threads", "8", "wsgi:app"],
    "uwsgi": lambda port: [str(BIN / "uwsgi"), "--http-socket", f"127.0.0.1:{port}", "--module", "wsgi:app", "--master",
                           "--processes", "1", "--threads", "8", "--enable-threads", "--die-on-term", "--disable-logging"],
}


@pytest.fixture(scope="module")
def slow_backends():
    streaming, thinking = TestBackend(streaming=True), TestBackend(streaming=False)
    yield streaming, thinking
    streaming.stop()
    thinking.stop()


@pytest.fixture(scope="module", params=sorted(SERVERS))
def hosted(request, slow_backends, tmp_path_factory):
    streaming, thinking = slow_backends
    workdir = tmp_path_factory.mktemp(request.param)
    config = workdir / "gateway.toml"
    config.write_text(gateway_toml(
        gateway={"heartbeat_seconds": HEARTBEAT},
        backends={"relay": backend(streaming.url, streaming=True), "built": backend(thinking.url, streaming=False)},
        models=[model("relay", "relay"), model("built", "built")],
    ), encoding="utf-8")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PROMETHEUS_"))}
    log_path = workdir / "server.log"
    log = open(log_path, "wb")
    for _ in range(5):  # a port free a moment ago may be taken (by another test process) before the server binds it
        port = free_port()
        process = subprocess.Popen(
            SERVERS[request.param](port), cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
            env={**environ, "GATEWAY_CONFIG": str(config), "PYTHONPATH": str(ROOT)},
        )
        url = f"http://127.0.0.1:{port}"

        def up():
            if process.poll() is not None:
                return True
            try:
                return requests.get(url + "/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_until(up, timeout=30, message=f"{request.param} to serve")
        if process.poll() is None:
            break
        assert "in use" in log_path.read_text(errors="replace"), log_path.read_text(errors="replace")
    else:
        raise AssertionError(f"{request.param} found no free port:\n{log_path.read_text(errors='replace')}")
    yield Hosted(url, log_path)
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()


@pytest.fixture(autouse=True)
def _reset(slow_backends):
    yield
    for server in slow_backends:
        server.reset()


def iter_events(response):
    """Items as they arrive, whatever the framing: uWSGI's http-socket ends a body by closing the
    connection, and requests' iter_content would then read it whole before yielding anything."""
    buffer = b""
    for chunk in iter(lambda: response.raw.read1(65536), b""):
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            yield from _parse(block)


def chat(hosted, model_id):
    body = {"model": model_id, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    return requests.post(hosted.url + "/v1/chat/completions", json=body, stream=True, timeout=30)


def test_events_arrive_as_the_backend_sends_them(hosted, slow_backends):
    streaming, _ = slow_backends
    streaming.respond_with(lambda exchange: exchange.paced_reply(["a", "b", "c", "d"], PACE))
    arrivals, contents = [], []
    with chat(hosted, "relay") as response:
        assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/event-stream")
        for kind, payload in iter_events(response):
            if kind == "data" and payload != "[DONE]" and '"content"' in payload:
                arrivals.append(time.monotonic())
                contents.append(content_of(data_payloads([(kind, payload)])))
    assert contents == ["a", "b", "c", "d"]
    # Buffered to the end, all four would arrive together; relayed, they are the backend's pace apart.
    assert arrivals[-1] - arrivals[0] >= 2 * PACE


def test_keepalives_flow_while_a_backend_thinks(hosted, slow_backends):
    _, thinking = slow_backends

    def think(exchange):
        time.sleep(4 * HEARTBEAT)  # the backend thinking: the scenario itself
        exchange.send_json(200, completion_json("done"))

    thinking.respond_with(think)
    with chat(hosted, "built") as response:
        items = list(iter_events(response))
    first_data = next(i for i, item in enumerate(items) if item[0] == "data")
    assert ("comment", "keep-alive") in items[:first_data]
    assert content_of(data_payloads(items)) == "done" and items[-1] == ("data", "[DONE]")


def test_a_client_that_leaves_closes_the_backend_request(hosted, slow_backends):
    streaming, _ = slow_backends

    def endless(exchange):
        exchange.start_sse()
        exchange.event(chunk_json(delta={"role": "assistant", "content": "x"}))
        exchange.wait_for_client_close(timeout=30)

    streaming.respond_with(endless)
    with chat(hosted, "relay") as response:
        next(iter_events(response))
    # Noticed at the next write (a keep-alive within a heartbeat), then the backend request is closed.
    wait_until(lambda: streaming.client_closes, timeout=10, message="the backend request to be closed")


def test_the_start_up_log_says_streams_run_on_threads(hosted):
    log = hosted.log.read_text(encoding="utf-8", errors="replace")
    assert "runs without gevent's cooperative runtime" in log and "Traceback" not in log
