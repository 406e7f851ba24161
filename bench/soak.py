"""`make soak`: two gateway instances behind nginx, one Redis, a steady mixed load with injected
faults for minutes, Redis killed midway; then what was unexpected, what grew and what was left.

    python bench/soak.py [--minutes M | --seconds S] [--users N] [--heavy N] [--seed N]

What runs (bench/harness/cluster.py): the test backend twice (one streams, one does not), a port
nothing listens on, a redis-server, two gateway instances (gunicorn with this repository's
gunicorn.conf.py, two gevent workers each) on one config with `redis_url` (`redis_failure =
"open"`), `global_max_concurrency` and `[limits]`, and the shipped nginx site in front of both.
This process is the load generator (gevent, http.client through nginx): `--users` light users
(350, which keep about 300 requests in flight) and `--heavy` heavy ones (2), each one greenlet
with one keep-alive connection, asking one thing at a time with a short pause between; bench/harness/mix.py says what they ask (chat streams
with and without `include_usage`, non-streamed chats, built streams, embeddings, failover; ~5 %
with an injected fault; some streams left mid-way; 429s on purpose) and verdicts.py what each
answer must be. The machine's other work shares the cores: the summary says how many cores the
soak's processes and the others kept busy.

Schedule, in seconds of load S: users start over the first 5 s; warm-up until W = min(60, S / 3);
Redis is killed (SIGKILL) at S / 2 and started again min(30, max(10, S / 12)) later, empty, on
its port; at S users ask nothing more and finish what they asked (60 s at most). A progress line
every minute. Then the lease time (30 s) is let pass, and leftovers are counted.

The summary: requests by outcome; unexpected outcomes by kind, with count and first example (an
answer other than the expected one, an error not OpenAI-shaped, a request unanswered 60 s after
the load stopped, a gateway worker replaced, a traceback in a gateway's log, Redis not seen again
within 15 s); how the requests started while Redis was away fared, how often the gateways' logs
say they found Redis unreachable, and nginx's [error] lines; each worker's resident memory
at start (the median of its samples, one every 2 s, in the 10 s after warm-up), middle (the 10 s
before Redis is killed) and end (the last 10 s of load), and its growth from start to end; and
the leftovers: leases Redis still holds, requests the instances count in flight, answers the
backends are still writing, and the connections each worker holds (from nginx, to the backends,
to Redis; idle ones to the backends are its connection pool).

Exit status 1 when there was an unexpected outcome, a lease left in Redis, a request still in
flight or a connection from nginx still open, or a worker's memory grew by 10 % or more; else 0.
The run's temporary folder is removed however it ends (done, failed, Ctrl-C, SIGTERM); the
servers' logs stay in bench/out/soak-logs/.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import collections  # noqa: E402
import dataclasses  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/soak.py`: the repository, for `bench.`

import gevent  # noqa: E402

from bench.harness import cluster as soak_cluster, mix, verdicts  # noqa: E402
from bench.harness.client import ask  # noqa: E402
from bench.harness.paths import SOAK_LOGS, shown  # noqa: E402
from bench.harness.procfs import OtherLoad, tcp_connections  # noqa: E402
from bench.harness.results import machine  # noqa: E402
from bench.harness.rss_watch import RssWatch  # noqa: E402
from bench.harness.servers import Servers  # noqa: E402
from bench.harness.table import aligned  # noqa: E402
from bench.harness.tally import Tally  # noqa: E402
from bench.harness.workdir import exit_on_stop_signals, temporary_folder  # noqa: E402
from gateway.limits.leases import LEASE_SECONDS  # noqa: E402

GROWTH_LIMIT = 0.10  # a worker's RSS growth from start to end that fails the run
WINDOW = 10  # seconds of samples behind each memory reading
FINISH_SECONDS = 60  # how long users get to finish their last request after the load stops
RECOVERY_SECONDS = 15  # the instances must see Redis again this soon after its restart
MiB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Schedule:
    seconds: float  # of load
    warmup: float
    redis_killed: float
    redis_back: float

    @classmethod
    def of(cls, seconds: float) -> "Schedule":
        outage = min(30.0, max(10.0, seconds / 12))
        return cls(seconds, min(60.0, seconds / 3), seconds / 2, seconds / 2 + outage)

    def windows(self) -> dict:
        """The memory readings: name -> (from, to) in seconds of load."""
        return {"start": (self.warmup, self.warmup + WINDOW), "middle": (self.redis_killed - WINDOW, self.redis_killed),
                "end": (self.seconds - WINDOW, self.seconds)}


def clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def user(cluster, name: str, heavy: bool, rng, tally: Tally, until: float, asking: dict) -> None:
    """One user: asks, checks the answer, pauses, until `until`; one keep-alive connection."""
    conn, started = None, collections.deque()
    try:
        while time.monotonic() < until:
            request = mix.pick(rng, name, heavy)
            now = time.monotonic()
            while started and started[0] < now - 62:
                started.popleft()
            recent = len(started)  # this user's requests in the 62 s before this one
            started.append(now)
            asking[name] = request
            redis_away = tally.start()
            conn = conn or cluster.entry.connection()
            answer = ask(conn, request.path, request.body(), request.headers(), request.leave_after)
            outcome, problem = verdicts.judge(request, answer, recent)
            tally.end(outcome, problem, request.describe(), redis_away)
            del asking[name]
            if answer.left or answer.broken or answer.headers.get("connection", "").lower() == "close":
                conn.close()
                conn = None
            gevent.sleep(mix.think_seconds(rng, request, answer.status, answer.headers.get("retry-after")))
    finally:
        if conn is not None:
            conn.close()


def sample_in_flight(tally: Tally, until: float, into: list) -> None:
    while time.monotonic() < until:
        into.append(tally.in_flight)
        gevent.sleep(1)


def progress(tally: Tally, watch: RssWatch, began: float, until: float) -> None:
    """One line a minute while the load runs."""
    minute = 1
    while True:
        gevent.sleep(max(0.0, began + 60 * minute - time.monotonic()))
        if time.monotonic() > until + 1:
            return
        redis_state = "away" if tally.redis_away else "up"
        print(f"[{clock(time.monotonic() - began)}] {tally.line()}; workers' RSS {watch.latest_total() / MiB:.0f} MiB in all; "
              f"Redis {redis_state}", flush=True)
        minute += 1


def wait_redis_seen(cluster, deadline: float):
    """Seconds until every instance's /status.json says Redis is ok again, or None at the deadline."""
    began = time.monotonic()
    waiting = list(cluster.instances)
    while waiting and time.monotonic() < deadline:
        waiting = [i for i in waiting if (cluster.status(i).get("redis") or {}).get("state") != "ok"]
        if waiting:
            gevent.sleep(0.2)
    return None if waiting else time.monotonic() - began


