"""deploy/: what operators copy (nginx site, systemd unit, Dockerfile), tried for real as far as
this machine allows.

- nginx: a real nginx runs the shipped `upstream llm_gateway` and `location /` blocks of
  deploy/nginx/llm-gateway.conf, whose `include snippets/llm-gateway-proxy.conf` reads the shipped
  deploy/nginx/llm-gateway-proxy.conf itself. Only the upstream's address and the listening socket
  (plain HTTP on a loopback port instead of TLS on 443) are the test's own; the whole site,
  TLS server included, is checked with `nginx -t`.
- systemd: `systemd-analyze verify` on the unit, with only the checkout's location changed; the
  reload's config check is run against a good and a broken config.
- Dockerfile: no container engine here, so: it installs and starts what `make run` does, the files
  it copies are enough to serve, and its HEALTHCHECK command passes against them (and fails
  against nothing).
"""

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.backends import TestBackend, closed_port, free_port, wait_until
from tests.certificates import TestCA
from tests.gunicorn_server import GUNICORN, GatewayServer
from tests.sse_client import content_of, data_payloads, iter_events

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SITE = DEPLOY / "nginx" / "llm-gateway.conf"
SNIPPET = DEPLOY / "nginx" / "llm-gateway-proxy.conf"
UNIT = DEPLOY / "systemd" / "llm-gateway.service"
DOCKERFILE = DEPLOY / "Dockerfile"
MAKEFILE = ROOT / "Makefile"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)

PIECES = ["one ", "two ", "three ", "four ", "five"]
PACE = 0.3  # seconds between the backend's events
MAX_BODY = 20_000_000  # the gateway's default max_request_bytes
DEFAULT_READ_TIMEOUT = 300  # the longest default backend read_timeout (README, Configuration)


def require(tool, name, why):
    """The tool's path; outside CI a missing tool skips, in CI (.ci/run installs it) it fails."""
    if tool:
        return tool
    if os.environ.get("CI"):
        pytest.fail(f"{name} is not installed: .ci/run installs it ({why})")
    pytest.skip(f"{name} is not installed ({why}); .ci/run installs it in CI")


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
    """A real nginx in `directory`, in the foreground, listening on a loopback port."""

    def __init__(self, directory: Path, upstream: str, snippet: Path = SNIPPET):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        # The site's own `include snippets/llm-gateway-proxy.conf;` is relative to the directory of
        # nginx.conf (/etc/nginx in production, `directory` here): it finds the shipped file.
        (directory / "snippets").mkdir(exist_ok=True)
        (directory / "snippets" / "llm-gateway-proxy.conf").symlink_to(snippet)
        site = SITE.read_text(encoding="utf-8")
        self.upstream = conf_block(site, "upstream llm_gateway")
        assert self.upstream.count("server 127.0.0.1:8000;") == 1, "the upstream's server line changed: update this test"
        self.upstream = self.upstream.replace("server 127.0.0.1:8000;", f"server {upstream};")
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
events {{ worker_connections 256; }}
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


@pytest.fixture(scope="module")
def nginx_binary():
    return require(NGINX, "nginx", "apt-get install nginx")


@pytest.fixture(scope="module")
def llm_backend():
    backend = TestBackend(streaming=True)
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def deploy_gateway(llm_backend, tmp_path_factory):
    config = f"""
[backends.llm]
url = "{llm_backend.url}"
streaming = true

[[models]]
id = "paced"
backend = "llm"
"""
    server = GatewayServer(config, tmp_path_factory.mktemp("deploy-gateway"), workers=1)
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def nginx(nginx_binary, deploy_gateway, tmp_path_factory):
    server = Nginx(tmp_path_factory.mktemp("nginx"), f"127.0.0.1:{deploy_gateway.port}")
    yield server
    server.stop()


@pytest.fixture
def paced_backend(llm_backend):
    llm_backend.respond_with(lambda exchange: exchange.paced_reply(PIECES, PACE))
    yield llm_backend
    llm_backend.reset()


def chat(stream: bool) -> dict:
    return {"model": "paced", "stream": stream, "messages": [{"role": "user", "content": "count to five"}]}


