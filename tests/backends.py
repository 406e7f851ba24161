"""Real HTTP test backends, run in threads of the test process, recording everything they receive.

- `TestBackend(streaming=True)` behaves like an OpenAI-compatible server: SSE for `stream: true`.
- `TestBackend(streaming=False, ticket=...)` behaves like the corporate endpoint: it takes the
  OpenAI-shaped body, never streams, and answers 401 unless `x-dep-ticket` is right.
- Both answer `POST .../embeddings` (`embedding_of` each input, whatever `encoding_format` asked:
  like many in-house servers), `GET .../models` (the ids in `backend.listed`) and `GET .../health`
  (200 while `backend.healthy`, else 503).

A test changes what the backend answers with `respond_with(behavior)`; a behavior is a function
`behavior(exchange)` that writes the answer with the `Exchange` helpers.
"""

import http.server
import json
import os
import select
import socket
import ssl
import sys
import threading
import time


class Recorded:
    def __init__(self, method, path, headers, raw):
        self.method = method
        self.path = path
        self.headers = headers  # lower-case name -> value
        self.raw = raw
        try:
            self.body = json.loads(raw) if raw else None
        except ValueError:
            self.body = None


def chunk_json(index=0, delta=None, finish_reason=None, model="upstream", **extra):
    body = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1764093600, "model": model}
    body["choices"] = [] if delta is None else [{"index": index, "delta": delta, "finish_reason": finish_reason}]
    body.update(extra)
    return json.dumps(body, ensure_ascii=False)


def completion_json(content, model="upstream", usage=True, **message_extra):
    message = {"role": "assistant", "content": content, **message_extra}
    body = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1764093600,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if message_extra.get("tool_calls") else "stop"}],
    }
    if usage:
        body["usage"] = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    return body


def reply_text(body) -> str:
    """What the default behavior answers: it names the last user message, so tests can tell."""
    last = next((m for m in reversed(body["messages"]) if m["role"] == "user"), {"content": ""})
    content = last["content"] if isinstance(last["content"], str) else json.dumps(last["content"])
    return f"echo {len(body['messages'])}: {content}"


