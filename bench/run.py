"""`make bench`: what the gateway costs, against calling the backend directly and against a bare floor.

    python bench/run.py [--check] [--quick] [--only SECTION,...]

What runs: the fast test backend (bench/backend.py); the gateway (wsgi:app) under gunicorn with
this repository's gunicorn.conf.py and ONE worker; the bare floor (bench/floor.py: the least a
Flask + requests view can do to relay a request or a stream) under the same settings; and this
process, the load generator (gevent, http.client). All of them share the machine's cores, and so
does anything else running on it: the header line says how many cores other processes kept busy.

How each figure is measured
---------------------------
Non-streaming (section `requests`). Concurrency 1: direct, gateway and floor requests take turns,
request by request, on keep-alive connections, so drift hits all three alike; "added" is each one's
p50 minus the direct p50 of the same turns. Concurrency 64: 64 keep-alive connections per target,
opened and used once beforehand; closed loops in 1 s slices, the three targets taking turns slice
by slice (3 rounds, order rotating), each target's latencies pooled over its slices; the row is
the p99 itself, compared with the floor's (the direct p99 is shown, not subtracted: at this load it
is the load generator's own tail). CPU per request is the worker's user+system CPU during its
slices over the requests it served.

Relay (section `relay`). The backend stamps every event with x_sent (just before its write) on
CLOCK_MONOTONIC, which every process on the machine shares. Each relayed stream has a *direct twin*:
the same request, sent to the backend directly in the same instant, with the same `x_start`, so the
backend sends event i of both at the same moment (x_start + i * interval). For each event i,

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

Streams one worker holds at a model's pace (section `pace`). N streams of 100 events at 20/s (one
every 50 ms; 5 s per answer), starts spread evenly over one second; every 4th has a direct twin and
added_i is taken over the twinned streams (the others are load of the same kind, so the sample is
unbiased). A level *holds* when every stream completes and p99 of added_i is <= 50 ms. The first
repeat starts at 500, goes two steps (100) up while levels hold, halves while they do not, then
bisects to a multiple of 50; later repeats start where the previous one ended. The figure is the
highest level that held. Gateway and floor take turns, level by level, in the same run. A level
that missed while other processes kept >= 0.25 cores busy is run once more and the second run
counts (load from elsewhere only adds delay, so a level that held despite it stands); the table
says how many were. Each
level also records p99 by second of the run (the start-up second is usually the worst), the
relay worker's CPU per 1,000 events, and the cores other processes kept busy meanwhile.

Fresh worker (section `fresh`), once per repeat on a gateway started for it. First, with its worker
booted and idle (no request served; its CPU time has stopped growing), two streamed requests one
after the other, each on a new connection, timed from request to [DONE]; the figure is the first
minus the second. Then memory: resident memory with 1,000 streams open (6 events, 1 s apart) minus
resident memory before, per stream (socket buffers are kernel memory, not in it). Then keep-alives:
1,000 streams on a non-streaming backend that thinks 4.5 s, heartbeat 1 s; lateness is each
keep-alive's gap after the previous one minus 1 s, counted once all 1,000 are open. A fresh gateway
each time, because a worker keeps the memory it once used: a second 1,000-stream run on the same
worker would reuse it and under-report.

Tools (section `tools`): the extra p50 a 26 KB Open WebUI body with 36 tools adds over a plain chat.

Shared limits (section `redis`): a second gateway, the same config plus `redis_url` (a throwaway
redis-server on loopback, persistence off), [limits] on and `global_max_concurrency` on the backend,
all far from refusing: each request then checks its user's window, takes and gives back a global
lease, and counts its tokens in Redis. Concurrency 1, direct, gateway and gateway-with-Redis
requests taking turns; the figure is the p50 with Redis minus the p50 without. Skipped when
redis-server is not installed.

Each section is repeated; a row's figure is the median of its repeats and the spread (min to max)
is printed beside it. Rows with a target print `met` or `missed by X`; with --check the exit status
is 1 when any target is missed. Results go to bench/out/results.json (ignored by git), with every
repeat and level; the README's Performance table is the record (--table FILE prints a results
file's table again, with this version's rows). --quick (or BENCH_QUICK=1) runs
small sizes (one repeat, 200 streams, paced streams of 20 events) for development and smoke tests:
its verdicts are indicative only.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
from gevent.pool import Pool  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "results.json"
BIN = Path(sys.executable).parent
HEARTBEAT = 1.0
TOOLS_FIXTURE = ROOT / "tests" / "fixtures" / "openwebui" / "06_chat_stream_native_builtin_tools_v0124_default_admin.json"
PLAIN = {"model": "plain", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}]}
SECTIONS = ("requests", "relay", "tools", "pace", "fresh", "redis")

FULL = {
    "repeats": 3,  # requests, tools, fresh
    "c1_requests": 300,
    "c64_rounds": 3,
    "c64_seconds": 1.0,
    "relay_repeats": 5,
    "relay_streams": 10,
    "relay_model": "stream-300-10",  # 300 events, 100 per second: 3,000 events per repeat for a steadier p99
    "cpu_streams": 40,
    "tools_requests": 200,
    "capacity_streams": 1000,
    "pace_repeats": 3,
    "pace_events": 100,
    "pace_start": 500,
    "pace_max": 1000,
}
QUICK = {
    **FULL,
    "repeats": 1,
    "c1_requests": 50,
    "c64_rounds": 1,
    "relay_repeats": 1,
    "cpu_streams": 10,
    "tools_requests": 40,
    "capacity_streams": 200,
    "pace_repeats": 1,
    "pace_events": 20,
    "pace_start": 100,
    "pace_max": 200,
}
PACE_INTERVAL_MS = 50  # 20 events per second: a real model's pace
PACE_SPREAD = 1.0  # seconds over which the paced streams start
PACE_TWIN_EVERY = 4
PACE_LIMIT_MS = 50.0  # the p99 added delay per event a level may have and still hold
PACE_TARGET = 500  # streams per worker
PACE_RESOLUTION = 50  # streams: the figure is a multiple of this
PACE_BUSY_CORES = 0.25  # a level that missed while other processes kept this many cores busy is run once more

# --- processes --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, process, what, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            gevent.sleep(0.05)
    raise SystemExit(f"{what} did not start listening in {timeout} s")


def gunicorn(app: str, port: int, env: dict, workdir: Path, label: str) -> subprocess.Popen:
    environ = {**os.environ, **env, "GATEWAY_BIND": f"127.0.0.1:{port}", "GATEWAY_WORKERS": "1", "PYTHONPATH": str(ROOT),
               "GATEWAY_LOG_LEVEL": "warning"}
    log = open(workdir / f"{label}.log", "wb")
    return subprocess.Popen([str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), app], cwd=workdir, env=environ,
                            stdout=log, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def worker_pid(master: subprocess.Popen) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = open(f"/proc/{master.pid}/task/{master.pid}/children").read().split()
        if children:
            return int(children[0])
        gevent.sleep(0.05)
    raise SystemExit("no gunicorn worker")


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _busy_seconds() -> float:
    """CPU time the whole machine has spent busy (steal included: time another guest took)."""
    fields = [int(v) for v in open("/proc/stat").readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _ours_seconds() -> float:
    """CPU time of this process and every live descendant (the backend, gunicorn masters and workers)."""
    total, todo = 0.0, [os.getpid()]
    while todo:
        pid = todo.pop()
        try:
            total += cpu_seconds(pid)
            todo += [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]
        except (OSError, ValueError):
            pass
    return total


class OtherLoad:
    """How many cores processes other than the benchmark's kept busy between start() and cores()."""

    def __init__(self):
        self.start()

    def start(self):
        self._at, self._busy, self._ours = time.monotonic(), _busy_seconds(), _ours_seconds()

    def cores(self) -> float:
        elapsed = time.monotonic() - self._at
        return max(0.0, (_busy_seconds() - self._busy) - (_ours_seconds() - self._ours)) / elapsed


