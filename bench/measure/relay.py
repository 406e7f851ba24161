"""Relay (section `relay`): the time the relay hop adds to each streamed event, against a direct twin.

The backend stamps every event with x_sent (just before its write) on CLOCK_MONOTONIC, which every
process on the machine shares. Each relayed stream has a *direct twin*: the same request, sent to the
backend directly in the same instant, with the same `x_start`, so the backend sends event i of both
at the same moment (x_start + i * interval). For each event i,

    added_i = (arrival via relay - x_sent_i) - (arrival direct - x_sent_i of the twin)

one well-defined number per event: the time the relay hop took beyond the direct path, with noise
that hits both paths at that moment (this process or the backend not being scheduled) cancelled.
The figure is the distribution of added_i over every event of every twin pair (p50, p99): a single
event can come out slightly negative, but percentiles of one distribution are always ordered. The
direct events' own delay (arrival - x_sent) is shown as the measurement's noise floor. 10 streams
of 300 events at 100 events/s, started 13 ms apart: 3,000 events per repeat, gateway and floor
in turns. Added time to the first event: the relay's first arrival minus its twin's. CPU per
1,000 relayed events: the worker's CPU during those runs over the events it relayed (one event per
read, as at a model's pace; the 10 requests are included), and separately with 40 streams of 500
events sent back to back, where reads and writes carry many events at once.

`paced_run` (twins, added_i, CPU per event) is also how section `pace` (capacity.py) and
bench/profile_worker.py drive their streams.
"""

import json
import statistics
import subprocess
import sys
import time

import gevent

from bench.harness.client import PLAIN, stamped_events
from bench.harness.paths import ROOT
from bench.harness.procfs import OtherLoad, cpu_seconds
from bench.harness.stats import ms, percentile
from bench.harness.table import row, spread, verdict_at_most

SECTION = "relay"


def run(rig) -> dict:
    cfg = rig.cfg
    print(f"relay: {cfg['relay_streams']} streams at 100 events/s, each with a direct twin ...", flush=True)
    return measure_relay(cfg, rig.direct, rig.gateway, rig.floor, rig.pids)


