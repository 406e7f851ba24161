"""The load generator's client: targets, a request, a streamed answer read event by event.

http.client on gevent (this process is patched before anything else loads), keep-alive connections
the caller opens and reuses. PLAIN is the chat every section sends unless it says otherwise.
"""

import http.client
import time

PLAIN = {"model": "plain", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}]}


class Target:
    def __init__(self, name, port, path, stream_path=None):
        self.name, self.port, self.path, self.stream_path = name, port, path, stream_path or path

    def connection(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)


def post(conn, target, body: bytes) -> bytes:
    conn.request("POST", target.path, body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"{target.name}: HTTP {response.status}: {data[:200]!r}")
    return data


def stream(conn, target, body: bytes, on_item, headers=None):
    """Reads one SSE answer; calls on_item(kind, payload, received_at) for each event and comment.
    `headers`: more request headers (Open WebUI's X-OpenWebUI-Chat-Id, say)."""
    conn.request("POST", target.stream_path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"{target.name}: HTTP {response.status}: {response.read()[:200]!r}")
    buffer = b""
    while True:
        data = response.read1(65536)
        if not data:
            break
        now = time.monotonic()
        buffer += data
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            if block.startswith(b":"):
                on_item("comment", block, now)
            elif block.startswith(b"data: "):
                on_item("data", block[6:], now)
    if not buffer == b"":
        raise RuntimeError(f"{target.name}: stream ended inside an event")


def stamped_events(target, body: bytes) -> tuple:
    """One streamed request on a new connection: ([(arrival_ns, x_sent_ns)] per stamped event, saw [DONE]).

    Lean on purpose: with a thousand streams open this process must read faster than the relay."""
    conn = target.connection()
    events, done, buffer = [], False, b""
    try:
        conn.request("POST", target.stream_path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"{target.name}: HTTP {response.status}: {response.read()[:200]!r}")
        read = response.read1
        while True:
            data = read(65536)
            if not data:
                break
            now = time.monotonic_ns()
            buffer += data
            cut = buffer.find(b"\n\n")
            while cut >= 0:
                block, buffer = buffer[:cut], buffer[cut + 2:]
                at = block.rfind(b',"x_sent":')
                if at >= 0:
                    events.append((now, int(block[at + 10:-1])))
                elif block == b"data: [DONE]":
                    done = True
                cut = buffer.find(b"\n\n")
    finally:
        conn.close()
    return events, done