def run_load(cluster, schedule: Schedule, users: int, heavy: int, rng, tally: Tally) -> dict:
    """The load, Redis's outage and the memory samples, as the schedule says; what the summary needs."""
    workers = cluster.workers()
    watch = RssWatch(workers)
    began = watch.began
    until = began + schedule.seconds
    asking = {}
    names = [(f"user-{i + 1}", False) for i in range(users)] + [(f"heavy-{i + 1}", True) for i in range(heavy)]
    spread = 5.0 / len(names)
    greenlets = [gevent.spawn_later(k * spread, user, cluster, name, is_heavy, rng, tally, until, asking)
                 for k, (name, is_heavy) in enumerate(names)]
    helpers = [gevent.spawn(watch.run, until), gevent.spawn(progress, tally, watch, began, until)]
    in_flight = []  # requests in flight, once a second
    helpers.append(gevent.spawn(sample_in_flight, tally, until, in_flight))

    gevent.sleep(max(0.0, began + schedule.redis_killed - time.monotonic()))
    tally.redis_away = True
    cluster.kill_redis()
    print(f"[{clock(time.monotonic() - began)}] Redis killed", flush=True)
    gevent.sleep(max(0.0, began + schedule.redis_back - time.monotonic()))
    cluster.restart_redis()
    tally.redis_away = False
    print(f"[{clock(time.monotonic() - began)}] Redis started again", flush=True)
    recovered = wait_redis_seen(cluster, time.monotonic() + RECOVERY_SECONDS)
    if recovered is None:
        tally.note("Redis not seen again by every instance within 15 s of its restart", "/status.json still says unreachable")

    gevent.sleep(max(0.0, until - time.monotonic()))
    print(f"[{clock(time.monotonic() - began)}] load stopped; users finish what they asked", flush=True)
    gevent.joinall(greenlets, timeout=FINISH_SECONDS)
    for name, request in list(asking.items()):
        tally.note(f"a request unanswered {FINISH_SECONDS} s after the load stopped", request.describe())
    gevent.killall(greenlets + helpers, timeout=5)
    now = set(cluster.workers())
    for pid in sorted(set(workers) - now):
        tally.note("a gateway worker exited during the soak (replaced)", f"{workers[pid]}, pid {pid}")
    return {"watch": watch, "workers": workers, "redis_seen_after": recovered,
            "in_flight_mean": sum(in_flight) / len(in_flight) if in_flight else 0.0, "ended": time.monotonic()}