class Exchange:
    """One request being answered: what came in, and helpers to write the answer."""

    def __init__(self, handler, recorded, backend):
        self.handler = handler
        self.request = recorded
        self.body = recorded.body
        self.backend = backend

    def send_json(self, status, obj, headers=None):
        self.send_raw(status, "application/json", json.dumps(obj).encode(), headers)

    def send_raw(self, status, content_type, data: bytes, headers=None):
        h = self.handler
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.end_headers()
        h.wfile.write(data)
        h.wfile.flush()

    def start_sse(self, chunked=True):
        h = self.handler
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        if chunked:
            h.send_header("Transfer-Encoding", "chunked")
        else:
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        self._chunked = chunked

    def write(self, data: bytes):
        """Writes raw bytes of the event stream (one HTTP chunk when chunked)."""
        h = self.handler
        if self._chunked:
            h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        else:
            h.wfile.write(data)
        h.wfile.flush()

    def event(self, payload: str):
        self.write(f"data: {payload}\n\n".encode())

    def wait_for_client_close(self, timeout=30.0):
        """Blocks until the gateway closes this connection; returns when that was (monotonic), or None."""
        connection = self.handler.connection
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            readable, _, _ = select.select([connection], [], [], max(0.0, deadline - time.monotonic()))
            if readable:
                try:
                    # socket.socket.recv: an SSL socket refuses flags, and a close is b"" either way
                    if socket.socket.recv(connection, 4096, socket.MSG_PEEK) == b"":
                        closed = time.monotonic()
                        self.backend.note_close(closed)
                        self.handler.close_connection = True
                        return closed
                except OSError:
                    closed = time.monotonic()
                    self.backend.note_close(closed)
                    self.handler.close_connection = True
                    return closed
                time.sleep(0.01)  # unexpected data from the gateway: keep watching for the close
        return None

    def end_sse(self):
        if self._chunked:
            self.handler.wfile.write(b"0\r\n\r\n")
            self.handler.wfile.flush()

    def paced_reply(self, pieces, interval):
        """A stream of `pieces`, `interval` seconds apart: a backend that takes its time."""
        self.start_sse()
        for piece in pieces:
            self.event(chunk_json(delta={"content": piece}))
            time.sleep(interval)
        self.event(chunk_json(delta={}, finish_reason="stop"))
        self.event("[DONE]")
        self.end_sse()

    def stream_reply(self, text, usage=False):
        """A complete, well-formed stream of `text` word by word."""
        self.start_sse()
        self.event(chunk_json(delta={"role": "assistant", "content": ""}))
        words = text.split(" ")
        for i, word in enumerate(words):
            self.event(chunk_json(delta={"content": word if i == len(words) - 1 else word + " "}))
        self.event(chunk_json(delta={}, finish_reason="stop"))
        if usage:
            self.event(chunk_json(usage={"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)}))
        self.event("[DONE]")
        self.end_sse()


def embedding_of(item) -> list:
    """The test backends' embedding of one input: exact in float32, so base64 round trips compare equal."""
    return [float(len(json.dumps(item))), 0.25, -1.0]


def embeddings_json(body, model="upstream-embed"):
    inputs = body["input"]
    items = [inputs] if isinstance(inputs, str) or not isinstance(inputs[0], (str, list)) else inputs
    data = [{"object": "embedding", "index": i, "embedding": embedding_of(item)} for i, item in enumerate(items)]
    return {"object": "list", "model": body.get("model", model), "data": data, "usage": {"prompt_tokens": 4, "total_tokens": 4}}


def model_list_json(ids):
    return {"object": "list", "data": [{"id": i, "object": "model", "created": 1764093600, "owned_by": "test"} for i in ids]}


def first_event_then_hold(content: str):
    """A streaming backend that sends one event, then holds the stream open until the gateway
    closes the connection."""

    def behavior(exchange: Exchange):
        exchange.start_sse()
        exchange.event(chunk_json(delta={"role": "assistant", "content": content}))
        exchange.wait_for_client_close(timeout=30)

    return behavior


def default_behavior(exchange: Exchange):
    body = exchange.body
    if exchange.request.method == "GET":
        if exchange.request.path.split("?")[0].endswith("/models"):
            exchange.send_json(200, model_list_json(exchange.backend.listed))
        elif exchange.request.path.split("?")[0].endswith("/health"):  # a health probe (Replicas)
            healthy = exchange.backend.healthy
            exchange.send_json(200 if healthy else 503, {"status": "ok" if healthy else "loading model"})
        else:
            exchange.send_json(404, {"error": {"message": "not found"}})
        return
    if exchange.request.path.split("?")[0].endswith("/embeddings"):
        exchange.send_json(200, embeddings_json(body))
        return
    text = reply_text(body)
    if exchange.backend.streaming and body.get("stream"):
        exchange.stream_reply(text, usage=bool((body.get("stream_options") or {}).get("include_usage")))
    else:
        exchange.send_json(200, completion_json(text, model=body.get("model", "upstream")))


class TestBackend:
    __test__ = False  # not a pytest test class

    def __init__(self, streaming: bool, ticket: str | None = None, tls=None, port: int = 0):
        """`port`: a given one (a backend that comes back where it was), else a free one."""
        self.streaming = streaming
        self.ticket = ticket
        self.requests = []
        self.behavior = default_behavior
        self.listed = []  # the model ids GET .../models reports
        self.healthy = True  # GET .../health answers 200 (else 503)
        self.lock = threading.Lock()
        self.open_connections = 0
        self.client_closes = []  # when the gateway closed a connection a behavior was watching
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else each keep-alive request stalls ~40 ms

            def log_message(self, *args):
                pass

            def do_GET(self):
                recorded = Recorded("GET", self.path, {k.lower(): v for k, v in self.headers.items()}, b"")
                with backend.lock:
                    backend.requests.append(recorded)
                exchange = Exchange(self, recorded, backend)
                if backend.ticket is not None and recorded.headers.get("x-dep-ticket") != backend.ticket:
                    exchange.send_json(401, {"error": {"message": "invalid ticket", "type": "auth"}})
                    return
                try:
                    backend.behavior(exchange)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                recorded = Recorded("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, raw)
                with backend.lock:
                    backend.requests.append(recorded)
                exchange = Exchange(self, recorded, backend)
                if backend.ticket is not None and recorded.headers.get("x-dep-ticket") != backend.ticket:
                    exchange.send_json(401, {"error": {"message": "invalid ticket", "type": "auth"}})
                    return
                if recorded.body is None:
                    exchange.send_json(400, {"error": {"message": "body is not JSON"}})
                    return
                try:
                    backend.behavior(exchange)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def setup(self):
                super().setup()
                with backend.lock:
                    backend.open_connections += 1

            def finish(self):
                try:
                    super().finish()
                finally:
                    with backend.lock:
                        backend.open_connections -= 1

        class Server(http.server.ThreadingHTTPServer):
            request_queue_size = 1024  # the default 5 resets connections when 50 streams start at once
            daemon_threads = True

            def handle_error(self, request, client_address):
                # A gateway worker killed or retiring resets its pooled connections, and a gateway
                # that rejects this backend's certificate ends the handshake with an alert (the
                # TLS tests want exactly that): normal, not news.
                if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError, ssl.SSLError)):
                    super().handle_error(request, client_address)

        self.server = Server(("127.0.0.1", port), Handler)
        if tls is not None:  # an ssl.SSLContext: HTTPS, the handshake done in the handler's thread
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True, do_handshake_on_connect=False)
        self.port = self.server.server_address[1]
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}/v1/chat/completions"
        # serve_forever looks for shutdown() every poll_interval (0.5 s by default): each stop waited that long
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def respond_with(self, behavior):
        self.behavior = behavior

    def note_close(self, when):
        with self.lock:
            self.client_closes.append(when)

    def reset(self):
        with self.lock:
            self.requests.clear()
            self.client_closes.clear()
        self.behavior = default_behavior
        self.listed = []
        self.healthy = True

    @property
    def last(self) -> Recorded:
        assert self.requests, "the backend received no request"
        return self.requests[-1]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


