"""Keep-alive lateness (section `fresh`, on its fresh gateway): 1,000 built streams waiting at once.

1,000 streamed requests to a non-streaming backend that thinks 4.5 s, with a heartbeat of 1 s: the
gateway sends keep-alive comments while it waits. Lateness is each keep-alive's gap after the
previous one minus 1 s, counted once all 1,000 are open. The first keep-alive of each stream also
waits for its request to be admitted among all arriving at once, so it has a row of its own.
"""

import json
import statistics
import time

from gevent.pool import Pool

from bench.harness.client import PLAIN, stream
from bench.harness.servers import HEARTBEAT
from bench.harness.stats import ms, percentile
from bench.harness.table import row, spread, verdict_at_most


def keepalive_lateness(gateway, streams: int) -> dict:
    """Built streams: a non-streaming backend thinking 4.5 s; keep-alives due every HEARTBEAT.
    Lateness is each keep-alive's gap after the previous one, minus HEARTBEAT, once all are open.
    The first one also waits for its request to be admitted among all arriving at once: on its own."""
    gaps, first, first_late = [], [], []
    body = json.dumps({**PLAIN, "model": "slow-4500", "stream": True}).encode()

    def built():
        conn = gateway.connection()
        started = time.monotonic()
        previous = [None]

        def on_item(kind, payload, at):
            if kind == "comment":
                if previous[0] is None:
                    first.append(at)
                    first_late.append(at - started - HEARTBEAT)
                else:
                    gaps.append((previous[0], at))
                previous[0] = at

        stream(conn, gateway, body, on_item)
        conn.close()

    pool = Pool(streams)
    for _ in range(streams):
        pool.spawn(built)
    pool.join(raise_error=True)
    all_open = max(first)  # from here on, every one of the streams is open and waiting
    lateness = [at - previous - HEARTBEAT for previous, at in gaps if previous >= all_open]
    return {
        "late_p99_ms": ms(percentile(lateness, 99)),
        "first_late_p99_ms": ms(percentile(first_late, 99)),
        "keepalives_measured": len(lateness),
    }


def rows(runs: list, cfg: dict) -> list:
    """The rows of section `fresh`'s runs this module measured."""
    med = statistics.median
    n = cfg["capacity_streams"]
    late = [x["late_p99_ms"] for x in runs]
    first = [x["first_late_p99_ms"] for x in runs]
    return [row(f"keep-alive lateness p99, {n:,} built streams", f"{med(late):.1f} ms", spread(late, lambda v: f"{v:.1f}"),
                f"heartbeat {HEARTBEAT:g} s; {med(x['keepalives_measured'] for x in runs):.0f} keep-alives with all open",
                "<= 100 ms", verdict_at_most(med(late), 100.0, lambda v: f"{v:.1f} ms")),
            row(f"first keep-alive lateness p99, {n:,} arriving at once", f"{med(first):.0f} ms", spread(first, lambda v: f"{v:.0f}"),
                "includes admitting the burst")]