def paced_run(relay, direct, model: str, streams: int, spread: float, twin_every: int, pid=None, client="gevent") -> dict:
    """`streams` streams through `relay`, starts spread evenly over `spread` seconds; every
    `twin_every`-th has a direct twin with the same x_start. Per-event added delays of the twins;
    with the relay worker's `pid`, its CPU per 1,000 relayed events (their requests included).
    `client`: "gevent", this process's; "uvloop", a process of its own (bench/harness/paced_client.py)."""
    pairs, failures, relayed_events = [], [], [0]
    others = OtherLoad()
    cpu_before = cpu_seconds(pid) if pid else 0.0
    relayed_done = [0]

    def one(k):
        gevent.sleep(k * spread / streams)
        body = json.dumps({**PLAIN, "model": model, "stream": True, "x_start": time.monotonic_ns()}).encode()
        twin = k % twin_every == 0
        targets = [relay, direct] if twin else [relay]
        if k % 2:
            targets.reverse()  # neither path always asks first
        jobs = {t.name: gevent.spawn(stamped_events, t, body) for t in targets}
        gevent.joinall(list(jobs.values()))
        for name, job in jobs.items():
            if not job.successful():
                failures.append(f"{name}: {job.exception!r}")
        relay_job = jobs[relay.name]
        if relay_job.successful():
            relayed_events[0] += len(relay_job.value[0])
            relayed_done[0] += relay_job.value[1]
        if twin and all(j.successful() for j in jobs.values()):
            pairs.append((relay_job.value[0], jobs[direct.name].value[0]))

    began = time.monotonic_ns()
    if client == "uvloop":
        for stream in in_own_process(relay, direct, model, streams, spread, twin_every):
            failures.extend(stream.get("failures", ()))
            if "relay" in stream:
                relayed_events[0] += len(stream["relay"]["events"])
                relayed_done[0] += stream["relay"]["done"]
                if "direct" in stream:
                    pairs.append((stream["relay"]["events"], stream["direct"]["events"]))
    else:
        gevent.joinall([gevent.spawn(one, k) for k in range(streams)])
    cpu = cpu_seconds(pid) - cpu_before if pid else None
    other_cores = others.cores()
    added, direct_delay, relay_delay, first = [], [], [], []
    by_second = {}  # added delays by the second of the run in which the event was sent
    expected = int(model.split("-")[1])
    for relayed, straight in pairs:
        if len(relayed) != expected or len(straight) != expected:
            failures.append(f"a twin pair had {len(relayed)} and {len(straight)} of {expected} events")
            continue
        first.append((relayed[0][0] - straight[0][0]) / 1e6)
        for (r_at, r_sent), (d_at, d_sent) in zip(relayed, straight):
            r, d = (r_at - r_sent) / 1e6, (d_at - d_sent) / 1e6
            relay_delay.append(r)
            direct_delay.append(d)
            added.append(r - d)
            by_second.setdefault((d_sent - began) // 1_000_000_000, []).append(r - d)
    return {
        "streams": streams,
        "completed": relayed_done[0],
        "failures": failures[:5],
        "failed": len(failures),
        "events_measured": len(added),
        "added_p50_ms": percentile(added, 50),
        "added_p99_ms": percentile(added, 99),
        "direct_delay_p99_ms": percentile(direct_delay, 99),
        "relay_delay_p99_ms": percentile(relay_delay, 99),
        "added_first_event_ms": statistics.median(first) if first else float("nan"),
        "added_p99_ms_by_second": [round(percentile(by_second[k], 99), 2) for k in sorted(by_second)],
        "cpu_ms_per_1000_events": ms(cpu) / (relayed_events[0] / 1000) if pid and relayed_events[0] else None,
        "other_processes_cores": round(other_cores, 2),
    }


def in_own_process(relay, direct, model: str, streams: int, spread: float, twin_every: int) -> list:
    """paced_run's streams opened by bench/harness/paced_client.py: what it saw of each stream."""
    job = {"relay": ["127.0.0.1", relay.port, relay.stream_path], "direct": ["127.0.0.1", direct.port, direct.stream_path],
           "body": {**PLAIN, "model": model, "stream": True}, "streams": streams, "spread": spread, "twin_every": twin_every}
    done = subprocess.run([sys.executable, "-m", "bench.harness.paced_client", json.dumps(job)], cwd=ROOT,
                          capture_output=True, text=True, timeout=spread + 600)
    if done.returncode != 0:
        raise SystemExit(f"the paced client failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)["streams"]


def relay_cpu(target, pid: int, streams: int) -> float:
    """The worker's CPU per 1,000 relayed events, events as fast as they come."""
    body = json.dumps({**PLAIN, "model": "stream-500-0", "stream": True}).encode()
    before = cpu_seconds(pid)
    jobs = [gevent.spawn(stamped_events, target, body) for _ in range(streams)]
    gevent.joinall(jobs, raise_error=True)
    events = sum(len(j.value[0]) for j in jobs)
    return ms(cpu_seconds(pid) - before) / (events / 1000)


def measure_relay(cfg, direct, gateway, floor, pids) -> dict:
    runs = []
    for repeat in range(cfg["relay_repeats"]):
        run = {}
        for t in ((gateway, floor) if repeat % 2 == 0 else (floor, gateway)):
            run[t.name] = paced_run(t, direct, cfg["relay_model"], cfg["relay_streams"], 0.013 * cfg["relay_streams"], 1, pids[t.name])
            if run[t.name]["failed"]:
                raise SystemExit(f"relay {t.name}: {run[t.name]['failures']}")
        runs.append(run)
        print(f"  repeat {repeat + 1}: added per event p50/p99 gateway {run['gateway']['added_p50_ms']:.2f}/{run['gateway']['added_p99_ms']:.2f} ms, "
              f"floor {run['floor']['added_p50_ms']:.2f}/{run['floor']['added_p99_ms']:.2f} ms; direct delay p99 {run['gateway']['direct_delay_p99_ms']:.2f} ms",
              flush=True)
    burst = {t.name: [relay_cpu(t, pids[t.name], cfg["cpu_streams"]) for _ in range(cfg["repeats"])] for t in (gateway, floor)}
    return {"runs": runs, "cpu_ms_per_1000_events_back_to_back": burst}


def rows(section: dict, cfg: dict) -> list:
    med = statistics.median
    rows = []
    runs = section["runs"]
    g99 = [x["gateway"]["added_p99_ms"] for x in runs]
    g50 = [x["gateway"]["added_p50_ms"] for x in runs]
    noise = [x[name]["direct_delay_p99_ms"] for x in runs for name in ("gateway", "floor")]
    rows.append(row(f"relay: added delay per event p50 / p99 ({cfg['relay_streams']} streams, 100 events/s)",
                    f"{med(g50):.2f} / {med(g99):.2f} ms", f"p99 {spread(g99, lambda v: f'{v:.2f}')}" if len(g99) > 1 else "",
                    f"floor {med(x['floor']['added_p50_ms'] for x in runs):.2f} / {med(x['floor']['added_p99_ms'] for x in runs):.2f} ms; "
                    f"direct events' own delay p99 {med(noise):.2f} ms",
                    "p99 <= 1 ms", verdict_at_most(med(g99), 1.0, lambda v: f"{v:.2f} ms")))
    first = [x["gateway"]["added_first_event_ms"] for x in runs]
    rows.append(row("relay: added time to first event", f"{med(first):.2f} ms", spread(first, lambda v: f"{v:.2f}"),
                    f"floor {med(x['floor']['added_first_event_ms'] for x in runs):.2f} ms"))
    cpu = {name: [x[name]["cpu_ms_per_1000_events"] for x in runs] for name in ("gateway", "floor")}
    rows.append(row("worker CPU per 1,000 relayed events, one per read (100/s per stream, their requests included)",
                    f"{med(cpu['gateway']):.0f} ms", spread(cpu["gateway"], lambda v: f"{v:.0f}"), f"floor {med(cpu['floor']):.0f} ms"))
    cpu = section["cpu_ms_per_1000_events_back_to_back"]
    rows.append(row("worker CPU per 1,000 relayed events, back to back (500-event bursts)", f"{med(cpu['gateway']):.0f} ms",
                    spread(cpu["gateway"], lambda v: f"{v:.0f}"), f"floor {med(cpu['floor']):.0f} ms"))
    return rows
