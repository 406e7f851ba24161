"""The soak's servers: two gateway instances behind the shipped nginx site, sharing one Redis.

`start` launches, in the run's temporary folder: the test backend (bench/backend.py) twice, as the
backend that streams (`fast`) and the one that does not (`corp`); a port nothing listens on (backend
`gone`, held bound so nobody else takes it); a throwaway redis-server; two gateway instances
(wsgi:app under gunicorn with this repository's gunicorn.conf.py, two workers each) on the
same config (bench/harness/mix.py); and a real nginx running deploy/nginx's `upstream` and
`location /` blocks with both instances in the upstream (tests/nginx_server.py, as the deploy tests
run it). Every port is a free one. Logs go to bench/out/soak-logs/.

A `Cluster` is what the soak needs of them afterwards: where to send requests (nginx), the workers
now, each instance's /status.json, Redis killed (SIGKILL, as a crash) and started again on its
port, the leases Redis still holds, and what the backends are still answering. `tracebacks`,
`redis_unreachable` and `nginx_errors` read the logs.
"""

import collections
import http.client
import json
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import gevent
import redis

from bench.harness import mix
from bench.harness.client import Target
from bench.harness.paths import ROOT, SOAK_LOGS
from bench.harness.procfs import children
from bench.harness.servers import Servers, free_port, gunicorn, redis_server, wait_listening
from gateway.limits.scripts import lease_key
from tests.nginx_server import Nginx

WORKERS = 2  # per instance
NGINX_CONNECTIONS = 4096  # nginx worker_connections: each stream holds two (client and gateway)
BACKENDS = ("fast", "corp", "gone")  # as in mix.soak_config


@dataclass
class Instance:
    label: str
    port: int
    master: subprocess.Popen
    log: Path


@dataclass
class Cluster:
    entry: Target  # nginx: where users send their requests
    instances: list
    backend_ports: dict  # "fast", "corp" -> port
    redis_port: int
    workdir: Path
    servers: Servers = field(repr=False)
    redis_process: subprocess.Popen = field(repr=False)
    gone: socket.socket = field(repr=False)  # bound, never listening: connections to it are refused
    nginx: Nginx = field(repr=False)
    redis_starts: int = 1

    def workers(self) -> dict:
        """pid -> instance label, for every gateway worker now."""
        return {pid: instance.label for instance in self.instances for pid in children(instance.master.pid)}

    def kill_redis(self) -> None:
        """Redis gone at once, as a crash: nothing saved, connections reset."""
        self.redis_process.kill()
        self.redis_process.wait()

    def restart_redis(self) -> None:
        self.redis_starts += 1
        self.redis_process = self.servers.add(redis_server(self.redis_port, self.workdir, SOAK_LOGS / f"redis-{self.redis_starts}.log"))
        wait_listening(self.redis_port, self.redis_process, "redis-server (restarted)")

    def keep_nginx_log(self) -> Path:
        """nginx's error log, copied out of the temporary folder (it goes with the folder)."""
        kept = SOAK_LOGS / "nginx-error.log"
        if self.nginx.error_log.exists():
            shutil.copyfile(self.nginx.error_log, kept)
        return kept

    def status(self, instance: Instance) -> dict:
        return _get_json(instance.port, "/status.json")

    def backend_state(self, name: str) -> dict:
        """{"connections", "answering"} of test backend `name` (bench/backend.py)."""
        return _get_json(self.backend_ports[name], "/x-soak/state")

    def live_leases(self) -> list:
        """(backend, lease id) of every lease Redis holds that has not expired."""
        with redis.Redis(port=self.redis_port, socket_timeout=5) as client:
            seconds, micros = client.time()
            now_ms = seconds * 1000 + micros // 1000
            return [(name, lease.decode()) for name in BACKENDS for lease in client.zrangebyscore(lease_key(name), now_ms, "+inf")]


def _get_json(port: int, path: str) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def start(workdir: Path, servers: Servers, users: int) -> Cluster:
    """Everything started, listening, and every gateway worker serving; the config set for `users`."""
    gone = socket.socket()
    gone.bind(("127.0.0.1", 0))
    backend_ports = {name: free_port() for name in ("fast", "corp")}
    for name, port in backend_ports.items():
        process = servers.add(subprocess.Popen([sys.executable, str(ROOT / "bench" / "backend.py"), str(port)]))
        wait_listening(port, process, f"test backend {name}")
    redis_port = free_port()
    redis_process = redis_server(redis_port, workdir, SOAK_LOGS / "redis-1.log")
    if redis_process is None:
        raise SystemExit("make soak needs redis-server (apt-get install redis-server; .ci/run installs it)")
    servers.add(redis_process)
    wait_listening(redis_port, redis_process, "redis-server")
    config = workdir / "soak.toml"
    config.write_text(mix.soak_config(f"http://127.0.0.1:{backend_ports['fast']}", f"http://127.0.0.1:{backend_ports['corp']}",
                                      f"http://127.0.0.1:{gone.getsockname()[1]}", f"redis://127.0.0.1:{redis_port}/0", users))
    instances = []
    for number in (1, 2):
        port, log = free_port(), SOAK_LOGS / f"gateway-{number}.log"
        master = servers.add(gunicorn("wsgi:app", port, {"GATEWAY_CONFIG": str(config)}, workdir, log, workers=WORKERS))
        instances.append(Instance(f"gateway {number}", port, master, log))
    for instance in instances:
        wait_listening(instance.port, instance.master, instance.label)
        _wait_ready(instance)
    nginx = Nginx(workdir / "nginx", [f"127.0.0.1:{i.port}" for i in instances], worker_connections=NGINX_CONNECTIONS)
    servers.add(nginx.process)
    entry = Target("nginx", nginx.port, "/v1/chat/completions", timeout=60)
    return Cluster(entry, instances, backend_ports, redis_port, workdir, servers, redis_process, gone, nginx)


def _wait_ready(instance: Instance, timeout=60) -> None:
    """Until the instance has all its workers and answers /readyz with 200."""
    deadline = time.monotonic() + timeout
    while True:
        if instance.master.poll() is not None:
            raise SystemExit(f"{instance.label} exited with {instance.master.returncode}; see {instance.log}")
        if len(children(instance.master.pid)) == WORKERS:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", instance.port, timeout=10)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            finally:
                conn.close()
        if time.monotonic() > deadline:
            raise SystemExit(f"{instance.label} not ready after {timeout} s; see {instance.log}")
        gevent.sleep(0.1)


def tracebacks(log: Path) -> list:
    """The exception line ending each traceback in a log (a gateway's stderr)."""
    found, inside = [], False
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("Traceback (most recent call last)"):
            inside = True
        elif inside and line and not line[0].isspace():
            found.append(line[:200])
            inside = False
    return found


def redis_unreachable(log: Path) -> collections.Counter:
    """How often a gateway's workers found Redis unreachable, by the error they met (its log's
    "Redis at ... is unreachable (Error: ...)" lines)."""
    found = collections.Counter()
    for line in log.read_text(errors="replace").splitlines():
        if "] [WARNING] Redis at " in line and " is unreachable (" in line:
            found[line.split(" is unreachable (", 1)[1].split(":", 1)[0]] += 1
    return found


def nginx_errors(log: Path) -> list:
    """nginx's [error] lines (a client that hangs up is only [info]), without their time stamps."""
    if not log.exists():
        return []
    return [line.split("] ", 1)[-1][:240] for line in log.read_text(errors="replace").splitlines() if "[error]" in line]
