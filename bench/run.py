"""`make bench`: what the gateway costs, measured against calling the backend directly.

Starts the fast test backend (bench/backend.py), the gateway under gunicorn with the production
gunicorn.conf.py and one worker, and the bare floor (bench/floor.py) under the same settings;
then drives all three from this process (gevent, http.client, keep-alive connections). Our
machines are noisy, so every figure is a difference or a ratio against the direct call measured
in the same run, interleaved, and each is the median of REPEATS repeats. Prints one table and
writes bench/out/results.json (ignored by git: the README's table is the record).
"""

from gevent import monkey

monkey.patch_all()

import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
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
REPEATS = 3
HEARTBEAT = 1.0
TOOLS_FIXTURE = ROOT / "tests" / "fixtures" / "openwebui" / "06_chat_stream_native_builtin_tools_v0124_default_admin.json"
PLAIN = {"model": "plain", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}]}


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


def gunicorn(app: str, port: int, env: dict, workdir: Path) -> subprocess.Popen:
    environ = {**os.environ, **env, "GATEWAY_BIND": f"127.0.0.1:{port}", "GATEWAY_WORKERS": "1", "PYTHONPATH": str(ROOT),
               "GATEWAY_LOG_LEVEL": "warning"}
    log = open(workdir / f"{app.split(':')[0]}.log", "wb")
    return subprocess.Popen([str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), app], cwd=workdir, env=environ,
                            stdout=log, stderr=subprocess.STDOUT)


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


# --- the client ---------------------------------------------------------------------------------------


class Target:
    def __init__(self, name, port, path):
        self.name, self.port, self.path = name, port, path

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
    conn.request("POST", target.path, body=body, headers={"Content-Type": "application/json"})
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


def percentile(values, q):
    values = sorted(values)
    if not values:
        return float("nan")
    index = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[index]


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
    return result


def load(target, body: bytes, concurrency: int, seconds: float) -> tuple:
    """`concurrency` clients in closed loops for `seconds`: (latencies, requests per second)."""
    latencies = []
    deadline = time.perf_counter() + seconds

    def client():
        conn = target.connection()
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            post(conn, target, body)
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    gevent.joinall([gevent.spawn(client) for _ in range(concurrency)], raise_error=True)
    return latencies, len(latencies) / (time.perf_counter() - began)


# --- measurements ---------------------------------------------------------------------------------------


def ms(seconds):
    return seconds * 1000


def measure_non_streaming(direct, gateway, floor) -> dict:
    body = json.dumps(PLAIN).encode()
    c1 = {"gateway": [], "floor": []}
    c64 = {"gateway_p99": [], "floor_p99": [], "gateway_rps": [], "floor_rps": [], "direct_rps": []}
    for _ in range(REPEATS):
        lat = latencies_c1([direct, gateway, floor], body, 300)
        d50 = percentile(lat["direct"], 50)
        c1["gateway"].append(ms(percentile(lat["gateway"], 50) - d50))
        c1["floor"].append(ms(percentile(lat["floor"], 50) - d50))
        runs = {t.name: load(t, body, 64, 3.0) for t in (direct, gateway, floor)}
        d99 = percentile(runs["direct"][0], 99)
        c64["gateway_p99"].append(ms(percentile(runs["gateway"][0], 99) - d99))
        c64["floor_p99"].append(ms(percentile(runs["floor"][0], 99) - d99))
        for name in ("gateway", "floor", "direct"):
            c64[f"{name}_rps"].append(runs[name][1])
    median = statistics.median
    return {
        "added_p50_ms_c1": {"gateway": median(c1["gateway"]), "floor": median(c1["floor"])},
        "added_p99_ms_c64": {"gateway": median(c64["gateway_p99"]), "floor": median(c64["floor_p99"])},
        "rps_c64_one_worker": {"gateway": median(c64["gateway_rps"]), "floor": median(c64["floor_rps"]), "direct": median(c64["direct_rps"])},
    }


def stream_delays(target, model, streams: int) -> tuple:
    """Per event: receive time minus the backend's send time; and the time to the first event."""
    body = json.dumps({**PLAIN, "model": model, "stream": True}).encode()
    delays, firsts = [], []

    def one(offset):
        gevent.sleep(offset)  # streams of different users do not start in the same millisecond
        conn = target.connection()
        started = time.monotonic()
        wall_offset = time.time() - time.monotonic()
        seen = []

        def on_item(kind, payload, at):
            if kind == "data" and b'"x_sent"' in payload:
                sent = float(payload.rsplit(b'"x_sent":', 1)[1].rstrip(b"}"))
                seen.append((at + wall_offset) - sent)
                if len(seen) == 1:
                    firsts.append(at - started)

        stream(conn, target, body, on_item)
        delays.extend(seen)

    gevent.joinall([gevent.spawn(one, i * 0.0013) for i in range(streams)], raise_error=True)
    return delays, firsts


