"""Where one gateway worker's CPU goes, under the benchmark's loads: a sampling profile.

    python bench/profile_worker.py [paced|requests|starts] [STREAMS] [--floor]

Starts the test backend and the gateway under gunicorn (one worker, this repository's
gunicorn.conf.py) with `bench.profile_worker:app`: the gateway's own wsgi:app plus a sampler. Every
millisecond of the worker's CPU time (ITIMER_PROF) it records the Python stack that is running
(within the current greenlet), weighted by the CPU time since the previous sample: time spent in C
code (libev, greenlet switches, system calls) lands on the next Python frame to run, which is its
caller or the greenlet switched to. Good for "which Python code", approximate for the C parts.
Then it drives one load (`paced`: STREAMS streams of 100 events at 20/s, starts over one second,
as make bench's streams-per-worker figure; `requests`: 64 clients posting non-streaming chats for
10 s; `starts`: 2,000 streamed requests of 5 events sent back to back, 20 at a time, for the cost of
starting a stream), stops the gateway and prints the share of samples per package and the functions with the
most samples, inclusive and self. --floor profiles the bare floor (bench/floor.py) instead. The
gateway itself is unchanged; nothing here is part of make bench. Its gunicorn's log goes to
bench/out/logs/profile-worker.log; its temporary folder is removed however it ends.
"""

import os
import sys

if __name__ != "__main__":  # imported by the gunicorn worker, after gevent has patched
    import atexit
    import collections
    import signal

    import importlib

    app = importlib.import_module(os.environ.get("BENCH_PROFILE_APP", "wsgi")).app  # what gunicorn serves

    import time

    _samples = collections.Counter()
    _last = [time.process_time()]

    def _sample(_signum, frame):
        # SIGPROFs that arrive while C code runs are merged into one: each sample carries the
        # process CPU time since the previous one, so nothing is lost, only lumped onto the frame
        # that runs Python next (the caller of that C code, or the greenlet switched to).
        now = time.process_time()
        stack = []
        while frame is not None:
            stack.append((frame.f_code.co_filename, frame.f_code.co_name))
            frame = frame.f_back
        _samples[tuple(reversed(stack))] += now - _last[0]
        _last[0] = now

    def _dump():
        # The timer stops first: a sample taken while the samples are written would change the
        # table being read ("dictionary changed size during iteration", and a truncated profile).
        signal.setitimer(signal.ITIMER_PROF, 0)
        with open(os.environ["BENCH_PROFILE_OUT"], "w") as out:
            for stack, seconds in list(_samples.items()):
                out.write(f"{seconds * 1e6:.0f}\t{';'.join(f'{f}:{n}' for f, n in stack)}\n")

    signal.signal(signal.SIGPROF, _sample)
    signal.setitimer(signal.ITIMER_PROF, 0.001, 0.001)
    atexit.register(_dump)

