"""A real nginx for tests, running the shipped deploy/nginx site: its `upstream llm_gateway` and
`location /` blocks (whose `include snippets/llm-gateway-proxy.conf` reads the shipped snippet
itself), with only the upstream's address and the listening socket (plain HTTP on a loopback
port instead of TLS on 443) the test's own. `make soak` (bench/soak.py) runs the same site in
front of two instances: it imports this module without pytest (`require` imports it when a tool is missing)."""

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

from tests.backends import free_port, not_installed, wait_until

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SITE = DEPLOY / "nginx" / "llm-gateway.conf"
SNIPPET = DEPLOY / "nginx" / "llm-gateway-proxy.conf"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


def require(tool, name, why):
    """The tool's path; outside CI a missing tool skips, in CI (.ci/run installs it) it fails."""
    if tool:
        return tool
    not_installed(f"{name} is not installed ({why}); .ci/run installs it")


# --- nginx ---------------------------------------------------------------------------------------


def conf_blocks(text: str, head: str) -> list[str]:
    """Every `head { ... }` block of an nginx config, as written (comments dropped), found by
    matching braces (the shipped files keep braces out of comments and strings)."""
    code = "\n".join(line.split("#", 1)[0].rstrip() for line in text.splitlines())
    blocks = []
    for match in re.finditer(rf"(?m)^\s*({re.escape(head)}\s*\{{)", code):
        depth = 0
        for i in range(code.index("{", match.start(1)), len(code)):
            depth += {"{": 1, "}": -1}.get(code[i], 0)
            if depth == 0:
                blocks.append(code[match.start(1):i + 1])
                break
        else:
            raise AssertionError(f"'{head}' block is not closed")
    return blocks


def conf_block(text: str, head: str) -> str:
    blocks = conf_blocks(text, head)
    assert len(blocks) == 1, f"expected one '{head} {{' block in {SITE.name}, found {len(blocks)}"
    return blocks[0]


class Nginx:
    """A real nginx in `directory`, in the foreground, listening on a loopback port.

    `upstream` is one gateway's address, or a list of them (one `server` line each, as
    docs/operations.md shows for several instances)."""

    def __init__(self, directory: Path, upstream: str | list, snippet: Path = SNIPPET, worker_connections: int = 256):
        self.directory = directory
        self.worker_connections = worker_connections
        directory.mkdir(parents=True, exist_ok=True)
        # The site's own `include snippets/llm-gateway-proxy.conf;` is relative to the directory of
        # nginx.conf (/etc/nginx in production, `directory` here): it finds the shipped file.
        (directory / "snippets").mkdir(exist_ok=True)
        (directory / "snippets" / "llm-gateway-proxy.conf").symlink_to(snippet)
        site = SITE.read_text(encoding="utf-8")
        self.upstream = conf_block(site, "upstream llm_gateway")
        assert self.upstream.count("server 127.0.0.1:8000;") == 1, "the upstream's server line changed: update this test"
        servers = [upstream] if isinstance(upstream, str) else upstream
        self.upstream = self.upstream.replace("server 127.0.0.1:8000;", " ".join(f"server {address};" for address in servers))
        self.location = conf_block(site, "location /")
        self.error_log = directory / "error.log"
        for _ in range(5):  # a port free a moment ago may be taken by the time nginx binds it
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            if self._start():
                return
        raise RuntimeError(f"nginx could not get a free port:\n{self.log()}")

    def config(self) -> str:
        d = self.directory
        # Workers as root (when we are): nginx would otherwise run them as nobody, who cannot
        # enter pytest's private temporary directories.
        return f"""
{"user root;" if os.geteuid() == 0 else ""}
worker_processes 1;
events {{ worker_connections {self.worker_connections}; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    {self.upstream}
    server {{
        listen 127.0.0.1:{self.port};
        {self.location}
    }}
}}
"""

    def _start(self) -> bool:
        conf = self.directory / "nginx.conf"
        conf.write_text(self.config(), encoding="utf-8")
        d = self.directory
        self.process = subprocess.Popen(
            [NGINX, "-p", f"{d}/", "-c", str(conf), "-e", str(self.error_log),
             "-g", f"daemon off; pid {d}/nginx.pid; error_log {self.error_log};"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        wait_until(lambda: self.process.poll() is not None or self._accepts(), timeout=15, message="nginx to listen")
        if self.process.poll() is None:
            return True
        if "Address already in use" in self.log():
            return False
        raise RuntimeError(f"nginx exited with {self.process.returncode}:\n{self.log()}\n{self.config()}")

    def _accepts(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def log(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()  # fast shutdown
            self.process.wait(timeout=15)