def wait_idle(pid: int, quiet=0.5, timeout=60) -> None:
    """Until the worker has booted: its CPU time has grown, then stayed put for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last, still_since = cpu_seconds(pid), None
    while time.monotonic() < deadline:
        gevent.sleep(0.1)
        now = cpu_seconds(pid)
        if now != last or now < 0.05:
            last, still_since = now, None
        elif still_since is None:
            still_since = time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            return
    raise SystemExit("the fresh gateway worker did not settle")


# --- the client ---------------------------------------------------------------------------------------


class Target:
    def __init__(self, name, port, path, stream_path=None):
        self.name, self.port, self.path, self.stream_path = name, port, path, stream_path or path

    def connection(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)


def post(conn, target, body: bytes) -> bytes:
    conn.request("POST", target.path, body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"{target.name}: HTTP {response.status}: {data[:200]!r}")
    return data


def stream(conn, target, body: bytes, on_item):
    """Reads one SSE answer; calls on_item(kind, payload, received_at) for each event and comment."""
    conn.request("POST", target.stream_path, body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"{target.name}: HTTP {response.status}: {response.read()[:200]!r}")
    buffer = b""
    while True:
        data = response.read1(65536)
        if not data:
            break
        now = time.monotonic()
        buffer += data
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            if block.startswith(b":"):
                on_item("comment", block, now)
            elif block.startswith(b"data: "):
                on_item("data", block[6:], now)
    if not buffer == b"":
        raise RuntimeError(f"{target.name}: stream ended inside an event")


def stamped_events(target, body: bytes) -> tuple:
    """One streamed request on a new connection: ([(arrival_ns, x_sent_ns)] per stamped event, saw [DONE]).

    Lean on purpose: with a thousand streams open this process must read faster than the relay."""
    conn = target.connection()
    events, done, buffer = [], False, b""
    try:
        conn.request("POST", target.stream_path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"{target.name}: HTTP {response.status}: {response.read()[:200]!r}")
        read = response.read1
        while True:
            data = read(65536)
            if not data:
                break
            now = time.monotonic_ns()
            buffer += data
            cut = buffer.find(b"\n\n")
            while cut >= 0:
                block, buffer = buffer[:cut], buffer[cut + 2:]
                at = block.rfind(b',"x_sent":')
                if at >= 0:
                    events.append((now, int(block[at + 10:-1])))
                elif block == b"data: [DONE]":
                    done = True
                cut = buffer.find(b"\n\n")
    finally:
        conn.close()
    return events, done


def percentile(values, q):
    values = sorted(values)
    if not values:
        return float("nan")
    index = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[index]


def ms(seconds):
    return seconds * 1000


# --- non-streaming ----------------------------------------------------------------------------------------


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


# --- relay: twins -------------------------------------------------------------------------------------------


def paced_run(relay, direct, model: str, streams: int, spread: float, twin_every: int, pid=None) -> dict:
    """`streams` streams through `relay`, starts spread evenly over `spread` seconds; every
    `twin_every`-th has a direct twin with the same x_start. Per-event added delays of the twins;
    with the relay worker's `pid`, its CPU per 1,000 relayed events (their requests included)."""
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