_HELD_CLOSED = []  # the sockets that keep closed_port()'s ports ours until the process ends


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused), and nothing will: the port
    stays bound, without listening, for the rest of this process. A port merely closed again could
    be taken by another test process's server (pytest-xdist) while a test counts on its refusal."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _HELD_CLOSED.append(s)
    return s.getsockname()[1]


def reopen_closed_port(port: int) -> None:
    """Lets go of a port `closed_port` holds, for a server that comes back on it (a backend that was
    down and returns where it was)."""
    for held in list(_HELD_CLOSED):
        if held.getsockname()[1] == port:
            _HELD_CLOSED.remove(held)
            held.close()


def free_port() -> int:
    """A loopback port free a moment ago, for a server that must bind it itself (nginx, uWSGI,
    waitress, redis-server). Another process may take it meanwhile: callers retry on a new one."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def not_installed(problem: str):
    """A real engine a test needs is missing: in CI (.ci/run installs every one) the test fails,
    elsewhere it is skipped. `problem` says what is missing and how to install it."""
    import pytest  # here only: bench/ imports this module where pytest may not be installed

    if os.environ.get("CI"):
        pytest.fail(problem)
    pytest.skip(problem)


def wait_until(condition, timeout=10.0, interval=0.01, message="condition"):
    """Polls `condition` until it is true; fails the test at the deadline.

    The pause between polls starts at `interval` and grows to 0.1 s: a condition that holds at
    once is seen at once, and a long wait does not ask a gateway for its /metrics 100 times a second
    (on two cores, the suite's polls were taking CPU from the servers they wait on)."""
    deadline = time.monotonic() + timeout
    pause = interval
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(min(pause, max(deadline - time.monotonic(), 0)))
        pause = min(pause * 1.5, max(interval, 0.1))


# --- answering like a model (the Responses API tests) ----------------------------------------------


def model_turn(exchange: Exchange, text: str | None = None, reasoning: str | None = None, tool_calls=(), finish: str | None = None):
    """Answers as a model would: its reasoning, its text, its tool calls ((id, name, arguments)
    triples). Streamed when this backend streams and was asked to (reasoning in two pieces, text
    word by word, each call's name first and then its arguments in three pieces, a usage chunk
    when asked for it), else one JSON chat.completion."""
    body = exchange.body
    finish = finish or ("tool_calls" if tool_calls else "stop")
    if not (exchange.backend.streaming and body.get("stream")):
        extra = {"reasoning_content": reasoning} if reasoning else {}
        if tool_calls:
            extra["tool_calls"] = [{"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in tool_calls]
        answer = completion_json(text, model=body.get("model", "upstream"), **extra)
        answer["choices"][0]["finish_reason"] = finish
        exchange.send_json(200, answer)
        return
    exchange.start_sse()
    exchange.event(chunk_json(delta={"role": "assistant", "content": "" if text else None}))
    if reasoning:
        half = len(reasoning) // 2
        for piece in (reasoning[:half], reasoning[half:]):
            exchange.event(chunk_json(delta={"reasoning_content": piece}))
    if text:
        words = text.split(" ")
        for i, word in enumerate(words):
            exchange.event(chunk_json(delta={"content": word if i == len(words) - 1 else word + " "}))
    for index, (call_id, name, arguments) in enumerate(tool_calls):
        exchange.event(chunk_json(delta={"tool_calls": [{"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}]}))
        third = max(1, -(-len(arguments) // 3))
        for start in range(0, len(arguments), third):
            exchange.event(chunk_json(delta={"tool_calls": [{"index": index, "function": {"arguments": arguments[start:start + third]}}]}))
    exchange.event(chunk_json(delta={}, finish_reason=finish))
    if (body.get("stream_options") or {}).get("include_usage"):
        exchange.event(chunk_json(usage={"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}))
    exchange.event("[DONE]")
    exchange.end_sse()


def answers(text: str | None = None, reasoning: str | None = None, tool_calls=(), finish: str | None = None):
    """A behavior that always gives one answer (see `model_turn`)."""
    return lambda exchange: model_turn(exchange, text, reasoning, tool_calls, finish)


def tool_round_trip(call_id: str, name: str, arguments: str, final):
    """A model that calls one tool, then answers once it has the tool's result: `final(result)`
    is its text, given the content of the last `tool` message."""

    def behavior(exchange: Exchange):
        last = exchange.body["messages"][-1]
        if last.get("role") == "tool":
            content = last["content"] if isinstance(last["content"], str) else "".join(p.get("text", "") for p in last["content"])
            model_turn(exchange, text=final(content))
        else:
            model_turn(exchange, tool_calls=[(call_id, name, arguments)])

    return behavior


def drops_mid_stream(text: str):
    """A streaming backend whose connection breaks after the first event (`text`)."""

    def behavior(exchange: Exchange):
        exchange.start_sse()
        exchange.event(chunk_json(delta={"role": "assistant", "content": text}))
        exchange.handler.wfile.write(b"ff\r\ndata: {\"trunc")  # a chunk promised, never finished
        exchange.handler.wfile.flush()
        exchange.handler.close_connection = True
        exchange.handler.connection.shutdown(2)

    return behavior