def content_arrivals(base_url: str) -> tuple[list[float], list]:
    """Streams a chat from `base_url`; returns when each content event arrived, and every payload."""
    arrivals, items = [], []
    with requests.post(base_url + "/v1/chat/completions", json=chat(True), stream=True, timeout=30) as response:
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("text/event-stream")
        for item in iter_events(response):
            items.append(item)
            payloads = data_payloads([item])
            if content_of(payloads):
                arrivals.append(time.monotonic())
    return arrivals, data_payloads(items)


def test_a_stream_reaches_the_client_through_nginx_event_by_event(nginx, paced_backend):
    arrivals, payloads = content_arrivals(nginx.url)
    assert content_of(payloads) == "".join(PIECES)
    assert payloads[-1] == "[DONE]"
    assert len(arrivals) == len(PIECES)
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:])]
    # Relayed as they come, each event arrives about PACE after the one before; an nginx that
    # holds the stream back delivers them all at once at its end (the control test below).
    assert all(gap >= PACE / 3 for gap in gaps), f"events arrived bunched, {gaps} s apart: nginx buffered the stream"
    assert arrivals[-1] - arrivals[0] >= 0.75 * PACE * (len(PIECES) - 1)


def test_the_timing_check_catches_a_buffering_nginx(nginx_binary, deploy_gateway, paced_backend, tmp_path):
    """The check above could fail: the shipped snippet with buffering on (the gateway's
    X-Accel-Buffering: no ignored) and gzip for text/event-stream delivers the same stream in one
    piece at its end. (Either change alone does not, with nginx 1.22: each of the two shipped
    directives is enough by itself.)"""
    shipped = SNIPPET.read_text(encoding="utf-8")
    assert shipped.count("proxy_buffering off;") == 1 and shipped.count("gzip off;") == 1
    buffering = tmp_path / "buffering-proxy.conf"
    buffering.write_text(
        shipped.replace("proxy_buffering off;", "proxy_buffering on; proxy_ignore_headers X-Accel-Buffering;")
        .replace("gzip off;", "gzip on; gzip_types text/event-stream; gzip_min_length 1;"))
    server = Nginx(tmp_path / "nginx", f"127.0.0.1:{deploy_gateway.port}", snippet=buffering)
    try:
        arrivals, payloads = content_arrivals(server.url)
    finally:
        server.stop()
    assert content_of(payloads) == "".join(PIECES)
    assert arrivals[-1] - arrivals[0] < PACE / 3, f"a buffering nginx still delivered events {arrivals[-1] - arrivals[0]:.3f} s apart"