# --- streams one worker holds at a model's pace ----------------------------------------------------------------


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
                earlier = None
                while True:
                    r = paced_run(t, direct, model, n, PACE_SPREAD, PACE_TWIN_EVERY, pids[t.name])
                    r["holds"] = r["failed"] == 0 and r["completed"] == n and r["added_p99_ms"] <= PACE_LIMIT_MS
                    failures = f", {r['failed']} failures: {'; '.join(r['failures'][:2])}" if r["failed"] else ""
                    print(f"  repeat {repeat + 1}: {t.name} {n} streams: p99 added {r['added_p99_ms']:.1f} ms (p50 {r['added_p50_ms']:.1f}; "
                          f"by second {', '.join(f'{v:.0f}' for v in r['added_p99_ms_by_second'])}), direct delay p99 {r['direct_delay_p99_ms']:.1f} ms, "
                          f"{r['completed']}/{n} completed{failures}; others used {r['other_processes_cores']:.2f} cores: "
                          f"{'holds' if r['holds'] else 'does not hold'}", flush=True)
                    gevent.sleep(0.5)  # the previous level's connections close
                    if r["holds"] or earlier is not None or r["other_processes_cores"] < PACE_BUSY_CORES:
                        break
                    # Other processes took this much CPU: a miss may be theirs, not the relay's. Once more.
                    earlier = r
                r["earlier_attempt"] = earlier
                levels[t.name][n] = r
            turn += 1
            if not progressed:
                break
        result = {}
        for name, tried in levels.items():
            held = max((n for n, r in tried.items() if r["holds"]), default=0)
            result[name] = {"holds": held, "levels": {str(n): r for n, r in sorted(tried.items())}}
            start[name] = held or step  # later repeats start where this one ended: a step or two settles them
        repeats.append(result)
    return {"model": model, "runs": repeats}


