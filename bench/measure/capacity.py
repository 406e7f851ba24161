"""Streams one worker holds at a model's pace (section `pace`): the capacity figure.

N streams of 100 events at 20/s (one every 50 ms; 5 s per answer), starts spread evenly over one
second; every 4th has a direct twin and added_i (as in relay.py) is taken over the twinned streams
(the others are load of the same kind, so the sample is unbiased). A level *holds* when every
stream completes and p99 of added_i is <= 50 ms. The first repeat starts at 1,000, goes two steps
(100) up while levels hold, halves while they do not, then bisects to a multiple of 50; later
repeats start where the previous one ended. The figure is the highest level that held. Each repeat
also runs 1,500 streams (if the search did not), and the second row compares gateway and floor
there. Gateway and floor take turns, level by level, in the same run. A level that missed while
other processes kept >= 0.25 cores busy is run once more and the second run counts (load from
elsewhere only adds delay, so a level that held despite it stands); the table says how many were.
Each level also records p99 by second of the run (the start-up second is usually the worst), the
relay worker's CPU per 1,000 events, and the cores other processes kept busy meanwhile.

The streams are opened by a client in a process of its own, on uvloop (bench/harness/paced_client.py):
at these levels the bench's own gevent client delayed events as much as the relay it measures.
"""

import statistics

import gevent

from bench.harness.table import row, spread, verdict_at_least, verdict_at_most
from bench.measure.relay import paced_run

SECTION = "pace"
PACE_INTERVAL_MS = 50  # 20 events per second: a real model's pace
PACE_SPREAD = 1.0  # seconds over which the paced streams start
PACE_TWIN_EVERY = 4
PACE_LIMIT_MS = 50.0  # the p99 added delay per event a level may have and still hold
PACE_TARGET = 1000  # streams per worker
PACE_COMPARE = 1500  # streams per worker where the gateway's p99 is held against the floor's
PACE_COMPARE_RATIO = 1.5  # ... and may be at most this many times the floor's
PACE_RESOLUTION = 50  # streams: the figure is a multiple of this
PACE_BUSY_CORES = 0.25  # a level that missed while other processes kept this many cores busy is run once more


def paced_model(cfg: dict) -> str:
    """The backend model of the paced streams (the bench config must list it)."""
    return f"stream-{cfg['pace_events']}-{PACE_INTERVAL_MS}"


def run(rig) -> dict:
    cfg = rig.cfg
    print(f"streams one worker holds at 20 events/s ({cfg['pace_events']} events each, starts over {PACE_SPREAD:g} s) ...", flush=True)
    return measure_pace(cfg, rig.direct, rig.gateway, rig.floor, rig.pids)


def next_level(tried: dict, start: int, step: int, top: int):
    """The next number of streams to try, or None when the answer is known to `step` (or is `top`).

    Nothing tried: `start`. No failure yet: two steps up. No success yet: halfway down to zero.
    Otherwise bisection, on multiples of `step`, between the highest level that held and the
    lowest above it that did not."""
    if not tried:
        return start
    held = [n for n, r in tried.items() if r["holds"]]
    lo = max(held, default=0)
    hi = min((n for n, r in tried.items() if not r["holds"] and n > lo), default=None)
    if hi is None:
        return min(lo + 2 * step, top) if lo < top else None
    if hi - lo <= step:
        return None
    return (lo + hi) // 2 // step * step


def level(cfg, target, direct, model, n, pid, repeat) -> dict:
    """One level: n paced streams through `target`, run once more if it missed while others were busy."""
    earlier = None
    while True:
        r = paced_run(target, direct, model, n, PACE_SPREAD, PACE_TWIN_EVERY, pid, client=cfg["pace_client"])
        r["holds"] = r["failed"] == 0 and r["completed"] == n and r["added_p99_ms"] <= PACE_LIMIT_MS
        failures = f", {r['failed']} failures: {'; '.join(r['failures'][:2])}" if r["failed"] else ""
        print(f"  repeat {repeat + 1}: {target.name} {n} streams: p99 added {r['added_p99_ms']:.1f} ms (p50 {r['added_p50_ms']:.1f}; "
              f"by second {', '.join(f'{v:.0f}' for v in r['added_p99_ms_by_second'])}), direct delay p99 {r['direct_delay_p99_ms']:.1f} ms, "
              f"{r['completed']}/{n} completed{failures}; others used {r['other_processes_cores']:.2f} cores: "
              f"{'holds' if r['holds'] else 'does not hold'}", flush=True)
        gevent.sleep(0.5)  # the previous level's connections close
        if r["holds"] or earlier is not None or r["other_processes_cores"] < PACE_BUSY_CORES:
            r["earlier_attempt"] = earlier
            return r
        # Other processes took this much CPU: a miss may be theirs, not the relay's. Once more.
        earlier = r


