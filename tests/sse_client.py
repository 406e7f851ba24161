"""A deliberately simple SSE reader for tests, independent of the gateway's own decoder."""

import json


def read_events(response):
    """All items of a streamed answer as ("data", str) and ("comment", str) pairs, in order."""
    items = []
    buffer = b""
    for chunk in response.iter_content(chunk_size=None):
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            items.extend(_parse(block))
    assert buffer == b"", f"stream ended inside an event: {buffer!r}"
    return items


def iter_events(response):
    """Items as they arrive (for tests that act between events)."""
    buffer = b""
    for chunk in response.iter_content(chunk_size=None):
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            yield from _parse(block)


def _parse(block):
    for line in block.decode("utf-8").split("\n"):
        if line.startswith(":"):
            yield ("comment", line[1:].strip())
        elif line.startswith("data: "):
            yield ("data", line[6:])
        else:
            raise AssertionError(f"unexpected SSE line {line!r}")


def data_payloads(items):
    return [json.loads(p) if p != "[DONE]" else p for kind, p in items if kind == "data"]


def content_of(payloads):
    return "".join(
        (choice["delta"].get("content") or "")
        for p in payloads
        if isinstance(p, dict)
        for choice in p.get("choices", [])
    )