# --- a fresh worker: warm-up, memory, keep-alives ----------------------------------------------------------------


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


def measure_fresh(cfg, env, workdir) -> dict:
    runs = []
    for repeat in range(cfg["repeats"]):
        port = free_port()
        process = gunicorn("wsgi:app", port, env, workdir, f"gateway-fresh-{repeat + 1}")
        try:
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
        finally:
            stop(process)
    return {"runs": runs}


# --- tools ---------------------------------------------------------------------------------------------------


def measure_tools(cfg, direct, gateway) -> dict:
    tools = json.loads(TOOLS_FIXTURE.read_text())
    tools_body = json.dumps({**tools, "model": "plain", "stream": False}).encode()
    plain_body = json.dumps(PLAIN).encode()
    extra = []
    for _ in range(cfg["repeats"]):
        plain = latencies_c1([direct, gateway], plain_body, cfg["tools_requests"])
        big = latencies_c1([direct, gateway], tools_body, cfg["tools_requests"])
        added_plain = percentile(plain["gateway"], 50) - percentile(plain["direct"], 50)
        added_big = percentile(big["gateway"], 50) - percentile(big["direct"], 50)
        extra.append(ms(added_big - added_plain))
    return {"extra_p50_ms": extra, "bytes": len(tools_body)}


def redis_server(port: int, workdir: Path):
    """A throwaway redis-server on loopback (section `redis`), or None when it is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    log = open(workdir / "redis.log", "wb")
    return subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                            stdout=log, stderr=subprocess.STDOUT)


def shared_limits_config(config: str, redis_port: int) -> str:
    """The bench config with Redis-shared limits on, all far from refusing."""
    config = config.replace("[gateway]\n", f'[gateway]\nredis_url = "redis://127.0.0.1:{redis_port}/0"\n', 1)
    config = config.replace("max_concurrency = 4000\nread_timeout", "max_concurrency = 4000\nglobal_max_concurrency = 1000000\nread_timeout", 1)
    return config + "\n[limits]\nper_user_requests_per_minute = 1000000000\nper_user_tokens_per_minute = 1000000000\n"


def measure_redis(cfg, direct, gateway, shared) -> dict:
    body = json.dumps(PLAIN).encode()
    runs = []
    for repeat in range(cfg["repeats"]):
        lat = latencies_c1([direct, gateway, shared], body, cfg["c1_requests"])
        run = {name: ms(percentile(lat[name], 50)) for name in ("direct", "gateway", "shared")}
        run["added_p50_ms"] = run["shared"] - run["gateway"]
        runs.append(run)
        print(f"  repeat {repeat + 1}: p50 gateway {run['gateway']:.2f} ms, with Redis {run['shared']:.2f} ms: +{run['added_p50_ms']:.2f} ms", flush=True)
    return {"runs": runs}


# --- the run ---------------------------------------------------------------------------------------------


def bench_config(backend_url: str, models) -> str:
    entries = "".join(f'\n[[models]]\nid = "{m}"\nbackend = "{"thinking" if m.startswith("slow-") else "fast"}"\n' for m in models)
    return f"""
[gateway]
heartbeat_seconds = {HEARTBEAT}

[backends.fast]
url = "{backend_url}"
streaming = true
max_concurrency = 4000
read_timeout = 60

