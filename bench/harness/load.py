"""Load shapes shared by the sections: concurrency 1 taking turns, and 64 closed loops per target.

Targets always take turns (request by request, or slice by slice in a rotating order), so drift
and load from elsewhere fall on all of them alike.
"""

import time

import gevent

from bench.harness.client import post
from bench.harness.procfs import cpu_seconds
from bench.harness.stats import ms


def latencies_c1(targets, body: bytes, count: int) -> dict:
    """Concurrency 1, interleaved request by request, so drift hits all targets alike."""
    conns = {t.name: t.connection() for t in targets}
    for t in targets:  # warm connections and code paths
        for _ in range(20):
            post(conns[t.name], t, body)
    result = {t.name: [] for t in targets}
    for _ in range(count):
        for t in targets:
            started = time.perf_counter()
            post(conns[t.name], t, body)
            result[t.name].append(time.perf_counter() - started)
    for conn in conns.values():
        conn.close()
    return result


def load_c64(targets, body: bytes, rounds: int, seconds: float, pids: dict, rotate: int = 0) -> dict:
    """64 clients per target in closed loops, on keep-alive connections opened (and used once)
    beforehand; `rounds` slices of `seconds` per target, the targets taking turns slice by slice
    in an order that rotates each round, so load from elsewhere falls on all of them alike.
    Per target: the latencies of all its slices, requests/s, and its worker's CPU per request."""
    conns = {t.name: [t.connection() for _ in range(64)] for t in targets}
    gevent.joinall([gevent.spawn(post, conn, t, body) for t in targets for conn in conns[t.name]], raise_error=True)
    result = {t.name: {"latencies": [], "seconds": 0.0, "cpu": 0.0} for t in targets}
    for round_ in range(rounds):
        shift = (round_ + rotate) % len(targets)
        for t in targets[shift:] + targets[:shift]:
            into = result[t.name]
            deadline = time.perf_counter() + seconds

            def client(conn):
                while time.perf_counter() < deadline:
                    started = time.perf_counter()
                    post(conn, t, body)
                    into["latencies"].append(time.perf_counter() - started)

            pid = pids.get(t.name)
            cpu_before = cpu_seconds(pid) if pid else 0.0
            began = time.perf_counter()
            gevent.joinall([gevent.spawn(client, conn) for conn in conns[t.name]], raise_error=True)
            into["seconds"] += time.perf_counter() - began
            into["cpu"] += cpu_seconds(pid) - cpu_before if pid else 0.0
    for t in targets:
        for conn in conns[t.name]:
            conn.close()
        into = result[t.name]
        into["rps"] = len(into["latencies"]) / into["seconds"]
        into["cpu_ms_per_request"] = ms(into["cpu"]) / len(into["latencies"]) if pids.get(t.name) else None
    return result
