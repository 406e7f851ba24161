"""A fast test backend for the benchmark: raw HTTP/1.1 on gevent, answers chosen by the model name.

It must never be the bottleneck, so it parses only what it needs: the request head, the body
length, the `model` value and an optional `x_start`; answers are prebuilt bytes. Model names:

    plain                  one chat.completion at once
    stream-N-MS            N events; event i is sent at BASE + i * MS milliseconds
    slow-MS                one chat.completion after MS milliseconds (a backend that thinks)
    embed-N                an embeddings answer with N embeddings of two numbers each (built once per N)


    cached-US              a replica with a prefix (KV) cache: streams its first event after US
                           microseconds per character of the prompt it has not seen before, then
                           four more; the first event's `x_uncached` says how many that was

Streamed events carry two stamps from CLOCK_MONOTONIC (`time.monotonic_ns()`, the same clock in
every process on the machine), as the last fields of the chunk's JSON:

    "x_recv": when this backend had the whole request, "x_sent": just before this event's write

BASE is the request's `x_start` (monotonic ns, an unknown field the gateway passes on) when it has
one, else `x_recv`. The schedule is absolute, so a late event does not delay the next ones, and two
requests carrying the same `x_start` (a stream and its direct twin in bench/run.py) get event i at
the same moment. An event whose time has passed is sent at once; MS = 0 sends them back to back.

`cached-US` stands for a vLLM, SGLang or llama.cpp replica, whose time to first token is mostly
the prefill of the prompt it has not cached: each process (one replica) remembers every prefix of
the conversations it answered (messages from the first on, its own reply included), and charges
for the messages after the longest remembered prefix. Several processes are several replicas,
each with its own cache (bench/measure/affinity.py).

The soak (bench/soak.py) asks differently: a body with an `x_soak` plan (an unknown field the
gateway passes on, chat and embeddings alike) is answered as the plan says, whatever its model:

    "x_soak": {"events": N, "every_ms": MS, "first_ms": F, "fault": null | "5xx" | "drop" | "silent"}

Nothing for F ms, then: with "silent" nothing at all (the connection closes); with "5xx" a 500;
else to POST .../embeddings one embedding per input, to `"stream": true` N SSE events MS ms apart
("word " each; then a usage chunk when `stream_options.include_usage` asks, the finish chunk and
[DONE]), and otherwise, after N * MS ms, one chat.completion whose content is the same N words.
With "drop" the connection closes halfway: after N // 2 events, or in the middle of the JSON.
`GET /x-soak/state` says how many connections are open and how many answers are being written.

Run: python bench/backend.py PORT
"""

from gevent import monkey

monkey.patch_all()

import hashlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

_MODEL = re.compile(rb'"model"\s*:\s*"([^"]*)"')
_START = re.compile(rb'"x_start"\s*:\s*(\d+)')
_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)

COMPLETION = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1764093600, "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "The capital of France is Paris."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
}).encode()
JSON_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(COMPLETION), COMPLETION)
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
_EVENT = (b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1764093600,"model":"bench",'
          b'"choices":[{"index":0,"delta":{"content":"word "},"finish_reason":null}],"x_recv":%d,"x_sent":%d}\n\n')
