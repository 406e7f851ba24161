"""The backend connection itself: pooled connections reused while the backend keeps them and
replaced when it drops them; what counts as an answer's bytes having arrived.

The gateway asks the system whether an idle pooled connection has anything to read before it
reuses one (backends/transport.py): a connection the backend closed while it sat in the pool must
be noticed then, not fail the next request.
"""

import json
import socket
import ssl
import threading
import time
from types import SimpleNamespace

import pytest
import requests

from app import create_app
from gateway.backends.http import _has_buffered
from gateway.config import parse_config
from tests.backends import chunk_json, completion_json, wait_until
from tests.certificates import TestCA
from tests.configs import backend, gateway_toml, model
from tests.gunicorn_server import GatewayServer

REQUEST = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}


class CountingBackend:
    """Answers every request with a chat completion over HTTP/1.1 keep-alive, and counts the
    connections it accepted. With `close_after_answer`, it closes each connection right after its
    answer without saying so (no `Connection: close`), as a backend's idle timeout does."""

    def __init__(self, close_after_answer: bool = False, stream_end_delay: float | None = None):
        """`stream_end_delay`: answer with an event stream instead, whose chunked end comes this
        many seconds after its `data: [DONE]` (0: in the same write)."""
        self.close_after_answer = close_after_answer
        self.stream_end_delay = stream_end_delay
        self.ends_sent = 0  # streams whose chunked end was sent
        self.connections = 0
        self.dropped = 0  # connections it closed after an answer
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/v1/chat/completions"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn, conn.makefile("rb") as reader:
            while True:
                length = 0
                line = reader.readline()
                if not line:
                    return
                while line not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                    line = reader.readline()
                reader.read(length)
                if self.stream_end_delay is not None:
                    self._stream(conn)
                    continue
                body = json.dumps(completion_json("Hello")).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                if self.close_after_answer:
                    conn.shutdown(socket.SHUT_RDWR)
                    self.dropped += 1
                    return

    def _stream(self, conn):
        events = [chunk_json(delta={"role": "assistant", "content": "Hello"}), chunk_json(delta={}, finish_reason="stop"), "[DONE]"]
        data = b"".join(b"%x\r\n%s\r\n" % (len(e) + 8, b"data: " + e.encode() + b"\n\n") for e in events)
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        if self.stream_end_delay:
            conn.sendall(head + data)
            time.sleep(self.stream_end_delay)  # the scenario itself: an end that comes late
            self.ends_sent += 1
            conn.sendall(b"0\r\n\r\n")
        else:
            self.ends_sent += 1
            conn.sendall(head + data + b"0\r\n\r\n")

    def stop(self):
        self._listener.close()


@pytest.fixture(params=[False, True], ids=["kept", "dropped"])
def counting_backend(request):
    server = CountingBackend(close_after_answer=request.param)
    yield server
    server.stop()


def test_pooled_connections_are_reused_and_dropped_ones_replaced(counting_backend):
    config = gateway_toml(backends={"b": backend(counting_backend.url, streaming=False)}, models=[model("m", "b")])
    client = create_app(parse_config(config, "transport test")).test_client()
    for answered in range(1, 4):
        response = client.post("/v1/chat/completions", json=REQUEST)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_json()["choices"][0]["message"]["content"] == "Hello"
        if counting_backend.close_after_answer:  # the next request finds it closed in the pool
            wait_until(lambda: counting_backend.dropped == answered, message="the backend closed the connection")
    # Kept: one connection carried all three. Dropped after each answer: each request noticed the
    # closed one in the pool and opened a new connection instead of failing.
    assert counting_backend.connections == (3 if counting_backend.close_after_answer else 1)


def streamed_done(server) -> list:
    """One streamed chat through `server`; the data payloads as they came."""
    with requests.post(server.url + "/v1/chat/completions", json={**REQUEST, "stream": True}, stream=True, timeout=10) as response:
        return [line for line in response.iter_lines() if line.startswith(b"data: ")]


@pytest.mark.parametrize("end_delay", [0, 0.5], ids=["end-with-the-last-event", "end-late"])
def test_a_relayed_streams_connection_goes_back_to_the_pool_and_a_late_end_never_holds_done(end_delay, tmp_path):
    """After [DONE] the rest of a chunked body is read (at once when it came with the last event,
    else in the background) and the connection is pooled again; the client's [DONE] never waits
    for a backend that is slow to end its body."""
    upstream = CountingBackend(stream_end_delay=end_delay)
    config = gateway_toml(backends={"b": backend(upstream.url, streaming=True)}, models=[model("m", "b")])
    server = GatewayServer(config, tmp_path).wait_ready()
    try:
        for count in range(1, 4):
            payloads = streamed_done(server)
            assert payloads[-1] == b"data: [DONE]"
            assert upstream.ends_sent == count - (1 if end_delay else 0)  # a late end had not been sent yet
            wait_until(lambda: upstream.ends_sent == count, message="the backend's end")
        if not end_delay:  # read at once with the last event: the next stream finds it in the pool
            assert upstream.connections == 1
    finally:
        server.stop()
        upstream.stop()


def test_bytes_tls_has_already_decrypted_count_as_buffered(tmp_path):
    """A relay read in place waits for its socket only when nothing of the answer has arrived.
    With TLS, bytes can have arrived and sit decrypted in OpenSSL while http.client's 8 KiB read
    buffer holds only a chunk's closing CRLF: the socket never becomes readable for them, so they
    must count as arrived."""
    ca = TestCA(tmp_path)
    cert, key = ca.issue("backend")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.load_verify_locations(ca.path)
    ours, theirs = socket.socketpair()
    accepted = {}
    handshake = threading.Thread(target=lambda: accepted.update(server=server_context.wrap_socket(theirs, server_side=True)))
    handshake.start()
    with client_context.wrap_socket(ours, server_hostname="localhost") as client:
        handshake.join()
        with accepted["server"] as server:
            # One TLS record: a chunk whose CRLF ends exactly where the 8 KiB buffer does, then the next chunk.
            server.sendall(b"x" * 8190 + b"\r\n" + b"5\r\nhello\r\n")
            reader = client.makefile("rb")
            assert reader.read(8190) == b"x" * 8190
            assert reader.peek(1) == b"\r\n" and client.pending() > 0  # the rest is inside OpenSSL
            response = SimpleNamespace(_decoded_buffer=b"", _fp=SimpleNamespace(fp=reader, chunked=True, chunk_left=0))
            assert _has_buffered(response, client)
            reader.close()