def measure_streaming(direct, gateway, worker: int) -> dict:
    added_first, added_p50, added_p99 = [], [], []
    for _ in range(REPEATS):
        results = {t.name: stream_delays(t, "stream-100-10", 10) for t in (direct, gateway)}
        d_delays, d_first = results["direct"]
        g_delays, g_first = results["gateway"]
        added_first.append(ms(statistics.median(g_first) - statistics.median(d_first)))
        added_p50.append(ms(percentile(g_delays, 50) - percentile(d_delays, 50)))
        added_p99.append(ms(percentile(g_delays, 99) - percentile(d_delays, 99)))
    # CPU of the gateway's worker per 1,000 relayed events, with events as fast as they come
    before = cpu_seconds(worker)
    events = 0
    for _ in range(REPEATS):
        delays, _ = stream_delays(gateway, "stream-500-0", 40)
        events += len(delays)
    cpu = cpu_seconds(worker) - before
    median = statistics.median
    return {
        "added_first_event_ms": median(added_first),
        "added_event_delay_p50_ms": median(added_p50),
        "added_event_delay_p99_ms": median(added_p99),
        "cpu_ms_per_1000_events": ms(cpu) / (events / 1000),
    }


def measure_capacity(gateway, worker: int, streams=1000) -> dict:
    gevent.sleep(1)
    idle = rss_bytes(worker)
    open_now = [0]
    peak = [idle]
    completed = [0]
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

    # built streams: a non-streaming backend thinking 3.5 s; keep-alives due every HEARTBEAT.
    # Lateness is each keep-alive's gap after the previous one, minus HEARTBEAT: the timer's
    # precision with 1,000 streams open. The first one also waits for its request to be admitted
    # among 1,000 arriving at once, so it is reported on its own.
    gaps, first = [], []  # gaps: (previous keep-alive, this one)
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

    first_late = []
    pool = Pool(streams)
    for _ in range(streams):
        pool.spawn(built)
    pool.join(raise_error=True)
    all_open = max(first)  # from here on, every one of the streams is open and waiting
    lateness = [at - previous - HEARTBEAT for previous, at in gaps if previous >= all_open]
    return {
        "streams": streams,
        "completed": completed[0],
        "rss_per_stream_kib": (peak[0] - idle) / streams / 1024,
        "built_streams_keepalive_late_p99_ms": ms(percentile(lateness, 99)),
        "built_streams_first_keepalive_late_p99_ms": ms(percentile(first_late, 99)),
        "keepalives_measured": len(lateness),
    }


def measure_tools(direct, gateway) -> dict:
    tools = json.loads(TOOLS_FIXTURE.read_text())
    tools_body = json.dumps({**tools, "model": "plain", "stream": False}).encode()
    plain_body = json.dumps(PLAIN).encode()
    extra = []
    for _ in range(REPEATS):
        plain = latencies_c1([direct, gateway], plain_body, 200)
        big = latencies_c1([direct, gateway], tools_body, 200)
        added_plain = percentile(plain["gateway"], 50) - percentile(plain["direct"], 50)
        added_big = percentile(big["gateway"], 50) - percentile(big["direct"], 50)
        extra.append(ms(added_big - added_plain))
    return {"tools_fixture_extra_p50_ms": statistics.median(extra), "tools_fixture_bytes": len(tools_body)}


# --- the run ---------------------------------------------------------------------------------------------


def bench_config(backend_url: str) -> str:
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

[[models]]
id = "plain"
backend = "fast"

[[models]]
id = "stream-100-10"
backend = "fast"

[[models]]
id = "stream-500-0"
backend = "fast"

[[models]]
id = "stream-6-1000"
backend = "fast"

