"""Resident memory per open stream (section `fresh`, on its fresh gateway): 1,000 streams open at once.

The worker's resident memory with every stream open (6 events, 1 s apart; the peak while all are
open) minus its resident memory before, per stream. Socket buffers are kernel memory, not in it.
Also counted: how many of the streams completed.
"""

import json
import statistics

import gevent

from bench.harness.client import PLAIN, stream
from bench.harness.procfs import rss_bytes
from bench.harness.table import row, spread, verdict_at_most


def memory_per_stream(gateway, worker: int, streams: int) -> dict:
    gevent.sleep(0.5)
    idle = rss_bytes(worker)
    open_now, peak, completed = [0], [idle], [0]
    body = json.dumps({**PLAIN, "model": "stream-6-1000", "stream": True}).encode()

    def one():
        conn = gateway.connection()
        got = [0]

        def on_item(kind, payload, at):
            if kind == "data":
                got[0] += 1
                if got[0] == 1:
                    open_now[0] += 1

        stream(conn, gateway, body, on_item)
        if got[0] >= 7:  # six events, the finish chunk and [DONE]
            completed[0] += 1
        conn.close()

    jobs = [gevent.spawn(one) for _ in range(streams)]
    while not all(j.dead for j in jobs):
        if open_now[0] == streams:
            peak[0] = max(peak[0], rss_bytes(worker))
        gevent.sleep(0.1)
    gevent.joinall(jobs, raise_error=True)
    return {"completed": completed[0], "rss_per_stream_kib": (peak[0] - idle) / streams / 1024}


def rows(runs: list, cfg: dict) -> list:
    """The rows of section `fresh`'s runs this module measured."""
    med = statistics.median
    n = cfg["capacity_streams"]
    done = [x["completed"] for x in runs]
    mem = [x["rss_per_stream_kib"] for x in runs]
    return [row(f"{n:,} concurrent streams on one worker: completed", f"{min(done):,} of {n:,}" + (" (worst run)" if len(runs) > 1 else "")),
            row("resident memory per open stream", f"{med(mem):.1f} KiB", spread(mem, lambda v: f"{v:.1f}"), f"{n:,} streams open",
                "<= 64 KiB", verdict_at_most(med(mem), 64.0, lambda v: f"{v:.1f} KiB"))]
