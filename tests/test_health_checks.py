"""Active health checks, in-process: what a probe sends and how it judges the answer (real
loopback backends), the verdicts' rules, the prober's election and the shared verdict file.
Through real gunicorn workers: test_replicas.py."""

import os
import time

import pytest

from gateway.backends.health import FAILING, OK, HealthChecks
from gateway.config import parse_config
from gateway.registry import ModelRegistry
from tests.backends import TestBackend, closed_port, wait_until
from tests.configs import backend, gateway_toml

TICKET = "tkt-secret-1234"


@pytest.fixture(scope="module")
def server():
    started = TestBackend(streaming=True)
    yield started
    started.stop()


@pytest.fixture(autouse=True)
def _reset(server):
    yield
    server.reset()


def registry_for(health_url: str, **settings) -> ModelRegistry:
    config = gateway_toml(
        backends={"gpu1": backend("http://127.0.0.1:9/v1/chat/completions", health_url=health_url, healthy_after=2,
                                  health_timeout_seconds=0.5, headers={"x-dep-ticket": "${TICKET}", "Probe-Id": "{uuid}"}, **settings)},
        models=[{"id": "m", "backend": "gpu1"}],
    )
    return ModelRegistry(parse_config(config, "test", {"TICKET": TICKET}))


def health_url(server) -> str:
    return server.url.replace("/v1/chat/completions", "/health")


def probe(registry) -> str | None:
    backend = registry.backends["gpu1"]
    return backend.probe(backend.config.headers.render({}))


def test_a_probe_is_a_get_with_the_backends_headers_and_a_2xx_passes(server):
    registry = registry_for(health_url(server) + "?key=abc")
    assert probe(registry) is None
    sent = server.last
    assert (sent.method, sent.path) == ("GET", "/health?key=abc")
    assert sent.headers["x-dep-ticket"] == TICKET and len(sent.headers["probe-id"]) == 36


@pytest.mark.parametrize("answer, problem", [
    (lambda ex: ex.send_json(503, {"status": "loading"}), "answered its health check with HTTP 503"),
    (lambda ex: ex.send_json(404, {"error": "no such path"}), "answered its health check with HTTP 404"),
    (lambda ex: ex.send_raw(302, "text/plain", b"", {"Location": "http://elsewhere/"}), "answered its health check with HTTP 302"),
    (lambda ex: time.sleep(1.5), "did not answer its health check within 0.5 s (health_timeout_seconds)"),
])
def test_anything_but_a_2xx_fails(server, answer, problem):
    server.respond_with(answer)
    assert probe(registry_for(health_url(server))) == problem


def test_a_refused_connection_fails():
    port = closed_port()
    assert probe(registry_for(f"http://127.0.0.1:{port}/health")) == f"refused the connection at http://127.0.0.1:{port}"


def checks_for(registry, run_dir=None) -> HealthChecks:
    """Health checks as a worker has them, its verdicts at their start, nothing probing yet."""
    checks = HealthChecks(registry, run_dir)
    now = time.time()
    checks.verdicts = {"gpu1": {"state": OK, "since": now, "passes": 0, "last_probe": None, "last_error": None, "last_error_at": None}}
    return checks


def test_one_failing_probe_holds_the_backend_out_and_healthy_after_passes_bring_it_back(server):
    registry = registry_for(health_url(server))
    breaker = registry.backends["gpu1"].breaker
    for _ in range(5):
        breaker.failed("refused")  # failures before the probe noticed: a passive cooldown of 30 s
    assert breaker.skips() and breaker.cooling_until
    checks = checks_for(registry)
    checks.record("gpu1", "answered its health check with HTTP 503", time.time())
    assert checks.verdicts["gpu1"]["state"] == FAILING and breaker.probe_failing == "answered its health check with HTTP 503"
    assert breaker.skips() and not breaker.allows()
    checks.record("gpu1", None, time.time())
    assert checks.verdicts["gpu1"]["state"] == FAILING and breaker.skips()  # one pass of two
    checks.record("gpu1", None, time.time())
    assert checks.verdicts["gpu1"]["state"] == OK
    assert not breaker.skips() and breaker.allows() and breaker.cooling_until == 0.0  # whatever cooldown_seconds said
    shown = checks.status("gpu1")
    assert (shown["state"], shown["last_error"], shown["url"]) == ("ok", "answered its health check with HTTP 503", health_url(server))


def test_one_prober_per_run_directory_and_another_takes_over(server, tmp_path):
    registry, other = (registry_for(health_url(server), health_interval_seconds=0.1) for _ in range(2))
    first, second = checks_for(registry, str(tmp_path)), checks_for(other, str(tmp_path))
    assert first._elected() and not second._elected()
    first.probing, first.prober = True, 1234
    first.record("gpu1", "refused the connection at http://127.0.0.1:9", time.time())
    second._look()  # what the other workers do every 0.5 s
    assert other.backends["gpu1"].breaker.probe_failing == "refused the connection at http://127.0.0.1:9"
    assert second.status("gpu1")["prober_pid"] == 1234
    first.stop()  # its lock goes with it
    assert second._elected()
    second._start_probing()  # carries on from the file: still failing, two passes to go
    try:
        assert second.verdicts["gpu1"]["state"] == FAILING
        wait_until(lambda: second.verdicts["gpu1"]["state"] == OK, timeout=5, message="two passing probes")
        assert not other.backends["gpu1"].breaker.skips()
    finally:
        second.stop()


def test_without_health_url_nothing_is_probed(server):
    config = gateway_toml(backends={"gpu1": backend(server.url)}, models=[{"id": "m", "backend": "gpu1"}])
    checks = HealthChecks(ModelRegistry(parse_config(config, "test", {})))
    checks.start()
    assert checks.status("gpu1") is None and not checks.probing
    assert [r for r in server.requests if r.path.endswith("/health")] == []


def test_the_app_alone_probes_for_itself_and_a_one_backend_model_fails_fast(server):
    from app import create_app

    server.healthy = False
    config = gateway_toml(
        backends={"gpu1": backend(server.url, streaming=True, health_url=health_url(server), health_interval_seconds=0.5, healthy_after=3)},
        models=[{"id": "m", "backend": "gpu1"}],
    )
    app = create_app(parse_config(config, "test", {}))
    registry = app.extensions["registry"]
    try:
        wait_until(lambda: registry.backends["gpu1"].breaker.probe_failing, timeout=5, message="the first probe")
        response = app.test_client().post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        error = response.get_json()["error"]
        assert (response.status_code, error["code"], response.headers["Retry-After"]) == (502, "backend_cooling_down", "2")
        assert error["message"] == "Backend 'gpu1' is cooling down: its health check fails (answered its health check with HTTP 503)"
        assert [r for r in server.requests if r.method == "POST"] == []
        status = app.test_client().get("/status.json").get_json()
        assert (status["backends"][0]["health"], status["backends"][0]["state"]) == ("failing", "cooling_down")
        assert status["backends"][0]["health_check"]["prober_pid"] == os.getpid()
    finally:
        registry.close()