_LAST = (b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1764093600,"model":"bench",'
         b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n')


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _stream(sock, count: int, interval_ns: int, base: int, received: int) -> None:
    sock.sendall(SSE_HEAD)
    for i in range(count):
        if interval_ns:
            wait = base + i * interval_ns - time.monotonic_ns()
            if wait > 0:
                gevent.sleep(wait / 1e9)
        sock.sendall(_chunk(_EVENT % (received, time.monotonic_ns())))
    sock.sendall(_chunk(_LAST) + b"0\r\n\r\n")


_EMBEDDINGS = {}  # N -> the whole HTTP answer for embed-N


def _embeddings_answer(count: int) -> bytes:
    if count not in _EMBEDDINGS:
        item = b'{"object":"embedding","index":%d,"embedding":[0.25,-0.5]}'
        body = (b'{"object":"list","model":"bench-embed","data":[' + b",".join(item % i for i in range(count))
                + b'],"usage":{"prompt_tokens":%d,"total_tokens":%d}}' % (count, count))
        _EMBEDDINGS[count] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    return _EMBEDDINGS[count]


CACHED_REPLY = "Here is what I found. " * 60  # ~1,300 characters: the reply a replica caches with its prompt
_CACHE = set()  # this replica's prefix cache: a digest per conversation prefix it has computed
_CACHE_LIMIT = 200_000


def _prefix_digests(messages) -> list:
    """One digest per prefix of the conversation (messages 0..i), chained."""
    digests, running = [], hashlib.blake2b(digest_size=16)
    for message in messages:
        running.update(json.dumps([message.get("role"), message.get("content")], ensure_ascii=False).encode())
        digests.append(running.copy().digest())
    return digests


def _uncached(messages) -> int:
    """Characters after the longest prefix this replica has cached; remembers the conversation's
    prefixes and its own reply to it, as a replica's KV cache keeps them."""
    digests = _prefix_digests([*messages, {"role": "assistant", "content": CACHED_REPLY}])
    cached = max((i + 1 for i, digest in enumerate(digests[:-1]) if digest in _CACHE), default=0)
    if len(_CACHE) > _CACHE_LIMIT:
        _CACHE.clear()
    _CACHE.update(digests)
    return sum(len(json.dumps(m.get("content"), ensure_ascii=False)) for m in messages[cached:])


def _cached_stream(sock, body: bytes, us_per_char: int, received: int) -> None:
    try:
        messages = json.loads(body).get("messages") or []
    except ValueError:
        messages = []
    uncached = _uncached(messages)
    gevent.sleep(uncached * us_per_char / 1e6)
    sock.sendall(SSE_HEAD)
    size = len(CACHED_REPLY)
    pieces = [CACHED_REPLY[i * size // 5:(i + 1) * size // 5] for i in range(5)]  # five events: the reply, in order
    first = json.dumps({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1764093600, "model": "bench",
                        "choices": [{"index": 0, "delta": {"role": "assistant", "content": pieces[0]}, "finish_reason": None}],
                        "x_uncached": uncached, "x_recv": received}).encode()
    sock.sendall(_chunk(b"data: %s\n\n" % first))
    for piece in pieces[1:]:
        event = json.dumps({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1764093600, "model": "bench",
                            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}).encode()
        sock.sendall(_chunk(b"data: %s\n\n" % event))
    sock.sendall(_chunk(_LAST) + b"0\r\n\r\n")

# --- the soak's answers (module docstring) ----------------------------------------------------

STATE = {"connections": 0, "answering": 0}  # GET /x-soak/state: what is open right now


def _json_answer(status: int, obj) -> bytes:
    data = json.dumps(obj).encode()
    reason = b"OK" if status == 200 else b"Internal Server Error"
    return b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (status, reason, len(data), data)


def _soak_chunk(delta=None, finish=None, usage=None) -> bytes:
    body = {"id": "chatcmpl-soak", "object": "chat.completion.chunk", "created": 1764093600, "model": "soak",
            "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage:
        body["usage"] = usage
    return _chunk(b"data: %s\n\n" % json.dumps(body).encode())


def soak_answer(sock, path: bytes, ask: dict) -> bool:
    """Answers one soak request as its `x_soak` plan says; False when the connection must close."""
    plan = ask["x_soak"]
    events, every, fault = plan.get("events", 1), plan.get("every_ms", 0) / 1000, plan.get("fault")
    gevent.sleep(plan.get("first_ms", 0) / 1000)
    if fault == "silent":
        return False
    if fault == "5xx":
        sock.sendall(_json_answer(500, {"error": {"message": "injected fault", "type": "server_error"}}))
        return True
    drop = fault == "drop"
    usage = {"prompt_tokens": 12, "completion_tokens": events, "total_tokens": 12 + events}
    if path.endswith(b"/embeddings"):
        inputs = ask["input"] if isinstance(ask["input"], list) else [ask["input"]]
        answer = _json_answer(200, {"object": "list", "model": "soak", "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)},
                                    "data": [{"object": "embedding", "index": i, "embedding": [0.25] * 8} for i in range(len(inputs))]})
    elif ask.get("stream"):
        sock.sendall(SSE_HEAD + _soak_chunk({"role": "assistant", "content": ""}))
        for i in range(events // 2 if drop else events):
            gevent.sleep(every)
            sock.sendall(_soak_chunk({"content": "word "}))
        if drop:
            return False
        options = ask.get("stream_options") or {}
        tail = _soak_chunk({}, "stop") + (_soak_chunk(usage=usage) if options.get("include_usage") else b"")
        sock.sendall(tail + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        return True
    else:
        gevent.sleep(events * every)
        answer = _json_answer(200, {"id": "chatcmpl-soak", "object": "chat.completion", "created": 1764093600, "model": "soak",
                                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "word " * events}, "finish_reason": "stop"}],
                                    "usage": usage})
    sock.sendall(answer[:len(answer) // 2] if drop else answer)
    return not drop


def soak_state() -> bytes:
    return _json_answer(200, STATE)


def handle(sock, _address):
    # Without this, Nagle's algorithm holds each small event until the previous one is ACKed, and
    # delayed ACKs make that up to 40 ms: the benchmark would measure TCP, not the gateway.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = b""
    STATE["connections"] += 1
    try:
        while True:
            while b"\r\n\r\n" not in buffer:
                data = sock.recv(65536)
                if not data:
                    return
                buffer += data
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            match = _LENGTH.search(head)
            length = int(match.group(1)) if match else 0
            while len(buffer) < length:
                data = sock.recv(65536)
                if not data:
                    return
                buffer += data
            body, buffer = buffer[:length], buffer[length:]
            received = time.monotonic_ns()
            path = head.split(b" ", 2)[1]
            if path == b"/x-soak/state":
                sock.sendall(soak_state())
                continue
            if b'"x_soak"' in body:
                STATE["answering"] += 1
                try:
                    if not soak_answer(sock, path, json.loads(body)):
                        return
                finally:
                    STATE["answering"] -= 1
                continue
            match = _MODEL.search(body)
            model = match.group(1).decode() if match else "plain"
            if model.startswith("stream-"):
                _, count, interval = model.split("-")
                start = _START.search(body)
                _stream(sock, int(count), int(interval) * 1_000_000, int(start.group(1)) if start else received, received)
            elif model.startswith("embed-"):
                sock.sendall(_embeddings_answer(int(model.split("-")[1])))
            elif model.startswith("cached-"):
                _cached_stream(sock, body, int(model.split("-")[1]), received)
            elif model.startswith("slow-"):
                gevent.sleep(int(model.split("-")[1]) / 1000)
                sock.sendall(JSON_ANSWER)
            else:
                sock.sendall(JSON_ANSWER)
    except OSError:
        return
    finally:
        STATE["connections"] -= 1
        sock.close()


if __name__ == "__main__":
    server = StreamServer(("127.0.0.1", int(sys.argv[1])), handle, backlog=4096)
    server.serve_forever()
