"""A fresh worker (section `fresh`): its first streamed request, then memory and keep-alives.

Once per repeat, on a gateway started for it. First, with its worker booted and idle (no request
served; its CPU time has stopped growing), two streamed requests one after the other, each on a new
connection, timed from request to [DONE]; the figure is the first minus the second. Then memory
(memory.py: resident memory per stream with 1,000 open) and keep-alives (keepalives.py: lateness
with 1,000 streams waiting). A fresh gateway each time, because a worker keeps the memory it once
used: a second 1,000-stream run on the same worker would reuse it and under-report.
"""

import json
import statistics
import time

from bench.harness.client import PLAIN, Target, stream
from bench.harness.paths import LOGS
from bench.harness.procfs import wait_idle
from bench.harness.servers import Servers, free_port, gunicorn, wait_listening, worker_pid
from bench.harness.stats import ms
from bench.harness.table import row, spread, verdict_at_most
from bench.measure import keepalives, memory
from bench.measure.keepalives import keepalive_lateness
from bench.measure.memory import memory_per_stream

SECTION = "fresh"


def run(rig) -> dict:
    print(f"fresh gateways: first streamed requests, then {rig.cfg['capacity_streams']:,} streams ...", flush=True)
    return measure_fresh(rig.cfg, rig.gateway_env, rig.workdir)


def timed_stream(target) -> tuple:
    """A short streamed request on a new connection: (seconds to the first event, seconds to the end)."""
    body = json.dumps({**PLAIN, "model": "stream-5-0", "stream": True}).encode()
    conn = target.connection()
    started = time.perf_counter()
    first = []

    def on_item(kind, payload, at):
        if kind == "data" and not first:
            first.append(time.perf_counter())

    stream(conn, target, body, on_item)
    ended = time.perf_counter()
    conn.close()
    return first[0] - started, ended - started


def measure_fresh(cfg, env, workdir) -> dict:
    runs = []
    for repeat in range(cfg["repeats"]):
        port = free_port()
        with Servers() as servers:  # its gateway stops after the repeat (at once when the run fails or is interrupted)
            process = servers.add(gunicorn("wsgi:app", port, env, workdir, LOGS / f"gateway-fresh-{repeat + 1}.log"))
            wait_listening(port, process, "fresh gateway")
            worker = worker_pid(process)
            wait_idle(worker)
            target = Target("gateway", port, "/v1/chat/completions")
            first_req, second_req = timed_stream(target), timed_stream(target)
            run = {
                "first_request_ms": ms(first_req[1]),
                "second_request_ms": ms(second_req[1]),
                "first_minus_second_ms": ms(first_req[1] - second_req[1]),
                "first_event_first_minus_second_ms": ms(first_req[0] - second_req[0]),
            }
            run.update(memory_per_stream(target, worker, cfg["capacity_streams"]))
            run.update(keepalive_lateness(target, cfg["capacity_streams"]))
            runs.append(run)
            print(f"  repeat {repeat + 1}: first streamed request {run['first_request_ms']:.1f} ms, second {run['second_request_ms']:.1f} ms; "
                  f"{run['rss_per_stream_kib']:.1f} KiB per stream, {run['completed']}/{cfg['capacity_streams']} completed; "
                  f"keep-alive lateness p99 {run['late_p99_ms']:.1f} ms", flush=True)
    return {"runs": runs}


def rows(section: dict, cfg: dict) -> list:
    med = statistics.median
    runs = section["runs"]
    warm = [x["first_minus_second_ms"] for x in runs]
    return [row("fresh worker: first streamed request minus the second", f"{med(warm):.1f} ms", spread(warm, lambda v: f"{v:.1f}"),
                f"first {med(x['first_request_ms'] for x in runs):.1f} ms, second {med(x['second_request_ms'] for x in runs):.1f} ms",
                "<= 20 ms", verdict_at_most(med(warm), 20.0, lambda v: f"{v:.1f} ms"))] + memory.rows(runs, cfg) + keepalives.rows(runs, cfg)
