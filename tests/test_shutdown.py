"""SIGTERM: streams in flight finish, new connections are refused, the server exits cleanly."""

import signal
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

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
