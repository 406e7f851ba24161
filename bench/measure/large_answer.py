"""What one huge answer costs the other streams of its worker (section `large`).

An embeddings request for LARGE_INPUTS inputs (a ~33 MB answer: the backend's `embed-N` model) is
sent while STREAMS paced streams (an event every 10 ms) run through the same
gateway worker. Every step of reading, checking, writing and sending such an answer must leave the
event loop free (issue #21): the figure is the largest gap between two events of any background
stream while the big request runs, minus the pace the backend keeps. Target: 100 ms.
"""

import json
import statistics
import time

import gevent

from bench.harness.client import Target, post, stream
from bench.harness.table import row, spread, verdict_at_most

SECTION = "large"
LARGE_INPUTS = 500_000
STREAMS = 10
TARGET_MS = 100.0
MODEL = f"embed-{LARGE_INPUTS}"
BACKGROUND = "stream-2000-10"  # an event every 10 ms for 20 s: longer than the big request


def run(rig) -> dict:
    print(f"one {LARGE_INPUTS:,}-input embeddings request beside {STREAMS} streams ...", flush=True)
    body = json.dumps({"model": MODEL, "input": ["x"] * LARGE_INPUTS}).encode()
    gaps, seconds = [], []
    _post_big(rig, body)  # warm-up: the backend builds its answer once (that would stall its own streams)
    for _ in range(rig.cfg["repeats"]):
        gap, took = _one(rig, body)
        gaps.append(gap)
        seconds.append(took)
        print(f"  largest gap {gap:.1f} ms; the request took {took:.1f} s", flush=True)
    return {"largest_gap_ms": gaps, "request_seconds": seconds}


def _one(rig, body: bytes) -> tuple:
    arrivals = [[] for _ in range(STREAMS)]
    chat = json.dumps({"model": BACKGROUND, "stream": True, "messages": [{"role": "user", "content": "x"}]}).encode()

    def background(times):
        conn = rig.gateway.connection()
        try:
            stream(conn, rig.gateway, chat, lambda kind, payload, at: times.append(at) if kind == "data" else None)
        finally:
            conn.close()

    readers = [gevent.spawn(background, times) for times in arrivals]
    gevent.sleep(0.5)  # every stream under way
    began = time.monotonic()
    _post_big(rig, body)
    ended = time.monotonic()
    for reader in readers:
        reader.kill()  # the background streams are not needed past the big request
    pace = 0.010
    gaps = [later - earlier for times in arrivals for earlier, later in zip(times, times[1:]) if later > began and earlier < ended]
    return max(0.0, (max(gaps) - pace) * 1000) if gaps else float("nan"), ended - began


def _post_big(rig, body: bytes) -> None:
    conn = rig.gateway.connection()
    try:
        post(conn, Target("gateway", rig.gateway.port, "/v1/embeddings"), body)
    finally:
        conn.close()


def rows(section: dict, cfg: dict) -> list:
    gaps = section["largest_gap_ms"]
    value = statistics.median(gaps)
    return [row("a huge embeddings answer: largest stall of other streams", f"{value:.0f} ms", spread(gaps, lambda v: f"{v:.0f}"),
                f"{LARGE_INPUTS:,} inputs, ~33 MB, took {statistics.median(section['request_seconds']):.1f} s",
                f"<= {TARGET_MS:.0f} ms", verdict_at_most(value, TARGET_MS, lambda v: f"{v:.0f} ms"))]
