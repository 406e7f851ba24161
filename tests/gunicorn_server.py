"""Starting the real gateway for tests: gunicorn with gevent workers and the production gunicorn.conf.py.

The listening socket is made here and handed to gunicorn as `fd://N`, so there is no race for a
free port. Everything the server writes to stderr is kept in a file, for assertions, and searched
for the suite's secrets at the end of the run (tests/secret_scan.py).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests import secret_scan

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).with_name("gunicorn")
PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy", "requests_ca_bundle", "curl_ca_bundle", "ssl_cert_file"}


class GatewayServer:
    def __init__(self, config_text: str | None, workdir: Path, env=None, workers=1):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "gateway.stderr"
        secret_scan.watch_log(self.log_path)
        # Nothing of the machine's own gateway or proxy settings leaks into a test's gateway.
        environ = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_") and k.lower() not in PROXY_VARIABLES}
        if config_text is not None:
            config_path = workdir / "gateway.toml"
            config_path.write_text(config_text, encoding="utf-8")
            environ["GATEWAY_CONFIG"] = str(config_path)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        environ.update({"GATEWAY_BIND": f"fd://{self.sock.fileno()}", "GATEWAY_WORKERS": str(workers), **(env or {})})
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [str(GUNICORN), "-c", str(ROOT / "gunicorn.conf.py"), "wsgi:app"],
            cwd=workdir,  # never the checkout: a developer's own gateway.toml there must not leak in
            env={**environ, "PYTHONPATH": str(ROOT)},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            pass_fds=(self.sock.fileno(),),
        )
        # gunicorn holds the listening socket now; keeping our copy open would let the kernel
        # queue connections after gunicorn closed its listeners, hiding "new connections refused".
        self.sock.close()

    def wait_ready(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:  # refused, or accepted by the master before a worker booted
                pass
            time.sleep(0.05)
        raise RuntimeError(f"gateway not ready after {timeout} s:\n{self.log()}")

    def worker_pids(self) -> set:
        """The pids of the master's worker processes now."""
        master = self.process.pid
        with open(f"/proc/{master}/task/{master}/children", encoding="ascii") as handle:
            return {int(pid) for pid in handle.read().split()}

    def wait_exit(self, timeout=30.0) -> int:
        return self.process.wait(timeout=timeout)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def access_lines(self) -> list:
        """The access log's lines (JSON objects) the gateway has written whole: the line being
        written at this moment is not one yet (read half-written, it is not JSON)."""
        text = self.log()
        return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines() if line.startswith("{")]

    def access_line(self, request_id: str) -> dict | None:
        """The access-log line of the request with this X-Request-Id, once it is written."""
        return next((line for line in self.access_lines() if line.get("request_id") == request_id), None)

    def stop(self, sig=signal.SIGTERM, timeout=60.0):
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def fd_targets(pid: int) -> list:
    """What each of the process's open file descriptors points at ("socket:[inode]", a path). A
    descriptor closed between listing and reading is left out: the process runs on meanwhile."""
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            pass
    return targets
