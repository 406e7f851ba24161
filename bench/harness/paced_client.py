"""The paced streams' client in a process of its own: asyncio on uvloop (`python -m bench.harness.paced_client`).

With a thousand streams and more on one gateway worker, the bench's own gevent client (the relay
section's) shares a process with the bench and reads each event through http.client: at 1,000 its
own delays were of the size of what it measures. This one only reads bytes and finds the stamps in
them. It opens `streams` streams, their starts spread evenly over `spread` seconds, each through the
relay, and every `twin_every`-th also directly (the same body, so the same `x_start`); neither path
always asks first. It prints one JSON object: per stream, [arrival_ns, x_sent_ns] of each stamped
event through the relay and (twins) directly, whether [DONE] came, and what failed.

Arguments: one JSON object {"relay": [host, port, path], "direct": [...], "body": {...}, "streams",
"spread", "twin_every"}. Without uvloop installed (bench/requirements.txt), asyncio's own loop.
"""

import asyncio
import json
import re
import sys
import time

STAMP = re.compile(rb',"x_sent":(\d+)\}')
KEEP = 64  # bytes kept from a read for the next: a stamp the read ended inside


async def stamped_events(host: str, port: int, path: str, body: bytes) -> dict:
    reader, writer = await asyncio.open_connection(host, port)
    events, done = [], False
    try:
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        if status != b"200":
            raise RuntimeError(f"HTTP {status.decode()}: {(head + await reader.read(200))[:300]!r}")
        body_of = Chunks() if b"transfer-encoding: chunked" in head.lower() else None
        tail = b""
        while True:
            data = await reader.read(65536)
            if not data:
                break
            now = time.monotonic_ns()
            buffer = tail + (body_of.feed(data) if body_of else data)
            end = 0
            for match in STAMP.finditer(buffer):
                events.append((now, int(match.group(1))))
                end = match.end()
            done = done or b"data: [DONE]" in buffer
            if body_of and body_of.ended:  # a server may keep the connection open after the last chunk
                break
            tail = buffer[max(end, len(buffer) - KEEP):]
    finally:
        writer.close()
    return {"events": events, "done": done}


class Chunks:
    """HTTP/1.1 chunked transfer coding, undone as bytes arrive: a relay may cut its chunks
    anywhere, inside an event too."""

    def __init__(self):
        self._pending = b""  # a chunk-size line not whole yet, or the CRLF after a chunk
        self._left = 0  # bytes of the current chunk still to come
        self.ended = False

    def feed(self, data: bytes) -> bytes:
        out = []
        data = self._pending + data
        self._pending = b""
        at = 0
        while at < len(data) and not self.ended:
            if self._left:
                piece = data[at:at + self._left]
                out.append(piece)
                self._left -= len(piece)
                at += len(piece)
                continue
            line_end = data.find(b"\r\n", at)
            if line_end < 0:
                self._pending = data[at:]
                break
            line = data[at:line_end]
            at = line_end + 2
            if not line:  # the CRLF that closes a chunk
                continue
            size = int(line.split(b";", 1)[0], 16)
            if size == 0:
                self.ended = True
            self._left = size
        return b"".join(out)


async def one(k: int, job: dict, began: float) -> dict:
    await asyncio.sleep(max(0.0, began + k * job["spread"] / job["streams"] - time.monotonic()))
    body = json.dumps({**job["body"], "x_start": time.monotonic_ns()}).encode()
    names = ["relay", "direct"] if k % job["twin_every"] == 0 else ["relay"]
    if k % 2:
        names.reverse()  # neither path always asks first
    outcomes = await asyncio.gather(*(stamped_events(*job[name], body) for name in names), return_exceptions=True)
    result = {}
    for name, outcome in zip(names, outcomes):
        if isinstance(outcome, BaseException):
            result.setdefault("failures", []).append(f"{name}: {outcome!r}"[:300])
        else:
            result[name] = outcome
    return result


async def main(job: dict) -> list:
    began = time.monotonic() + 0.05
    return await asyncio.gather(*(one(k, job, began) for k in range(job["streams"])))


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        uvloop = None
    job = json.loads(sys.argv[1])
    results = uvloop.run(main(job)) if uvloop else asyncio.run(main(job))
    json.dump({"loop": "uvloop" if uvloop else "asyncio", "streams": results}, sys.stdout)
