"""The status page, /status.json, /metrics and health, with numbers from two workers together.

A gateway with two gevent workers serves a mix of successful, failing and cancelled requests;
every number must be the exact total of both workers, whichever one answers. A real headless
Chromium (Debian's package) loads the page, and a screenshot lands in test-output/.
"""

import glob
import json
import os
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.backends import chunk_json, completion_json, not_installed, wait_until
from tests.configs import backend, gateway_toml, model
from tests.conftest import NO_BREAKER, TICKET
from tests.gunicorn_server import ROOT, GatewayServer
from tests.sse_client import iter_events

URL_SECRET = "urltoken-5c1e9a77d2"  # a secret in the backend's query string: never shown
OUTPUT = ROOT / "test-output"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def metrics_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("metrics")


@pytest.fixture(scope="module")
def observed(openai_backend, corp_backend, metrics_dir, tmp_path_factory):
    config = gateway_toml(
        gateway={"heartbeat_seconds": 0.5},
        backends={
            "openai": backend(openai_backend.url, streaming=True, **NO_BREAKER),
            "corp": backend(corp_backend.url + "?token=${URL_SECRET}", headers={"x-dep-ticket": "${CORP_TICKET}"}, **NO_BREAKER),
        },
        models=[model("relay", "openai", name="Relay model"), model("Gauss2-37b-instruct-v1.0", "corp")],
    )
    server = GatewayServer(config, tmp_path_factory.mktemp("observed"), workers=2,
                           env={"CORP_TICKET": TICKET, "URL_SECRET": URL_SECRET, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def workers_that_counted(metrics_dir) -> int:
    """Workers that have finished a request: a histogram file appears with its first observation
    (counter files appear as a worker starts: some counters have no labels)."""
    return len(glob.glob(os.path.join(metrics_dir, "histogram_*.db")))


def success(gateway, stream):
    body = {"model": "Gauss2-37b-instruct-v1.0", "messages": MESSAGES, "stream": stream}
    with requests.post(gateway.url + "/v1/chat/completions", json=body, stream=stream, timeout=30) as response:
        assert response.status_code == 200
        response.content


def cancelled(gateway):
    body = {"model": "relay", "messages": MESSAGES, "stream": True}
    with requests.post(gateway.url + "/v1/chat/completions", json=body, stream=True, timeout=30) as response:
        next(iter_events(response))


def failing(gateway):
    body = {"model": "relay", "messages": MESSAGES}
    assert requests.post(gateway.url + "/v1/chat/completions", json=body, timeout=30).status_code == 502


@pytest.fixture(scope="module")
def traffic(observed, openai_backend, corp_backend, metrics_dir):
    """Sends batches of the mix until both workers have counted some; returns what was sent."""
    def relay(exchange):
        if not exchange.body.get("stream"):
            exchange.send_json(500, {"error": {"message": "relay backend down for non-streaming"}})
            return
        exchange.start_sse()
        exchange.event(chunk_json(delta={"role": "assistant", "content": "x"}))
        exchange.wait_for_client_close(timeout=30)

    openai_backend.respond_with(relay)
    sent = {"ok": 0, "failed": 0, "cancelled": 0}
    try:
        for _ in range(10):
            with ThreadPoolExecutor(12) as pool:
                jobs = [pool.submit(success, observed, i % 2 == 0) for i in range(8)]
                jobs += [pool.submit(failing, observed) for _ in range(3)]
                jobs += [pool.submit(cancelled, observed) for _ in range(2)]
                for job in jobs:
                    job.result()
            sent["ok"] += 8
            sent["failed"] += 3
            sent["cancelled"] += 2
            if workers_that_counted(metrics_dir) >= 2:
                break
    finally:
        openai_backend.reset()
        corp_backend.reset()
    assert workers_that_counted(metrics_dir) == 2, "every request landed on one worker: nothing proves the totals"
    # every request finished (cancelled ones included) before the numbers are read
    wait_until(lambda: sum(b["in_flight"] for b in requests.get(observed.url + "/status.json", timeout=5).json()["backends"]) == 0)
    return sent


def parse_metrics(gateway):
    response = requests.get(gateway.url + "/metrics", timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    return {family.name: family for family in text_string_to_metric_families(response.text)}, response.text


def total(family, sample_name, **labels):
    return sum(s.value for s in family.samples if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_count_every_worker(observed, traffic):
    for _ in range(4):  # whichever worker answers, the numbers are the same
        families, text = parse_metrics(observed)
        requests_family = families["llm_gateway_requests"]
        assert total(requests_family, "llm_gateway_requests_total", backend="corp", status="200") == traffic["ok"]
        assert total(requests_family, "llm_gateway_requests_total", backend="openai", status="502") == traffic["failed"]
        assert total(requests_family, "llm_gateway_requests_total", backend="openai", status="200", stream="true") == traffic["cancelled"]
        assert total(families["llm_gateway_backend_errors"], "llm_gateway_backend_errors_total", backend="openai", kind="5xx") == traffic["failed"]
        assert total(families["llm_gateway_client_disconnects"], "llm_gateway_client_disconnects_total", backend="openai") == traffic["cancelled"]
        assert total(families["llm_gateway_request_duration_seconds"], "llm_gateway_request_duration_seconds_count", backend="corp") == traffic["ok"]
        assert total(families["llm_gateway_in_flight_requests"], "llm_gateway_in_flight_requests") == 0
        assert total(families["llm_gateway_time_to_first_byte_seconds"], "llm_gateway_time_to_first_byte_seconds_count") == sum(traffic.values())
        assert "llm_gateway_status_window" not in text  # the page's internal gauges stay internal


def test_status_json_counts_every_worker(observed, traffic):
    # The page's history is up to a second behind: each worker writes its counts to a file of the
    # run directory about once a second (telemetry/window.py). Once every worker's file holds its
    # calls, whichever worker answers sees them all.
    expected = {"corp": traffic["ok"], "openai": traffic["failed"] + traffic["cancelled"]}
    wait_until(lambda: history_files_count(observed) == expected, message="every worker's calls in its history file")
    for _ in range(4):
        status = requests.get(observed.url + "/status.json", timeout=10).json()
        backends = {b["name"]: b for b in status["backends"]}
        corp, relay = backends["corp"], backends["openai"]
        assert (corp["requests_5m"], corp["errors_5m"], corp["requests_60m"]) == (traffic["ok"], 0, traffic["ok"])
        assert relay["requests_5m"] == traffic["failed"] + traffic["cancelled"] and relay["errors_5m"] == traffic["failed"]
        assert relay["last_error"]["kind"] == "5xx" and corp["last_success"] and corp["last_error"] is None
        assert corp["ttfb_seconds"]["p50"] > 0 and corp["duration_seconds"]["p95"] >= corp["duration_seconds"]["p50"]
        assert status["models"] == [
            {"id": "relay", "name": "Relay model", "backend": "openai", "backends": ["openai"], "kind": "chat", "discovered": False,
             "strategy": "ordered", "weights": {"openai": 1}, "share_5m": {"openai": 1}},
            {"id": "Gauss2-37b-instruct-v1.0", "name": None, "backend": "corp", "backends": ["corp"], "kind": "chat", "discovered": False,
             "strategy": "ordered", "weights": {"corp": 1}, "share_5m": {"corp": 1}},
        ]
        assert (relay["state"], relay["failovers"], corp["state"]) == ("ok", 0, "ok")
        assert (relay["health"], relay["health_check"]) == (None, None)  # no health_url
        assert [b["discovery"] for b in status["backends"]] == [None, None]  # neither has discover_models
        assert status["mode"] == "config" and status["inbound_auth"] is False and status["uptime_seconds"] >= 0


def history_files_count(server) -> dict:
    """Calls per backend in the workers' history files (telemetry/window.py), all minutes together."""
    calls = {}
    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"llm-gateway-{server.process.pid}-*", "window-*.json")):
        try:
            with open(path, encoding="utf-8") as handle:
                per_backend = json.load(handle)
        except (OSError, ValueError):
            continue  # replaced meanwhile: the next look reads the new one
        for name, minutes in per_backend.items():
            calls[name] = calls.get(name, 0) + sum(counts[0] for counts in minutes.values())
    return calls


def test_readyz_shows_backend_states(observed, traffic):
    response = requests.get(observed.url + "/readyz", timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready" and body["backends"]["openai"]["state"] == "ok"  # NO_BREAKER: never cooling down
    assert requests.get(observed.url + "/healthz", timeout=10).json() == {"status": "ok"}


def test_no_secret_on_any_observability_endpoint(observed, traffic):
    for path in ("/", "/status.json", "/readyz", "/metrics", "/healthz"):
        text = requests.get(observed.url + path, timeout=10).text
        for secret in (URL_SECRET, TICKET, "token="):
            assert secret not in text, f"{secret!r} shown on {path}"
    assert "http://127.0.0.1:" in requests.get(observed.url + "/", timeout=10).text  # the host is shown


# --- the page in a real browser -------------------------------------------------------------------------


def chromium(*args, cwd=None):
    # A profile of its own for each run: two Chromiums on one profile (parallel test processes)
    # would collide on its lock. A fresh one starts no slower.
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as user_data:
        command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   "--hide-scrollbars", f"--user-data-dir={user_data}", "--enable-logging=stderr", "--v=0", *args]
        result = subprocess.run(command, capture_output=True, timeout=90, text=True)
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return result, console


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM:
        not_installed("chromium is not installed (apt-get install chromium; .ci/run does)")
    OUTPUT.mkdir(exist_ok=True)
    return CHROMIUM


def test_console_messages_are_detected(browser, tmp_path):
    """The check below could fail: a page that logs an error is caught."""
    page = tmp_path / "noisy.html"
    page.write_text('<p>x</p><script>console.error("broken page")</script>')
    _, console = chromium("--dump-dom", page.as_uri())
    assert any("broken page" in line for line in console)


def test_status_page_in_a_browser(observed, traffic, browser):
    # The DOM as drawn on a screen, and the screenshots the docs show, from one Chromium each.
    for name, size, dump in (("status-page.png", "1280,760", ["--dump-dom"]), ("status-page-phone.png", "390,900", [])):
        shot = OUTPUT / name
        shot.unlink(missing_ok=True)
        result, console = chromium(f"--window-size={size}", *dump, f"--screenshot={shot}", observed.url + "/")
        assert result.returncode == 0 and console == [], console
        assert shot.stat().st_size > 10_000  # a rendered page, not an empty image
        if dump:
            for text in ('data-backend="corp"', 'data-backend="openai"', "Gauss2-37b-instruct-v1.0", "Relay model",
                         f"{traffic['ok']} / {traffic['ok']}</dd>", "Inbound authentication is off"):
                assert text in result.stdout, text


def test_keepalives_are_counted(observed, corp_backend):
    """Runs last in this module: it adds traffic the exact counts above do not expect."""
    two_keepalives_seen = threading.Event()

    def slow(exchange):
        two_keepalives_seen.wait(10)  # the backend thinking until the client has had two keep-alives
        exchange.send_json(200, completion_json("done"))

    corp_backend.respond_with(slow)
    before = keepalives_counted(observed)
    body = {"model": "Gauss2-37b-instruct-v1.0", "messages": MESSAGES, "stream": True}
    comments = 0
    with requests.post(observed.url + "/v1/chat/completions", json=body, stream=True, timeout=30) as response:
        for kind, _ in iter_events(response):
            if kind == "comment":
                comments += 1
                if comments == 2:
                    two_keepalives_seen.set()
    assert comments >= 2
    wait_until(lambda: keepalives_counted(observed) - before == comments, message="the keep-alives to be counted")


def keepalives_counted(gateway) -> float:
    family = parse_metrics(gateway)[0].get("llm_gateway_keepalives_sent")  # absent until the first one
    return total(family, "llm_gateway_keepalives_sent_total") if family else 0