[[models]]
id = "slow-4500"
backend = "thinking"
"""


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))  # children inherit it
    workdir = Path(tempfile.mkdtemp(prefix="llm-gateway-bench-"))
    ports = {name: free_port() for name in ("backend", "gateway", "floor")}
    backend_url = f"http://127.0.0.1:{ports['backend']}/v1/chat/completions"
    (workdir / "bench.toml").write_text(bench_config(backend_url))
    processes = []
    try:
        backend = subprocess.Popen([sys.executable, str(ROOT / "bench" / "backend.py"), str(ports["backend"])])
        processes.append(backend)
        gateway = gunicorn("wsgi:app", ports["gateway"], {"GATEWAY_CONFIG": str(workdir / "bench.toml")}, workdir)
        floor = gunicorn("bench.floor:app", ports["floor"], {"BENCH_BACKEND_URL": backend_url, "GATEWAY_CONFIG": str(workdir / "bench.toml")}, workdir)
        processes += [gateway, floor]
        for name, process in (("backend", backend), ("gateway", gateway), ("floor", floor)):
            wait_listening(ports[name], process, name)
        worker = worker_pid(gateway)
        direct = Target("direct", ports["backend"], "/v1/chat/completions")
        via_gateway = Target("gateway", ports["gateway"], "/v1/chat/completions")
        via_floor = Target("floor", ports["floor"], "/v1/chat/completions")
        gevent.sleep(1)

        started = time.monotonic()
        results = {}
        print("non-streaming ...", flush=True)
        results["non_streaming"] = measure_non_streaming(direct, via_gateway, via_floor)
        print("relayed streaming ...", flush=True)
        results["streaming"] = measure_streaming(direct, via_gateway, worker)
        print("36-tool fixture ...", flush=True)
        results["tools"] = measure_tools(direct, via_gateway)
        print("capacity: 1,000 streams on one worker ...", flush=True)
        results["capacity"] = measure_capacity(via_gateway, worker)
        results["machine"] = {
            "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine()),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "seconds": round(time.monotonic() - started, 1),
            "repeats": REPEATS,
        }
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)


def print_table(r):
    ns, st, cap, tools = r["non_streaming"], r["streaming"], r["capacity"], r["tools"]
    rows = [
        ("added latency p50, concurrency 1", f"{ns['added_p50_ms_c1']['gateway']:.2f} ms", f"floor {ns['added_p50_ms_c1']['floor']:.2f} ms",
         f"{ns['added_p50_ms_c1']['gateway'] / ns['added_p50_ms_c1']['floor']:.2f}x floor (target <= 1.2x)"),
        ("added latency p99, concurrency 64", f"{ns['added_p99_ms_c64']['gateway']:.2f} ms", f"floor {ns['added_p99_ms_c64']['floor']:.2f} ms",
         f"{ns['added_p99_ms_c64']['gateway'] / ns['added_p99_ms_c64']['floor']:.2f}x floor (target <= 1.5x)"),
        ("requests/s, concurrency 64, one worker", f"{ns['rps_c64_one_worker']['gateway']:.0f}", f"floor {ns['rps_c64_one_worker']['floor']:.0f}",
         f"{ns['rps_c64_one_worker']['gateway'] / ns['rps_c64_one_worker']['floor']:.0%} of floor (target >= 80%); direct {ns['rps_c64_one_worker']['direct']:.0f}"),
        ("relay: added time to first event", f"{st['added_first_event_ms']:.2f} ms", "", ""),
        ("relay: added delay per event p50 / p99", f"{st['added_event_delay_p50_ms']:.2f} / {st['added_event_delay_p99_ms']:.2f} ms", "",
         "100 events/s; target p99 <= 1 ms"),
        ("relay: gateway CPU per 1,000 events", f"{st['cpu_ms_per_1000_events']:.1f} ms", "", ""),
        ("1,000 streams on one worker: completed", f"{cap['completed']} of {cap['streams']}", "", ""),
        ("  resident memory per open stream", f"{cap['rss_per_stream_kib']:.1f} KiB", "", "target <= 64 KiB"),
        ("  built streams: keep-alive lateness p99", f"{cap['built_streams_keepalive_late_p99_ms']:.1f} ms", "",
         f"heartbeat {HEARTBEAT:g} s, {cap['keepalives_measured']} keep-alives with all open; target <= 100 ms"),
        ("  first keep-alive, 1,000 arriving at once", f"{cap['built_streams_first_keepalive_late_p99_ms']:.1f} ms", "",
         "p99 lateness, includes admitting 1,000 requests"),
        ("36-tool Open WebUI body: extra added p50", f"{tools['tools_fixture_extra_p50_ms']:.2f} ms", "", f"{tools['tools_fixture_bytes']:,} bytes vs a plain chat"),
    ]
    width = [max(len(row[i]) for row in rows) for i in range(4)]
    print()
    print(f"llm-gateway benchmark ({r['machine']['cpu']}, {r['machine']['cores']} cores, Python {r['machine']['python']}; "
          f"medians of {r['machine']['repeats']} repeats; {r['machine']['seconds']} s)")
    for row in rows:
        print("  ".join(cell.ljust(width[i]) for i, cell in enumerate(row)).rstrip())
    print(f"\nwritten to {OUT}")


if __name__ == "__main__":
    main()
