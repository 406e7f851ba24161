"""The rig every section runs on: the fast test backend, the gateway and the bare floor, started.

`start` launches the three (bench/backend.py; wsgi:app and bench.floor:app under gunicorn with one
worker each), waits until they listen, and hands back a `Rig`: the three targets the load generator
calls (direct, gateway, floor), their workers' pids (for CPU and memory), and what a section needs to
start servers of its own (the work folder, the config, the ports set aside for it).
"""

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import gevent

from bench.harness.client import Target
from bench.harness.paths import LOGS, ROOT
from bench.harness.servers import Servers, bench_config, free_port, gunicorn, wait_listening, worker_pid


@dataclass
class Rig:
    cfg: dict  # the sizes (bench/harness/sizes.py)
    direct: Target  # the backend itself
    gateway: Target
    floor: Target
    pids: dict  # "gateway", "floor": the worker's pid
    workdir: Path  # the run's temporary folder: configs, the servers' working directory
    config: str  # bench.toml: the gateway's config (its backend and the models every section uses)
    gateway_env: dict  # GATEWAY_CONFIG for another gateway with the same config
    backend_url: str
    ports: dict  # "redis", "shared": set aside for section `redis`
    servers: Servers = field(repr=False)  # a section's own long-lived servers go here, stopped at the end


def start(cfg: dict, models: list, workdir: Path, servers: Servers) -> Rig:
    """The three started and listening, with `models` (names bench/backend.py understands) in the config."""
    ports = {name: free_port() for name in ("backend", "gateway", "floor", "redis", "shared")}
    backend_url = f"http://127.0.0.1:{ports['backend']}/v1/chat/completions"
    config = bench_config(backend_url, models)
    (workdir / "bench.toml").write_text(config)
    gateway_env = {"GATEWAY_CONFIG": str(workdir / "bench.toml")}
    backend = servers.add(subprocess.Popen([sys.executable, str(ROOT / "bench" / "backend.py"), str(ports["backend"])]))
    gateway = servers.add(gunicorn("wsgi:app", ports["gateway"], gateway_env, workdir, LOGS / "gateway.log"))
    floor = servers.add(gunicorn("bench.floor:app", ports["floor"], {**gateway_env, "BENCH_BACKEND_URL": backend_url}, workdir, LOGS / "floor.log"))
    for name, process in (("backend", backend), ("gateway", gateway), ("floor", floor)):
        wait_listening(ports[name], process, name)
    pids = {"gateway": worker_pid(gateway), "floor": worker_pid(floor)}
    direct = Target("direct", ports["backend"], "/v1/chat/completions")
    via_gateway = Target("gateway", ports["gateway"], "/v1/chat/completions")
    via_floor = Target("floor", ports["floor"], "/v1/chat/completions", "/stream")
    gevent.sleep(1)
    return Rig(cfg, direct, via_gateway, via_floor, pids, workdir, config, gateway_env, backend_url, ports, servers)
