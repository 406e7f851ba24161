"""Non-streaming requests (section `requests`): added latency, the p99 under load, requests/s, CPU.

Concurrency 1: direct, gateway and floor requests take turns, request by request, on keep-alive
connections, so drift hits all three alike; "added" is each one's p50 minus the direct p50 of the
same turns. Concurrency 64: 64 keep-alive connections per target, opened and used once beforehand;
closed loops in 1 s slices, the three targets taking turns slice by slice (3 rounds, order
rotating), each target's latencies pooled over its slices; the row is the p99 itself, compared with
the floor's (the direct p99 is shown, not subtracted: at this load it is the load generator's own
tail). CPU per request is the worker's user+system CPU during its slices over the requests it served.
"""

import json
import statistics

from bench.harness.client import PLAIN
from bench.harness.load import latencies_c1, load_c64
from bench.harness.stats import ms, percentile
from bench.harness.table import row, spread, verdict_at_least, verdict_at_most

SECTION = "requests"


def run(rig) -> dict:
    print("non-streaming requests: concurrency 1 and 64 ...", flush=True)
    return measure_requests(rig.cfg, rig.direct, rig.gateway, rig.floor, rig.pids)


def measure_requests(cfg, direct, gateway, floor, pids) -> dict:
    body = json.dumps(PLAIN).encode()
    runs = []
    for repeat in range(cfg["repeats"]):
        lat = latencies_c1([direct, gateway, floor], body, cfg["c1_requests"])
        d50 = percentile(lat["direct"], 50)
        c64 = load_c64([direct, gateway, floor], body, cfg["c64_rounds"], cfg["c64_seconds"], pids, rotate=repeat)
        d99 = percentile(c64["direct"]["latencies"], 99)
        run = {"direct_p50_ms_c1": ms(d50), "direct_p99_ms_c64": ms(d99), "direct_rps_c64": c64["direct"]["rps"]}
        for name in ("gateway", "floor"):
            run[name] = {
                "added_p50_ms_c1": ms(percentile(lat[name], 50) - d50),
                "added_p99_ms_c64": ms(percentile(c64[name]["latencies"], 99) - d99),  # + direct_p99_ms_c64: its p99
                "rps_c64": c64[name]["rps"],
                "cpu_ms_per_request": c64[name]["cpu_ms_per_request"],
            }
        runs.append(run)
        print(f"  repeat {repeat + 1}: c1 added p50 gateway {run['gateway']['added_p50_ms_c1']:.2f} / floor {run['floor']['added_p50_ms_c1']:.2f} ms; "
              f"c64 p99 gateway {run['gateway']['added_p99_ms_c64'] + ms(d99):.0f} / floor {run['floor']['added_p99_ms_c64'] + ms(d99):.0f} / direct {ms(d99):.0f} ms, "
              f"rps gateway {run['gateway']['rps_c64']:.0f} / floor {run['floor']['rps_c64']:.0f}", flush=True)
    return {"runs": runs}


def rows(section: dict, cfg: dict) -> list:
    med = statistics.median
    rows = []
    runs = section["runs"]
    g = lambda key: [x["gateway"][key] for x in runs]  # noqa: E731
    f = lambda key: [x["floor"][key] for x in runs]  # noqa: E731
    x = lambda v: f"{v:.2f}x"  # noqa: E731
    ratio = [a / b for a, b in zip(g("added_p50_ms_c1"), f("added_p50_ms_c1"))]
    rows.append(row("added latency p50, concurrency 1", f"{med(g('added_p50_ms_c1')):.2f} ms = {x(med(ratio))} floor",
                    spread(ratio, x), f"floor {med(f('added_p50_ms_c1')):.2f} ms (direct p50 {med(x_['direct_p50_ms_c1'] for x_ in runs):.2f} ms)",
                    "<= 1.2x floor", verdict_at_most(med(ratio), 1.2, x)))
    # The p99 itself, not minus the direct p99: at concurrency 64 that is the load generator's own
    # tail (tens of ms, from one slice to the next), and a difference of two percentiles
    # measured apart is no percentile of anything.
    g99 = [x_["gateway"]["added_p99_ms_c64"] + x_["direct_p99_ms_c64"] for x_ in runs]
    f99 = [x_["floor"]["added_p99_ms_c64"] + x_["direct_p99_ms_c64"] for x_ in runs]
    ratio = [a / b for a, b in zip(g99, f99)]
    rows.append(row("latency p99, concurrency 64", f"{med(g99):.0f} ms = {x(med(ratio))} floor", spread(ratio, x),
                    f"floor {med(f99):.0f} ms; direct {med(x_['direct_p99_ms_c64'] for x_ in runs):.0f} ms",
                    "<= 1.5x floor", verdict_at_most(med(ratio), 1.5, x)))
    pct = lambda v: f"{v:.0%}"  # noqa: E731
    ratio = [a / b for a, b in zip(g("rps_c64"), f("rps_c64"))]
    rows.append(row("requests/s, concurrency 64, one worker", f"{med(g('rps_c64')):.0f} = {pct(med(ratio))} of floor", spread(ratio, pct),
                    f"floor {med(f('rps_c64')):.0f}; direct {med(x_['direct_rps_c64'] for x_ in runs):.0f}", ">= 80% of floor",
                    verdict_at_least(med(ratio), 0.8, lambda v: f"{v * 100:.0f} points")))
    rows.append(row("worker CPU per non-stream request", f"{med(g('cpu_ms_per_request')):.2f} ms", spread(g("cpu_ms_per_request"), lambda v: f"{v:.2f}"),
                    f"floor {med(f('cpu_ms_per_request')):.2f} ms"))
    return rows