else:
    from gevent import monkey

    monkey.patch_all()

    import collections  # noqa: E402
    import json  # noqa: E402
    import re  # noqa: E402
    import subprocess  # noqa: E402
    from pathlib import Path  # noqa: E402

    import gevent  # noqa: E402
    import gevent.pool  # noqa: E402

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.harness.client import PLAIN, Target, stamped_events  # noqa: E402
    from bench.harness.load import load_c64  # noqa: E402
    from bench.harness.paths import LOGS, ROOT  # noqa: E402
    from bench.harness.servers import bench_config, free_port, gunicorn, stop, wait_listening, worker_pid  # noqa: E402
    from bench.harness.workdir import exit_on_stop_signals, temporary_folder  # noqa: E402
    from bench.measure.capacity import PACE_SPREAD, PACE_TWIN_EVERY  # noqa: E402
    from bench.measure.relay import paced_run  # noqa: E402

    def package(filename: str) -> str:
        """site-packages/<name>/..., the repository's gateway/..., or the standard library."""
        match = re.search(r"site-packages/([^/]+)", filename)
        if match:
            return match.group(1).removesuffix(".py")
        if f"{os.sep}gateway{os.sep}" in filename:
            return "gateway/" + os.path.basename(filename)
        return "stdlib" if "/lib/python3" in filename else os.path.basename(filename)

    def report(path: Path, top=25) -> None:
        stacks = []
        for line in path.read_text().splitlines():
            count, stack = line.split("\t", 1)
            stacks.append((int(count), stack.split(";")))
        total = sum(c for c, _ in stacks)
        self_by_package, self_by_function, inclusive = collections.Counter(), collections.Counter(), collections.Counter()
        for count, frames in stacks:
            leaf = frames[-1].rsplit(":", 1)
            self_by_package[package(leaf[0])] += count
            self_by_function[f"{package(leaf[0])}:{leaf[1]}"] += count
            for frame in set(frames):
                filename, name = frame.rsplit(":", 1)
                inclusive[f"{package(filename)}:{name}"] += count
        print(f"\n{total / 1e6:.2f} s of worker CPU sampled (the whole process, start-up included)\n\nself time by package:")
        for name, count in self_by_package.most_common(15):
            print(f"  {count / total:6.1%}  {name}")
        print("\nself time by function:")
        for name, count in self_by_function.most_common(top):
            print(f"  {count / total:6.1%}  {name}")
        print("\ninclusive time (gateway and the relay path):")
        for name, count in inclusive.most_common():
            if name.startswith(("gateway/", "flask", "werkzeug", "urllib3", "requests", "gunicorn")) and count / total >= 0.01:
                print(f"  {count / total:6.1%}  {name}")

    def user_system(pid: int) -> tuple:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return int(fields[11]) / os.sysconf("SC_CLK_TCK"), int(fields[12]) / os.sysconf("SC_CLK_TCK")

    def main() -> None:
        args = [a for a in sys.argv[1:] if a != "--floor"]
        floor = "--floor" in sys.argv
        load = args[0] if args else "paced"
        streams = int(args[1]) if len(args) > 1 else 200
        exit_on_stop_signals()
        with temporary_folder(prefix="llm-gateway-profile-") as workdir:  # removed however the run ends
            profile(workdir, load, streams, floor)

    def profile(workdir: Path, load: str, streams: int, floor: bool) -> None:
        ports = {name: free_port() for name in ("backend", "gateway")}
        url = f"http://127.0.0.1:{ports['backend']}/v1/chat/completions"
        model = "stream-100-50"
        (workdir / "bench.toml").write_text(bench_config(url, ["plain", model, "stream-5-0"]))
        out = workdir / "samples.txt"
        backend = subprocess.Popen([sys.executable, str(ROOT / "bench" / "backend.py"), str(ports["backend"])])
        env = {"GATEWAY_CONFIG": str(workdir / "bench.toml"), "BENCH_PROFILE_OUT": str(out), "BENCH_BACKEND_URL": url,
               "BENCH_PROFILE_APP": "bench.floor" if floor else "wsgi"}
        LOGS.mkdir(parents=True, exist_ok=True)
        gateway = gunicorn("bench.profile_worker:app", ports["gateway"], env, workdir, LOGS / "profile-worker.log")
        try:
            for name, process in (("backend", backend), ("gateway", gateway)):
                wait_listening(ports[name], process, name)
            worker = worker_pid(gateway)
            direct = Target("direct", ports["backend"], "/v1/chat/completions")
            target = Target("floor" if floor else "gateway", ports["gateway"], "/v1/chat/completions", "/stream" if floor else None)
            gevent.sleep(1)
            before = user_system(worker)
            if load == "paced":
                result = paced_run(target, direct, model, streams, PACE_SPREAD, PACE_TWIN_EVERY)
                print(f"{streams} streams: p99 added {result['added_p99_ms']:.1f} ms, by second {result['added_p99_ms_by_second']}")
            elif load == "starts":
                body = json.dumps({**PLAIN, "model": "stream-5-0", "stream": True}).encode()
                pool = gevent.pool.Pool(20)
                gevent.joinall([pool.spawn(stamped_events, target, body) for _ in range(2000)], raise_error=True)
                print("2,000 streamed requests of 5 events, 20 at a time")
            else:
                result = load_c64([target], json.dumps(PLAIN).encode(), 1, 10.0, {})[target.name]
                print(f"{result['rps']:.0f} requests/s")
            after = user_system(worker)
            print(f"worker CPU during the load: user {after[0] - before[0]:.2f} s, system {after[1] - before[1]:.2f} s")
        finally:
            stop(gateway)
            stop(backend)
        report(out)

    main()