def measure_pace(cfg, direct, gateway, floor, pids) -> dict:
    model = f"stream-{cfg['pace_events']}-{PACE_INTERVAL_MS}"
    step = PACE_RESOLUTION
    repeats = []
    start = {"gateway": cfg["pace_start"], "floor": cfg["pace_start"]}
    for repeat in range(cfg["pace_repeats"]):
        levels = {"gateway": {}, "floor": {}}
        turn = 0
        while True:
            progressed = False
            for t in ((gateway, floor) if (turn + repeat) % 2 == 0 else (floor, gateway)):
                n = next_level(levels[t.name], start[t.name], step, cfg["pace_max"])
                if n is None:
                    continue
                progressed = True
                levels[t.name][n] = level(cfg, t, direct, model, n, pids[t.name], repeat)
            turn += 1
            if not progressed:
                break
        for t in ((gateway, floor) if repeat % 2 == 0 else (floor, gateway)):
            if cfg["pace_compare"] not in levels[t.name]:
                levels[t.name][cfg["pace_compare"]] = level(cfg, t, direct, model, cfg["pace_compare"], pids[t.name], repeat)
        result = {}
        for name, tried in levels.items():
            held = max((n for n, r in tried.items() if r["holds"]), default=0)
            result[name] = {"holds": held, "levels": {str(n): r for n, r in sorted(tried.items())}}
            start[name] = held or step  # later repeats start where this one ended: a step or two settles them
        repeats.append(result)
    return {"model": model, "runs": repeats}


def rows(section: dict, cfg: dict) -> list:
    med = statistics.median
    runs = section["runs"]
    g = [x["gateway"]["holds"] for x in runs]
    f = [x["floor"]["holds"] for x in runs]
    target, compare = cfg.get("pace_target", PACE_TARGET), cfg.get("pace_compare", PACE_COMPARE)

    def p99_at(name, n):
        return [x[name]["levels"][str(n)]["added_p99_ms"] for x in runs if str(n) in x[name]["levels"]]

    at_target = {name: p99_at(name, target) for name in ("gateway", "floor")}
    detail = "; ".join(f"{name} {med(v):.1f} ms" for name, v in at_target.items() if v) or "not tried"
    reruns = sum(1 for x in runs for name in ("gateway", "floor") for level in x[name]["levels"].values() if level.get("earlier_attempt"))
    detail += f"; {reruns} level(s) run twice (others busy)" if reruns else ""
    count = lambda v: f"{v:.0f}" if v else f"< {PACE_RESOLUTION}"  # noqa: E731
    table = [row(f"streams one worker holds at 20 events/s, p99 added <= {PACE_LIMIT_MS:g} ms",
                 count(med(g)), spread(g, count),
                 f"floor {count(med(f))}{' (' + spread(f, count) + ')' if len(f) > 1 else ''}; p99 added at {target}: {detail}",
                 f">= {target} streams", verdict_at_least(med(g), target, lambda v: f"{v:.0f} streams"))]
    gateway_p99, floor_p99 = p99_at("gateway", compare), p99_at("floor", compare)
    if gateway_p99 and floor_p99:
        ratio = med(gateway_p99) / med(floor_p99)
        ms_ = lambda v: f"{v:.1f} ms"  # noqa: E731
        table.append(row(f"p99 added per event at {compare} streams on one worker", ms_(med(gateway_p99)), spread(gateway_p99, ms_),
                         f"floor {ms_(med(floor_p99))}{' (' + spread(floor_p99, ms_) + ')' if len(floor_p99) > 1 else ''}: {ratio:.2f}x",
                         f"<= {PACE_COMPARE_RATIO:g}x floor", verdict_at_most(ratio, PACE_COMPARE_RATIO, lambda v: f"{v:.2f}x")))
    return table