[backends.thinking]
url = "{backend_url}"
streaming = false
max_concurrency = 4000
{entries}"""


def machine() -> dict:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when any target is missed")
    parser.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK", "") not in ("", "0"),
                        help="small sizes for development (also BENCH_QUICK=1)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {', '.join(SECTIONS)}")
    parser.add_argument("--table", metavar="RESULTS_JSON", help="print the table of an earlier run's results file; measure nothing")
    args = parser.parse_args(argv)
    if args.table:
        results = json.loads(Path(args.table).read_text())
        rows = table(results, results["settings"])
        print_table(results, rows)
        return 1 if args.check and any(row["ok"] is False for row in rows) else 0
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    cfg = QUICK if args.quick else FULL

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))  # children inherit it
    workdir = Path(tempfile.mkdtemp(prefix="llm-gateway-bench-"))
    ports = {name: free_port() for name in ("backend", "gateway", "floor", "redis", "shared")}
    backend_url = f"http://127.0.0.1:{ports['backend']}/v1/chat/completions"
    models = ["plain", cfg["relay_model"], "stream-500-0", "stream-5-0", "stream-6-1000", "slow-4500", f"stream-{cfg['pace_events']}-{PACE_INTERVAL_MS}"]
    (workdir / "bench.toml").write_text(bench_config(backend_url, models))
    gateway_env = {"GATEWAY_CONFIG": str(workdir / "bench.toml")}
    processes = []
    results = {"machine": machine(), "quick": args.quick, "settings": cfg, "sections": only}
    started = time.monotonic()
    try:
        backend = subprocess.Popen([sys.executable, str(ROOT / "bench" / "backend.py"), str(ports["backend"])])
        processes.append(backend)
        gateway = gunicorn("wsgi:app", ports["gateway"], gateway_env, workdir, "gateway")
        floor = gunicorn("bench.floor:app", ports["floor"], {**gateway_env, "BENCH_BACKEND_URL": backend_url}, workdir, "floor")
        processes += [gateway, floor]
        for name, process in (("backend", backend), ("gateway", gateway), ("floor", floor)):
            wait_listening(ports[name], process, name)
        pids = {"gateway": worker_pid(gateway), "floor": worker_pid(floor)}
        direct = Target("direct", ports["backend"], "/v1/chat/completions")
        via_gateway = Target("gateway", ports["gateway"], "/v1/chat/completions")
        via_floor = Target("floor", ports["floor"], "/v1/chat/completions", "/stream")
        gevent.sleep(1)

        others = OtherLoad()
        if "requests" in only:
            print("non-streaming requests: concurrency 1 and 64 ...", flush=True)
            results["requests"] = measure_requests(cfg, direct, via_gateway, via_floor, pids)
        if "relay" in only:
            print(f"relay: {cfg['relay_streams']} streams at 100 events/s, each with a direct twin ...", flush=True)
            results["relay"] = measure_relay(cfg, direct, via_gateway, via_floor, pids)
        if "tools" in only:
            print("36-tool Open WebUI body ...", flush=True)
            results["tools"] = measure_tools(cfg, direct, via_gateway)
        if "pace" in only:
            print(f"streams one worker holds at 20 events/s ({cfg['pace_events']} events each, starts over {PACE_SPREAD:g} s) ...", flush=True)
            results["pace"] = measure_pace(cfg, direct, via_gateway, via_floor, pids)
        if "fresh" in only:
            print(f"fresh gateways: first streamed requests, then {cfg['capacity_streams']:,} streams ...", flush=True)
            results["fresh"] = measure_fresh(cfg, gateway_env, workdir)
        if "redis" in only:
            redis = redis_server(ports["redis"], workdir)
            if redis is None:
                print("shared limits: redis-server is not installed (apt-get install redis-server): skipped", flush=True)
            else:
                print("shared limits: the same gateway with Redis, concurrency 1 ...", flush=True)
                processes.append(redis)
                wait_listening(ports["redis"], redis, "redis-server")
                (workdir / "shared.toml").write_text(shared_limits_config(bench_config(backend_url, models), ports["redis"]))
                shared = gunicorn("wsgi:app", ports["shared"], {"GATEWAY_CONFIG": str(workdir / "shared.toml")}, workdir, "gateway-redis")
                processes.append(shared)
                wait_listening(ports["shared"], shared, "gateway with Redis")
                results["redis"] = measure_redis(cfg, direct, via_gateway, Target("shared", ports["shared"], "/v1/chat/completions"))
                import redis as redis_client  # only here: the rest of the bench never needs it

                with redis_client.Redis(port=ports["redis"]) as check:  # the figure means nothing unless Redis was used
                    if not check.keys("llm-gateway:user:*"):
                        raise SystemExit("the gateway with Redis kept nothing in it: the shared-limits figure would be wrong")
        results["machine"]["other_processes_cores"] = round(others.cores(), 2)
    finally:
        for process in reversed(processes):
            stop(process)
    results["machine"]["seconds"] = round(time.monotonic() - started, 1)
    rows = table(results, cfg)
    results["rows"] = rows
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results, rows)
    missed = [row["figure"] for row in rows if row["ok"] is False]
    print(f"\nwritten to {OUT.relative_to(ROOT)}; logs in {workdir}")
    if missed:
        print(f"{len(missed)} target(s) missed: {'; '.join(missed)}")
    if args.check and missed:
        return 1
    return 0


# --- the table ------------------------------------------------------------------------------------------------


def spread(values, fmt) -> str:
    return f"{fmt(min(values))} to {fmt(max(values))}" if len(values) > 1 else ""


def _miss(amount, unit_fmt) -> str:
    """`unit_fmt(amount)`, unless that rounds to zero: then the amount with the digits it needs."""
    text = unit_fmt(amount)
    if any(c in "123456789" for c in text.split(" ")[0]):
        return text
    return unit_fmt(0).replace(unit_fmt(0).split(" ")[0].rstrip("x%"), f"{amount:.2g}", 1)


def verdict_at_most(value, limit, unit_fmt) -> tuple:
    return (True, "met") if value <= limit else (False, f"missed by {_miss(value - limit, unit_fmt)}")


def verdict_at_least(value, limit, unit_fmt) -> tuple:
    return (True, "met") if value >= limit else (False, f"missed by {_miss(limit - value, unit_fmt)}")


def row(figure, value, spread_text="", compared="", target="", verdict=(None, "")) -> dict:
    return {"figure": figure, "gateway": value, "spread": spread_text, "compared": compared, "target": target, "ok": verdict[0], "verdict": verdict[1]}


def table(r, cfg) -> list:
    med = statistics.median
    rows = []
    if "requests" in r:
        runs = r["requests"]["runs"]
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
    if "relay" in r:
        runs = r["relay"]["runs"]
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
        cpu = r["relay"]["cpu_ms_per_1000_events_back_to_back"]
        rows.append(row("worker CPU per 1,000 relayed events, back to back (500-event bursts)", f"{med(cpu['gateway']):.0f} ms",
                        spread(cpu["gateway"], lambda v: f"{v:.0f}"), f"floor {med(cpu['floor']):.0f} ms"))
    if "pace" in r:
        runs = r["pace"]["runs"]
        g = [x["gateway"]["holds"] for x in runs]
        f = [x["floor"]["holds"] for x in runs]
        at_target = {name: [x[name]["levels"][str(PACE_TARGET)]["added_p99_ms"] for x in runs if str(PACE_TARGET) in x[name]["levels"]]
                     for name in ("gateway", "floor")}
        detail = "; ".join(f"{name} {med(v):.1f} ms" for name, v in at_target.items() if v) or "not tried"
        reruns = sum(1 for x in runs for name in ("gateway", "floor") for level in x[name]["levels"].values() if level.get("earlier_attempt"))
        detail += f"; {reruns} level(s) run twice (others busy)" if reruns else ""
        count = lambda v: f"{v:.0f}" if v else f"< {PACE_RESOLUTION}"  # noqa: E731
        rows.append(row(f"streams one worker holds at 20 events/s, p99 added <= {PACE_LIMIT_MS:g} ms",
                        count(med(g)), spread(g, count),
                        f"floor {count(med(f))}{' (' + spread(f, count) + ')' if len(f) > 1 else ''}; p99 added at {PACE_TARGET}: {detail}",
                        f">= {PACE_TARGET} streams", verdict_at_least(med(g), PACE_TARGET, lambda v: f"{v:.0f} streams")))
    if "fresh" in r:
        runs = r["fresh"]["runs"]
        n = cfg["capacity_streams"]
        warm = [x["first_minus_second_ms"] for x in runs]
        rows.append(row("fresh worker: first streamed request minus the second", f"{med(warm):.1f} ms", spread(warm, lambda v: f"{v:.1f}"),
                        f"first {med(x['first_request_ms'] for x in runs):.1f} ms, second {med(x['second_request_ms'] for x in runs):.1f} ms",
                        "<= 20 ms", verdict_at_most(med(warm), 20.0, lambda v: f"{v:.1f} ms")))
        done = [x["completed"] for x in runs]
        rows.append(row(f"{n:,} concurrent streams on one worker: completed", f"{min(done):,} of {n:,}" + (" (worst run)" if len(runs) > 1 else "")))
        mem = [x["rss_per_stream_kib"] for x in runs]
        rows.append(row("resident memory per open stream", f"{med(mem):.1f} KiB", spread(mem, lambda v: f"{v:.1f}"), f"{n:,} streams open",
                        "<= 64 KiB", verdict_at_most(med(mem), 64.0, lambda v: f"{v:.1f} KiB")))
        late = [x["late_p99_ms"] for x in runs]
        rows.append(row(f"keep-alive lateness p99, {n:,} built streams", f"{med(late):.1f} ms", spread(late, lambda v: f"{v:.1f}"),
                        f"heartbeat {HEARTBEAT:g} s; {med(x['keepalives_measured'] for x in runs):.0f} keep-alives with all open",
                        "<= 100 ms", verdict_at_most(med(late), 100.0, lambda v: f"{v:.1f} ms")))
        first = [x["first_late_p99_ms"] for x in runs]
        rows.append(row(f"first keep-alive lateness p99, {n:,} arriving at once", f"{med(first):.0f} ms", spread(first, lambda v: f"{v:.0f}"),
                        "includes admitting the burst"))
    if "redis" in r:
        runs = r["redis"]["runs"]
        added = [x["added_p50_ms"] for x in runs]
        rows.append(row("Redis-shared limits ([limits] + global_max_concurrency): added p50, concurrency 1", f"{med(added):.2f} ms",
                        spread(added, lambda v: f"{v:.2f}"), f"same gateway without Redis: p50 {med(x['gateway'] for x in runs):.2f} ms",
                        "<= 1 ms", verdict_at_most(med(added), 1.0, lambda v: f"{v:.2f} ms")))
    if "tools" in r:
        extra = r["tools"]["extra_p50_ms"]
        rows.append(row("36-tool Open WebUI body: extra added p50", f"{med(extra):.2f} ms", spread(extra, lambda v: f"{v:.2f}"),
                        f"{r['tools']['bytes']:,} bytes vs a plain chat"))
    return rows


def print_table(r, rows) -> None:
    m = r["machine"]
    head = ("figure", "gateway (median)", "spread (min to max)", "compared with", "target", "verdict")
    cells = [head] + [(x["figure"], x["gateway"], x["spread"], x["compared"], x["target"], x["verdict"]) for x in rows]
    width = [max(len(c[i]) for c in cells) for i in range(len(head))]
    print()
    print(f"llm-gateway benchmark{' (QUICK: small sizes, verdicts indicative only)' if r['quick'] else ''}: {m['date']}, {m['cpu']}, "
          f"{m['cores']} cores, Python {m['python']}; {m['seconds']} s; other processes kept {m.get('other_processes_cores', float('nan')):.2f} cores busy on average")
    for c in cells:
        print("  ".join(cell.ljust(width[i]) for i, cell in enumerate(c)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