def leftovers(cluster, workers: dict) -> dict:
    """What is still open once the load stopped and the lease time passed."""
    instance_of = {i.label: i for i in cluster.instances}
    backend_ports = set(cluster.backend_ports.values())
    connections = {}
    for pid, label in workers.items():
        try:
            held = tcp_connections(pid)
        except OSError:
            continue  # gone: reported as replaced
        port = instance_of[label].port
        connections[pid] = {
            "from nginx": sum(1 for local, _remote in held if local == port),
            "to backends": sum(1 for _local, remote in held if remote in backend_ports),
            "to Redis": sum(1 for _local, remote in held if remote == cluster.redis_port),
        }
    statuses = {i.label: cluster.status(i) for i in cluster.instances}
    return {
        "connections": connections,
        "leases": cluster.live_leases(),
        "in_flight": {label: sum(b["in_flight"] or 0 for b in s["backends"]) for label, s in statuses.items()},
        "answering": {name: cluster.backend_state(name)["answering"] for name in cluster.backend_ports},
        "refused_by_limits": {label: s["limits"]["refused"] for label, s in statuses.items()},
    }


def summary(args, schedule, tally, load, left, cores, logs) -> tuple:
    """The summary's lines, and the reasons the run failed (none: it passed)."""
    m = machine()
    lines = [f"llm-gateway soak: {m['date']}, {m['cpu']}, {m['cores']} cores, Python {m['python']}; {schedule.seconds:.0f} s of load "
             f"(warm-up {schedule.warmup:.0f} s), {args.users} users + {args.heavy} heavy (seed {args.seed}), "
             f"{load['in_flight_mean']:.0f} requests in flight on average; two instances x {soak_cluster.WORKERS} workers behind nginx, "
             f"one Redis (killed at {clock(schedule.redis_killed)}, back at {clock(schedule.redis_back)}); "
             f"the soak's processes kept {cores['own']:.2f} cores busy, other processes {cores['others']:.2f}, on average", ""]
    failures = []
    total = tally.requests or 1
    cells = [("requests by outcome", "count", "share")]
    cells += [(outcome, f"{n:,}", f"{n / total:.1%}") for outcome, n in tally.outcomes.most_common()]
    cells.append(("total", f"{tally.requests:,}", ""))
    lines += aligned(cells) + [""]

    if tally.unexpected:
        cells = [("unexpected outcome", "count", "first example")]
        cells += [(kind, f"{count:,}", example) for kind, (count, example) in sorted(tally.unexpected.items(), key=lambda kv: -kv[1][0])]
        lines += aligned(cells) + [""]
        failures.append(f"{tally.unexpected_count:,} unexpected outcome(s)")
    else:
        lines += ["unexpected outcomes: none", ""]
    away = tally.while_away
    seen = load["redis_seen_after"]
    lines += [f"while Redis was away ({clock(schedule.redis_killed)} to {clock(schedule.redis_back)}): {away['requests']:,} requests started, "
              f"{away['unexpected']:,} unexpected; " + (f"every instance saw it again {seen:.1f} s after its restart" if seen is not None
                                                          else "an instance did not see it again within 15 s")]
    unreachable = logs["redis_unreachable"]
    lines.append(f"gateway logs: Redis found unreachable {sum(unreachable.values())} times ("
                 + (", ".join(f"{n} {error}" for error, n in unreachable.most_common()) or "never")
                 + "; the outage accounts for one per worker, the rest are replies slower than the gateway's 0.2 s timeout)")
    errors = logs["nginx_errors"]
    lines += [f"nginx's error log: {len(errors)} [error] lines" + (f", the first: {errors[0]}" if errors else ""), ""]

    watch, windows = load["watch"], schedule.windows()
    cells = [("memory (RSS) per worker", "start", "middle", "end", "growth")]
    for pid, label in sorted(load["workers"].items(), key=lambda kv: (kv[1], kv[0])):
        r = {name: watch.reading(pid, *window) for name, window in windows.items()}
        mib = lambda v: f"{v / MiB:.1f} MiB" if v else "-"  # noqa: E731
        growth = r["end"] / r["start"] - 1 if r["start"] and r["end"] else None
        cells.append((f"{label}, pid {pid}", mib(r["start"]), mib(r["middle"]), mib(r["end"]), f"{growth:+.1%}" if growth is not None else "-"))
        if growth is not None and growth >= GROWTH_LIMIT:
            failures.append(f"{label} pid {pid} grew {growth:.1%}")
    lines += aligned(cells)
    lines += [f"(each reading: the median of a sample every 2 s over {WINDOW} s: start after the warm-up, {clock(windows['start'][0])} to "
              f"{clock(windows['start'][1])}; middle before Redis was killed; end the last {WINDOW} s of load; growth: end over start, "
              f"fails at {GROWTH_LIMIT:.0%})", ""]

    lines.append(f"leftovers, {LEASE_SECONDS:.0f} s (the lease time) after the last request ended:")
    leases = left["leases"]
    cells = [("leases Redis still holds", f"{len(leases)}" + (f": {', '.join(f'{b} {lease}' for b, lease in leases[:5])}" if leases else ""))]
    cells.append(("requests in flight (/status.json)", ", ".join(f"{label} {n}" for label, n in left["in_flight"].items())))
    cells.append(("answers the backends still write", ", ".join(f"{name} {n}" for name, n in left["answering"].items())))
    for pid, held in sorted(left["connections"].items()):
        cells.append((f"connections of {load['workers'][pid]}, pid {pid}", ", ".join(f"{n} {what}" for what, n in held.items())))
    lines += ["  " + line for line in aligned(cells)]
    lines.append("  (gateway's own count of refusals: " + "; ".join(
        f"{label} " + ", ".join(f"{k} {v}" for k, v in refused.items() if v) for label, refused in left["refused_by_limits"].items()) + ")")
    lines.append("")
    if leases:
        failures.append(f"{len(leases)} lease(s) left in Redis")
    if any(left["in_flight"].values()) or any(left["answering"].values()):
        failures.append("requests still in flight after the load stopped")
    if any(held["from nginx"] for held in left["connections"].values()):
        failures.append("connections from nginx still open in a worker")
    lines.append("verdict: " + ("passed" if not failures else "FAILED: " + "; ".join(failures)))
    return lines, failures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, help="minutes of load (default 30)")
    length.add_argument("--seconds", type=float, help="seconds of load, for short runs (at least 60)")
    parser.add_argument("--users", type=int, default=350, help="light users, each asking one thing at a time (default 350: ~300 in flight)")
    parser.add_argument("--heavy", type=int, default=2, help="heavy users, who go past [limits] (default 2)")
    parser.add_argument("--seed", type=int, default=None, help="the random mix's seed (default: a new one, printed)")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else 60 * (args.minutes if args.minutes is not None else 30)
    if seconds < 60:
        parser.error("the soak needs at least 60 seconds of load")
    if args.seed is None:
        args.seed = random.randrange(1_000_000)
    schedule = Schedule.of(seconds)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))  # children inherit it
    exit_on_stop_signals()
    shutil.rmtree(SOAK_LOGS, ignore_errors=True)  # the previous soak's
    SOAK_LOGS.mkdir(parents=True)
    rng = random.Random(args.seed)
    tally = Tally()
    print(f"soak: {seconds:.0f} s of load, {args.users} users + {args.heavy} heavy, seed {args.seed}; starting the servers ...", flush=True)
    # Leaving these `with`s, however the run ends, stops every server, then removes the folder.
    with temporary_folder("llm-gateway-soak-") as workdir, Servers() as servers:
        cluster = soak_cluster.start(workdir, servers, args.users)
        try:
            others = OtherLoad()
            load = run_load(cluster, schedule, args.users, args.heavy, rng, tally)
            cores = {"others": others.cores(), "own": others.own_cores()}
            print(f"waiting {LEASE_SECONDS + 2:.0f} s: the lease time, then leftovers are counted ...", flush=True)
            gevent.sleep(max(0.0, load["ended"] + LEASE_SECONDS + 2 - time.monotonic()))
            left = leftovers(cluster, load["workers"])
        finally:
            cluster.keep_nginx_log()
    logs = {"redis_unreachable": collections.Counter(), "nginx_errors": soak_cluster.nginx_errors(cluster.keep_nginx_log())}
    for instance in cluster.instances:
        for line in soak_cluster.tracebacks(instance.log):
            tally.note(f"a traceback in {instance.label}'s log", line)
        logs["redis_unreachable"] += soak_cluster.redis_unreachable(instance.log)
    lines, failures = summary(args, schedule, tally, load, left, cores, logs)
    print()
    print("\n".join(lines))
    print(f"\nlogs in {shown(SOAK_LOGS)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