def test_a_non_streamed_chat_works_through_nginx(nginx):
    response = requests.post(nginx.url + "/v1/chat/completions", json=chat(False), timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers.get("X-Request-Id")  # the gateway's answer, passed through
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "echo 1: count to five"


def test_nginx_body_limit_is_the_gateways_limit(nginx):
    """client_max_body_size is max_request_bytes exactly: a body at the limit reaches the gateway
    (which answers, here 400 for not being JSON); one byte more is refused by nginx with 413."""
    at_limit = b"x" * MAX_BODY
    response = requests.post(nginx.url + "/v1/chat/completions", data=at_limit, timeout=60,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text[:300]
    assert response.headers.get("X-Request-Id"), "not the gateway's answer"
    assert "error" in response.json()

    # One byte over: nginx refuses on the Content-Length alone, so no body needs to be sent.
    with socket.create_connection(("127.0.0.1", nginx.port), timeout=10) as sock:
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {MAX_BODY + 1}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(65536)
            assert data, f"nginx closed the connection without an answer: {head!r}"
            head += data
    status_line, *headers = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    assert status_line.split(" ")[1] == "413", status_line
    # nginx's own page, not the gateway's 413 passed through (that carries X-Request-Id).
    assert not any(h.lower().startswith("x-request-id:") for h in headers), "refused by the gateway, not by nginx"


def test_nginx_sends_trustworthy_forwarded_headers_over_kept_alive_connections(nginx_binary, tmp_path):
    """What the gateway receives from nginx: X-Forwarded-* set by nginx (a client's own
    X-Forwarded-For is replaced, not appended to), and one reused HTTP/1.1 connection."""
    recorder = TestBackend(streaming=False)
    client_ports = []

    def record_port(exchange):
        client_ports.append(exchange.handler.client_address[1])
        exchange.send_json(200, {"ok": True})

    recorder.respond_with(record_port)
    server = None
    try:
        server = Nginx(tmp_path / "nginx", f"127.0.0.1:{recorder.port}")
        spoofed = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}
        for _ in range(2):
            response = requests.post(server.url + "/v1/chat/completions", json=chat(False), headers=spoofed, timeout=10)
            assert response.status_code == 200, response.text
    finally:
        if server:
            server.stop()
        recorder.stop()
    headers = recorder.last.headers
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"  # this test nginx speaks plain HTTP
    assert headers["x-forwarded-host"] == "127.0.0.1"
    assert headers["host"] == "127.0.0.1"
    assert "connection" not in headers  # no "Connection: close": the connection can be kept
    assert len(client_ports) == 2 and client_ports[0] == client_ports[1], f"nginx opened a connection per request: {client_ports}"


def test_the_whole_site_passes_nginx_t(nginx_binary, tmp_path):
    """The TLS and redirect servers the live tests leave out: nginx accepts the whole site, with
    only the placeholder certificate paths pointing at a test certificate."""
    site = SITE.read_text(encoding="utf-8")
    cert, key = TestCA(tmp_path / "ca").issue("llm-gateway.example.com", hosts=("llm-gateway.example.com",))
    for placeholder, real in (("/etc/ssl/certs/llm-gateway.example.com.pem", cert), ("/etc/ssl/private/llm-gateway.example.com.key", key)):
        assert site.count(placeholder) == 1, f"placeholder {placeholder} changed: update this test"
        site = site.replace(placeholder, str(real))
    (tmp_path / "snippets").mkdir()
    (tmp_path / "snippets" / "llm-gateway-proxy.conf").symlink_to(SNIPPET)
    (tmp_path / "site.conf").write_text(site, encoding="utf-8")
    (tmp_path / "nginx.conf").write_text(
        "events {}\nhttp {\n"
        + "".join(f"    {kind}_temp_path {tmp_path}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        + f"    include {tmp_path}/site.conf;\n}}\n", encoding="utf-8")
    # `nginx -t` reads certificates and checks every directive, but binds no port.
    result = subprocess.run([nginx_binary, "-t", "-p", f"{tmp_path}/", "-c", str(tmp_path / "nginx.conf"),
                             "-e", str(tmp_path / "error.log"), "-g", f"pid {tmp_path}/nginx.pid;"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "[warn]" not in result.stderr and "[emerg]" not in result.stderr, result.stderr
    # What the live tests leave out: plain HTTP only redirects, and the proxying is served over TLS.
    plain, tls = conf_blocks(SITE.read_text(encoding="utf-8"), "server")
    assert "listen 80;" in plain and "return 308 https://$host$request_uri;" in plain and "location" not in plain
    assert "listen 443 ssl;" in tls and conf_block(tls, "location /") == conf_block(SITE.read_text(encoding="utf-8"), "location /")


def test_nginx_waits_longer_than_any_backend_may_take():
    timeout = re.search(r"(?m)^proxy_read_timeout (\d+)s;", SNIPPET.read_text())
    assert timeout and int(timeout.group(1)) > DEFAULT_READ_TIMEOUT


# --- systemd -------------------------------------------------------------------------------------

VENV_BIN = "/opt/llm-gateway/.venv/bin/"


def unit_here(tmp_path: Path) -> Path:
    """The shipped unit with only the checkout's place changed (/opt/llm-gateway is not here)."""
    text = UNIT.read_text(encoding="utf-8")
    assert VENV_BIN in text and "WorkingDirectory=/opt/llm-gateway\n" in text, "the unit's paths changed: update this test"
    text = text.replace(VENV_BIN, f"{GUNICORN.parent}/").replace("WorkingDirectory=/opt/llm-gateway\n", f"WorkingDirectory={ROOT}\n")
    path = tmp_path / UNIT.name
    path.write_text(text, encoding="utf-8")
    return path


def unit_settings(name: str) -> list[str]:
    return [line.split("=", 1)[1] for line in UNIT.read_text().splitlines() if line.startswith(name + "=")]


def verify(unit: Path):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed (Debian's systemd package)")
    result = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0 and re.search(r"not been booted with systemd|Failed to (initialize|connect to) (manager|bus)", output):
        pytest.skip(f"systemd-analyze cannot work on this machine: {output}")
    return result.returncode, output


def test_the_systemd_unit_verifies(tmp_path):
    returncode, output = verify(unit_here(tmp_path))
    # Every line systemd-analyze prints is a problem (unknown key, bad value, missing program).
    assert (returncode, output) == (0, "")


def test_systemd_analyze_would_catch_a_broken_unit(tmp_path):
    """The check above could fail: a misspelled key and a missing program are reported."""
    unit = unit_here(tmp_path)
    unit.write_text(unit.read_text().replace("KillMode=mixed", "KilMode=mixed").replace(f"{GUNICORN.parent}/gunicorn -c", "/nonexistent/gunicorn -c"))
    returncode, output = verify(unit)
    assert returncode != 0 and "KilMode" in output and "/nonexistent/gunicorn" in output, output


def test_the_unit_runs_what_make_run_runs():
    (exec_start,) = unit_settings("ExecStart")
    assert exec_start == f"{VENV_BIN}{make_run_command()}"
    (workdir,) = unit_settings("WorkingDirectory")
    assert VENV_BIN == f"{workdir}/.venv/bin/"  # the checkout's own virtualenv, as `make run` makes it
    assert unit_settings("User") == ["llm-gateway"]
    assert unit_settings("Restart") == ["on-failure"]
    assert unit_settings("ExecReload")[-1] == "/bin/kill -HUP $MAINPID"
    assert unit_settings("KillSignal") == ["SIGTERM"]
    # gunicorn.conf.py's own default, read in a separate interpreter (the file changes sys.path).
    environ = {k: v for k, v in os.environ.items() if k != "GATEWAY_GRACEFUL_TIMEOUT"}
    graceful = int(subprocess.run(
        [sys.executable, "-c", "import runpy; print(runpy.run_path('gunicorn.conf.py')['graceful_timeout'])"],
        cwd=ROOT, env=environ, capture_output=True, text=True, timeout=30, check=True).stdout)
    (stop_timeout,) = unit_settings("TimeoutStopSec")
    assert int(stop_timeout) > graceful, "systemd would kill streams the gateway still lets finish"


def test_reload_refuses_a_broken_config_before_the_hup(tmp_path):
    """The unit's first ExecReload, run as systemd would (from the checkout), passes a good config
    and fails on a broken one, so `systemctl reload` never HUPs the gateway into one."""
    check, hup = unit_settings("ExecReload")
    assert hup == "/bin/kill -HUP $MAINPID"
    command = shlex.split(check.replace(VENV_BIN, f"{GUNICORN.parent}/"))
    good, broken = tmp_path / "good.toml", tmp_path / "broken.toml"
    good.write_text('[backends.b]\nurl = "demo://echo"\n\n[[models]]\nid = "m"\nbackend = "b"\n')
    broken.write_text('[[models]]\nid = "m"\nbackend = "missing"\n')
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_") and k != "PYTHONPATH"}
    results = {
        config.name: subprocess.run(command, cwd=ROOT, env={**environ, "GATEWAY_CONFIG": str(config)},
                                    capture_output=True, text=True, timeout=60)
        for config in (good, broken)
    }
    assert results["good.toml"].returncode == 0, results["good.toml"].stderr
    assert results["broken.toml"].returncode != 0
    assert "llm-gateway cannot start" in results["broken.toml"].stderr


# --- Dockerfile ----------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [tuple(line.split(None, 1)) for line in lines]


def instructions(name: str) -> list[str]:
    return [args for instruction, args in dockerfile() if instruction == name]


def make_recipe(target: str) -> list[str]:
    lines = MAKEFILE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def make_run_command() -> str:
    (command,) = make_recipe("run")
    assert command.startswith("$(BIN)/")
    return command.removeprefix("$(BIN)/")


def test_the_image_installs_and_starts_what_make_run_does():
    (pip_make,) = [line for line in make_recipe("$(VENV)/.runtime") if " install " in line]
    pip_image = [run for run in instructions("RUN") if "pip install" in run]
    assert len(pip_image) == 1
    assert re.findall(r"-r (\S+)", pip_image[0]) == re.findall(r"-r (\S+)", pip_make) == ["requirements.txt"]
    assert json.loads(instructions("CMD")[-1]) == make_run_command().split()
    (base,) = instructions("FROM")
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base
    (user,) = instructions("USER")
    assert user.split(":")[0] not in ("root", "0")
    assert "GATEWAY_BIND=0.0.0.0:8000" in instructions("ENV")
    assert instructions("EXPOSE") == ["8000"]
    # .dockerignore keeps the virtualenv and a local config out, and nothing the image copies.
    ignored = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert ".venv" in ignored and "gateway.toml" in ignored
    copied = {source.rstrip("/") for args in instructions("COPY") for source in shlex.split(args)[:-1]}
    assert not {source for source in copied if any(fnmatch.fnmatch(source, pattern) for pattern in ignored)}


def healthcheck_command() -> list[str]:
    (healthcheck,) = instructions("HEALTHCHECK")
    exec_form = json.loads(healthcheck[healthcheck.index("CMD ") + 4:])
    assert exec_form[0] == "python" and "/healthz" in exec_form[-1]
    return [sys.executable, *exec_form[1:]]  # the image's python is ours here


def copy_image_files(app: Path):
    """The files the image's COPY instructions put into WORKDIR, copied from the checkout."""
    copies = [shlex.split(args) for args in instructions("COPY")]
    for *sources, destination in copies:
        assert not any(s.startswith("--") for s in sources), "COPY options: update this test"
        for source in sources:
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, app / destination, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                assert destination.endswith("/"), destination
                (app / destination).mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / source, app / destination)


def test_the_image_files_serve_and_pass_the_healthcheck(tmp_path):
    """The image's CMD, started in a directory holding only what its COPY lines copy (plus our
    virtualenv for its pip install), answers chats and the status page, and its HEALTHCHECK
    command passes; against a port nobody listens on, it fails."""
    app = tmp_path / "app"
    copy_image_files(app)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_") and k != "PYTHONPATH"}
    command = json.loads(instructions("CMD")[-1])
    log = open(tmp_path / "gateway.log", "wb")
    process = subprocess.Popen([str(GUNICORN), *command[1:]], cwd=app, stdout=log, stderr=subprocess.STDOUT,
                               env={**environ, "GATEWAY_BIND": f"fd://{sock.fileno()}", "GATEWAY_WORKERS": "1"},
                               pass_fds=(sock.fileno(),))
    sock.close()
    url = f"http://127.0.0.1:{port}"

    def healthy():
        assert process.poll() is None, (tmp_path / "gateway.log").read_text()
        try:
            return requests.get(url + "/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_until(healthy, timeout=30, interval=0.05, message="the image's files to serve /healthz")
        # As in the image: GATEWAY_BIND=0.0.0.0:<port>, and the check asks 127.0.0.1 on that port,
        # directly even when a proxy for the backends is set (this one refuses connections).
        proxy = f"http://127.0.0.1:{closed_port()}"
        check = subprocess.run(healthcheck_command(), capture_output=True, text=True, timeout=30,
                               env={**environ, "GATEWAY_BIND": f"0.0.0.0:{port}", "HTTP_PROXY": proxy, "http_proxy": proxy})
        assert check.returncode == 0, check.stderr
        assert requests.get(url + "/", timeout=10).status_code == 200  # the status page's templates are there
        # "Connection: close": a response object still referenced keeps its idle connection open,
        # and the shutdown below would wait out gunicorn's keep-alive for it.
        answer = requests.post(url + "/v1/chat/completions", timeout=10, headers={"Connection": "close"},
                               json={"model": "demo-echo", "messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 200, answer.text
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        log.close()
    down = subprocess.run(healthcheck_command(), env={**environ, "GATEWAY_BIND": f"0.0.0.0:{closed_port()}"},
                          capture_output=True, text=True, timeout=30)
    assert down.returncode != 0
