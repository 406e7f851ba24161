"""SIGTERM: streams in flight finish, new connections are refused, the server exits cleanly."""

import os
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.backends import chunk_json, wait_until
from tests.configs import backend, gateway_toml, model
from tests.gunicorn_server import GatewayServer
from tests.sse_client import content_of, data_payloads, read_events


def test_sigterm_lets_twenty_streams_finish(openai_backend, tmp_path):
    config = gateway_toml(backends={"openai": backend(openai_backend.url, streaming=True)}, models=[model("relay", "openai")])
    server = GatewayServer(config, tmp_path, env={"GATEWAY_GRACEFUL_TIMEOUT": "30"}).wait_ready()

    # Each answer is half sent, then held until the server is shutting down and refuses new connections.
    shutting_down = threading.Event()

    def half_then_held(exchange):
        exchange.start_sse()
        for i in range(10):
            if i == 5:
                shutting_down.wait(30)
            exchange.event(chunk_json(delta={"content": str(i)}))
        exchange.event(chunk_json(delta={}, finish_reason="stop"))
        exchange.event("[DONE]")
        exchange.end_sse()

    openai_backend.respond_with(half_then_held)

    def one(_):
        body = {"model": "relay", "stream": True, "messages": [{"role": "user", "content": "count"}]}
        with requests.post(server.url + "/v1/chat/completions", json=body, stream=True, timeout=60) as response:
            return content_of(data_payloads(read_events(response))), response.status_code

    try:
        with ThreadPoolExecutor(20) as pool:
            futures = [pool.submit(one, i) for i in range(20)]
            wait_until(lambda: len(openai_backend.requests) == 20, message="20 streams in flight")
            server.process.send_signal(signal.SIGTERM)

            def refused():
                try:
                    socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
                except ConnectionRefusedError:
                    return True
                return False

            wait_until(refused, timeout=10, message="new connections to be refused")
            assert not any(f.done() for f in futures)  # every stream is still in flight
            shutting_down.set()
            results = [f.result(timeout=60) for f in futures]
        assert results == [("0123456789", 200)] * 20
        assert server.wait_exit(timeout=30) == 0
    finally:
        shutting_down.set()
        server.stop()


def test_stopped_workers_exit_as_soon_as_they_are_idle(tmp_path):
    """gunicorn's gevent loop looks once a second whether its worker is stopping, and once a second
    whether it is done: an idle worker lingered up to two seconds after SIGTERM, and a restart or a
    reload's handover waited for it. Three idle workers are gone within 0.8 s of the signal (0.12 s
    on a quiet machine); under gunicorn's loop alone, three tries took 0.9 to 1.2 s: each worker's
    first tick closes its listener, and the next one sees it done."""
    server = GatewayServer(None, tmp_path, workers=3).wait_ready()
    try:
        def all_three_serve():  # booted: their stop handlers exist (a booting worker holds the signal)
            requests.get(server.url + "/healthz", timeout=5)
            return len({line["pid"] for line in server.access_lines()}) == 3

        wait_until(all_three_serve, timeout=20, message="three workers serving")
        workers = server.worker_pids()
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        deadline = signalled + 10
        while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.005)  # polled finely: the time it takes is what is asserted
        assert time.monotonic() - signalled < 0.8, server.log()
        assert server.wait_exit(timeout=10) == 0 and "Traceback" not in server.log(), server.log()
    finally:
        server.stop(signal.SIGKILL)


def test_a_sigterm_to_every_process_stops_the_gateway_quietly(tmp_path):
    """`pkill gunicorn` signals the master, which passes the SIGTERM on, and each worker: a worker
    that exits at once got the second one at its very end, where Python has put the default action
    back, and died of it (gunicorn: "Worker was sent SIGTERM!"), every time with 20 to 60 ms between."""
    server = GatewayServer(None, tmp_path).wait_ready()
    try:
        workers = server.worker_pids()
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.03)  # the gap pkill leaves between the processes it signals: the case under test
        for pid in workers:
            os.kill(pid, signal.SIGTERM)
        assert server.wait_exit(timeout=20) == 0, server.log()
        assert "was sent SIGTERM" not in server.log() and "Worker exiting" in server.log(), server.log()
    finally:
        server.stop(signal.SIGKILL)


def _running(pid) -> bool:
    """Whether the process runs (a zombie, exited but not yet reaped by its master, does not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _first_worker_as_it_forks(server, timeout=30.0) -> int:
    """The worker's pid the moment the master has forked it: it is still booting (patching gevent,
    importing the app; hundreds of milliseconds at least), before its own signal handlers exist."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.process.poll() is None, server.log()
        pids = server.worker_pids()
        if pids:
            return min(pids)
        time.sleep(0.001)
    raise AssertionError(f"no worker forked in {timeout} s:\n{server.log()}")


@pytest.mark.parametrize("stop", [
    lambda server, worker: server.process.send_signal(signal.SIGTERM),  # a shutdown: the master passes it on
    lambda server, worker: [os.kill(pid, signal.SIGINT) for pid in (server.process.pid, worker)],  # Ctrl-C: the whole group
], ids=["sigterm", "ctrl-c"])
def test_a_stop_signal_that_reaches_a_booting_worker_is_not_lost(tmp_path, stop):
    """gunicorn installs a worker's handlers only once it has booted; a stop signal before that
    used to be dropped, and the master then waited out the whole graceful timeout (60 s here)."""
    server = GatewayServer(None, tmp_path, env={"GATEWAY_GRACEFUL_TIMEOUT": "60"})
    try:
        worker = _first_worker_as_it_forks(server)
        stop(server, worker)
        try:
            status = server.wait_exit(timeout=20)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the gateway was still running 20 s after the signal:\n{server.log()}") from None
        assert status == 0, server.log()
        assert "Traceback" not in server.log()
    finally:
        server.stop(signal.SIGKILL)


def test_ctrl_c_stops_a_serving_gateway_at_once_and_quietly(tmp_path):
    """The terminal signals every process of the group, and the master signals its workers too:
    each worker hears of the quick stop twice, and must act on it once (no SystemExit traceback)."""
    server = GatewayServer(None, tmp_path, env={"GATEWAY_GRACEFUL_TIMEOUT": "60"}).wait_ready()
    try:
        for pid in (server.process.pid, *server.worker_pids()):
            os.kill(pid, signal.SIGINT)
        assert server.wait_exit(timeout=20) == 0, server.log()
        assert "Worker exiting" in server.log() and "Traceback" not in server.log(), server.log()
    finally:
        server.stop(signal.SIGKILL)
