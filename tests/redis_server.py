"""A real, throwaway redis-server (Debian's package) for the tests of the shared limits.

It listens on a free loopback port with persistence off (`--save '' --appendonly no`), so a
restart starts empty, as a Redis that crashed without persistence would. `kill()` stops it at
once (SIGKILL) and `start()` brings it back on the same port, for the outage tests. Without
redis-server, tests that need it are skipped, except in CI (CI set), where they fail.
"""

import os
import shutil
import signal
import subprocess
import time

import redis

from tests.backends import free_port, not_installed

REDIS_SERVER = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)


def require_redis_server() -> str:
    if REDIS_SERVER is None:
        not_installed("redis-server is not installed (apt-get install redis-server; .ci/run does)")
    return REDIS_SERVER


class RedisServer:
    def __init__(self, workdir, password: str | None = None):
        self.binary = require_redis_server()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.password = password
        self.process = None
        for _ in range(5):  # a port free a moment ago may be taken (by another test process) before redis binds it
            self.port = free_port()
            try:
                self.start()
                return
            except RuntimeError:
                if self.process.poll() is None:  # running, but not answering: not a lost port
                    raise
        raise RuntimeError("redis-server found no free port")

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5, decode_responses=True)

    def start(self, timeout=10.0) -> None:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                   "--dir", str(self.workdir), "--logfile", ""]
        if self.password:
            command += ["--requirepass", self.password]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.client() as client:
                    if client.ping():
                        return
            except redis.RedisError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def kill(self) -> None:
        """Gone at once, as a crashed Redis: nothing saved, connections reset."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        self.kill()
