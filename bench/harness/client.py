"""The load generator's client: targets, a request, a streamed answer read event by event.

http.client on gevent (this process is patched before anything else loads), keep-alive connections
the caller opens and reuses. PLAIN is the chat every section sends unless it says otherwise.
`ask` is the soak's: any answer kept as it came (status, body or events), nothing raised for a
status, and a client that may hang up after some events.
"""

import dataclasses
import http.client
import time

PLAIN = {"model": "plain", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}]}


class Target:
    def __init__(self, name, port, path, stream_path=None, timeout=120):
        self.name, self.port, self.path, self.stream_path = name, port, path, stream_path or path
        self.timeout = timeout  # seconds a read may wait for the next bytes

    def connection(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)


def post(conn, target, body: bytes) -> bytes:
    conn.request("POST", target.path, body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"{target.name}: HTTP {response.status}: {data[:200]!r}")
    return data


def sse_items(response):
    """(kind, payload, received_at) for each event ("data", what follows `data: `) and comment
    ("comment", the whole line) of an SSE answer, as they arrive. ValueError when it ends inside an
    event."""
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
                yield "comment", block, now
            elif block.startswith(b"data: "):
                yield "data", block[6:], now
    if buffer:
        raise ValueError(f"the stream ended inside an event: {buffer[:200]!r}")


def stream(conn, target, body: bytes, on_item, headers=None):
    """Reads one SSE answer; calls on_item(kind, payload, received_at) for each event and comment.
    `headers`: more request headers (Open WebUI's X-OpenWebUI-Chat-Id, say)."""
    conn.request("POST", target.stream_path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"{target.name}: HTTP {response.status}: {response.read()[:200]!r}")
    try:
        for kind, payload, at in sse_items(response):
            on_item(kind, payload, at)
    except ValueError as exc:
        raise RuntimeError(f"{target.name}: {exc}") from None


@dataclasses.dataclass
class Answer:
    """One answer as the client got it."""

    status: int = 0  # 0: no answer at all (see `broken`)
    headers: dict = dataclasses.field(default_factory=dict)  # lower-case names
    body: bytes = b""  # a plain answer's body
    items: list = dataclasses.field(default_factory=list)  # an event stream's (kind, payload), in order
    left: bool = False  # the client hung up on purpose, after `leave_after` items
    broken: str = ""  # what went wrong on the wire (connection refused or cut, a read timed out)

    @property
    def streamed(self) -> bool:
        return self.headers.get("content-type", "").startswith("text/event-stream")


def ask(conn, path: str, body: bytes, headers: dict, leave_after=None) -> Answer:
    """POSTs `body` and reads the whole answer, or hangs up after `leave_after` stream items (events
    and comments). Wire failures end up in `broken`, never raised; the caller closes `conn` then,
    or after `left`, or when the answer said `Connection: close`."""
    answer = Answer()
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **headers})
        response = conn.getresponse()
        answer.status, answer.headers = response.status, {k.lower(): v for k, v in response.getheaders()}
        if not answer.streamed:
            answer.body = response.read()
            return answer
        for kind, payload, _at in sse_items(response):
            answer.items.append((kind, payload))
            if leave_after is not None and len(answer.items) >= leave_after:
                answer.left = True
                break
    except (OSError, http.client.HTTPException, ValueError) as exc:
        answer.broken = f"{type(exc).__name__}: {exc}"[:300]
    return answer


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
