"""kill -HUP reloads the config; a bad one is refused and the old one keeps serving. The master's
run directory (metrics, the config snapshot) is removed on exit, and left-overs of dead masters
are removed at start-up."""

import glob
import os
import signal
import tempfile
import threading

import requests

from tests.backends import wait_until
from tests.configs import backend, gateway_toml, model
from tests.gunicorn_server import GatewayServer
from tests.sse_client import data_payloads, read_events


def config_with(openai_url: str, *model_ids: str, **extra_backend) -> str:
    return gateway_toml(
        backends={"openai": backend(openai_url, streaming=True, **extra_backend)},
        models=[model(model_id, "openai") for model_id in model_ids],
    )


def served_models(server) -> list:
    # Right after a reload the answer may wait for a new worker to boot: seconds on a busy machine.
    return [m["id"] for m in requests.get(server.url + "/v1/models", timeout=30).json()["data"]]


def run_dirs(pid: int) -> list:
    return glob.glob(os.path.join(tempfile.gettempdir(), f"llm-gateway-{pid}-*"))


def refusals(server) -> list:
    return [line for line in server.log().splitlines() if "reload refused" in line]


def stream_in_background(server) -> tuple:
    """A chat stream for model `first`, read in a thread: (the thread, {"payloads": [...]} once done)."""
    body = {"model": "first", "stream": True, "messages": [{"role": "user", "content": "count"}]}
    result = {}

    def stream():
        with requests.post(server.url + "/v1/chat/completions", json=body, stream=True, timeout=30) as response:
            result["payloads"] = data_payloads(read_events(response))

    reader = threading.Thread(target=stream)
    reader.start()
    return reader, result


def test_a_refused_reload_leaves_the_running_workers_and_their_streams_alone(openai_backend, tmp_path):
    """gunicorn's own reload would retire every worker, cutting streams longer than the graceful
    timeout; a refused one must not touch them: same pids, every stream to its end."""
    server = GatewayServer(config_with(openai_backend.url, "first"), tmp_path, workers=2, env={"GATEWAY_GRACEFUL_TIMEOUT": "1"}).wait_ready()
    wait_until(lambda: len(server.worker_pids()) == 2, message="both workers")
    workers = server.worker_pids()
    openai_backend.respond_with(lambda exchange: exchange.paced_reply([str(i) for i in range(12)], 0.25))  # 3 s: past the graceful 1 s
    try:
        reader, result = stream_in_background(server)
        wait_until(lambda: openai_backend.requests, message="the stream to reach the backend")
        (tmp_path / "gateway.toml").write_text(config_with(openai_backend.url, "second", colour="blue"), encoding="utf-8")
        server.process.send_signal(signal.SIGHUP)
        refusal = wait_until(lambda: refusals(server), message="the refusal")
        assert len(refusal) == 1
        assert str(tmp_path / "gateway.toml") in refusal[0] and "backends.openai.colour" in refusal[0] and "unknown key" in refusal[0]
        reader.join(timeout=30)
        assert result["payloads"][-1] == "[DONE]" and len(result["payloads"]) == 14
        assert not any("error" in payload for payload in result["payloads"])
        assert server.worker_pids() == workers and server.log().count("Booting worker") == 2
        assert served_models(server) == ["first"] and server.process.poll() is None
    finally:
        server.stop()


def test_a_good_reload_applies_while_streams_finish_on_the_old_workers(openai_backend, tmp_path):
    server = GatewayServer(config_with(openai_backend.url, "first"), tmp_path).wait_ready()
    config_file = tmp_path / "gateway.toml"
    try:
        # A stream in flight when a good reload comes finishes on its old worker.
        openai_backend.respond_with(lambda exchange: exchange.paced_reply([str(i) for i in range(8)], 0.15))
        reader, result = stream_in_background(server)
        wait_until(lambda: openai_backend.requests, message="the stream to reach the backend")
        config_file.write_text(config_with(openai_backend.url, "first", "second"), encoding="utf-8")
        server.process.send_signal(signal.SIGHUP)
        wait_until(lambda: served_models(server) == ["first", "second"], timeout=20, message="the new config")
        reader.join(timeout=30)
        assert result["payloads"][-1] == "[DONE]" and len(result["payloads"]) == 10
    finally:
        server.stop()


def test_the_run_directory_goes_with_the_master_and_dead_masters_leftovers_are_removed(openai_backend, tmp_path):
    dead = tempfile.mkdtemp(prefix="llm-gateway-999999999-")  # no process has this pid
    server = GatewayServer(config_with(openai_backend.url, "m"), tmp_path).wait_ready()
    try:
        assert not os.path.exists(dead)
        mine = run_dirs(server.process.pid)
        assert len(mine) == 1 and os.path.isdir(os.path.join(mine[0], "metrics"))
    finally:
        server.stop()
    assert run_dirs(server.process.pid) == []


def test_a_reload_with_a_tls_file_only_openssl_rejects_is_refused(openai_backend, tmp_path):
    """The master does not load ssl; a worker would fail to boot on this file and halt gunicorn."""
    server = GatewayServer(config_with(openai_backend.url, "first"), tmp_path).wait_ready()
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    try:
        tls_backend = "https://127.0.0.1:9/v1/chat/completions"  # a worker builds its TLS context at boot
        (tmp_path / "gateway.toml").write_text(config_with(tls_backend, "second", ca_bundle=str(broken)), encoding="utf-8")
        workers = server.worker_pids()
        server.process.send_signal(signal.SIGHUP)
        refusal = wait_until(lambda: refusals(server), timeout=60, message="the refusal")
        assert "backends.openai.ca_bundle: not a usable CA bundle" in refusal[0]
        assert server.worker_pids() == workers and server.log().count("Booting worker") == 1
        assert served_models(server) == ["first"] and server.process.poll() is None
    finally:
        server.stop()
