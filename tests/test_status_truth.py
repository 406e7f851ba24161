"""What operators see is true on a bad day too (issue #20), under real gunicorn workers:

- a metrics file that cannot be read (prometheus/client_python#1199) is skipped, logged once and
  counted; /readyz never reads metrics at all;
- the files of dead workers are folded together, totals kept;
- a backend that fails while another serves the request is seen failing (errors, last error,
  its breaker opening and closing in the log), and the page's badge says what `state` says;
- the page, with long values in it, fits a 1300 px screen and a 390 px phone (real Chromium).
"""

import glob
import json
import os
import runpy
import signal
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.backends import TestBackend, closed_port, reopen_closed_port, wait_until
from tests.configs import backend, gateway_toml, model
from tests.gunicorn_server import ROOT, GatewayServer
from tests.test_observability import OUTPUT, browser, chromium  # noqa: F401 - browser is a fixture

ROOT = Path(__file__).resolve().parent.parent

MESSAGES = [{"role": "user", "content": "hi"}]


def metric_total(server, name, **labels) -> float:
    text = requests.get(server.url + "/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def backends_of(server) -> dict:
    return {b["name"]: b for b in requests.get(server.url + "/status.json", timeout=10).json()["backends"]}


def a_dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def chat(server, model_id="m", stream=False):
    return requests.post(server.url + "/v1/chat/completions", json={"model": model_id, "messages": MESSAGES, "stream": stream}, timeout=30)


# --- metrics files -----------------------------------------------------------------------------------


@pytest.fixture
def metrics_server(openai_backend, tmp_path):
    folder = tmp_path / "metrics"
    config = gateway_toml(backends={"openai": backend(openai_backend.url, streaming=True)}, models=[model("m", "openai")])
    server = GatewayServer(config, tmp_path / "gw", workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(folder)}).wait_ready()
    yield server, folder
    server.stop()


def test_an_unreadable_metrics_file_is_skipped_never_failing_a_page_or_readiness(metrics_server):
    server, folder = metrics_server
    assert chat(server).status_code == 200
    before = metric_total(server, "llm_gateway_requests_total")
    # Empty, as a worker killed between creating and sizing its file leaves it (a dead pid); torn
    # (a live one's file that is not a metrics file at all); and empty with a live pid, as a
    # worker's file is for a few microseconds while it sizes it: nothing in it yet, no warning.
    dead, torn, being_created = f"histogram_{a_dead_pid()}.db", f"gauge_all_{os.getpid()}.db", f"counter_{os.getppid()}.db"
    (folder / dead).touch()
    (folder / torn).write_bytes(b"\x01\x02\x03")
    (folder / being_created).touch()
    for _ in range(3):
        for path in ("/readyz", "/status.json", "/metrics", "/"):
            assert requests.get(server.url + path, timeout=10).status_code == 200, path
    assert metric_total(server, "llm_gateway_requests_total") == before  # every readable file still counted

    def skipped_lines():
        return [line for line in server.log().splitlines() if "metrics: skipped" in line]

    # Counted as logged; a worker's own background reader (the status history) may meet the files
    # at any moment too, so the two are read until they agree.
    wait_until(lambda: metric_total(server, "llm_gateway_metrics_files_skipped_total") == len(skipped_lines()),
               message="each skipped file counted as it is logged")
    skipped = skipped_lines()
    assert {line.split("skipped ")[1].split(",")[0] for line in skipped} == {dead, torn}  # each file named...
    assert len(skipped) <= 4  # ...once per worker that met it, not once per scrape


def test_a_live_gauge_a_reader_already_folded_does_not_stop_gunicorn(tmp_path, monkeypatch):
    """The master's child_exit removes a dead worker's live gauges; a worker answering /metrics or
    a page may have folded them away first. The FileNotFoundError used to end gunicorn's main loop,
    and the whole gateway with it (seen in the suite: a worker killed while the other read)."""
    hooks = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    (tmp_path / "gauge_livesum_4242.db").touch()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    def already_folded(path):
        raise FileNotFoundError(2, "No such file or directory", path)

    monkeypatch.setattr(os, "remove", already_folded)
    hooks["child_exit"](None, types.SimpleNamespace(pid=4242))  # raised before


def kinds_and_pids(folder) -> dict:
    files = {}
    for path in glob.glob(os.path.join(folder, "*.db")):
        kind, pid = os.path.basename(path)[:-3].rsplit("_", 1)
        files.setdefault(kind, set()).add(pid)
    return files


def until_every_worker_served(server, folder) -> int:
    """Every worker has served a request, so each has its metrics files. Returns how many chats it sent."""
    live, sent = {str(pid) for pid in server.worker_pids()}, 0
    while not live <= kinds_and_pids(folder).get("histogram", set()):
        assert chat(server).status_code == 200
        sent += 1
    return sent


def test_dead_workers_files_are_folded_into_one_per_kind_keeping_the_totals(metrics_server):
    server, folder = metrics_server
    sent = 0
    for _ in range(3):
        sent += until_every_worker_served(server, folder)
        # Counted as each response closes, a moment after the client has it: every one first.
        wait_until(lambda: metric_total(server, "llm_gateway_requests_total") == sent, message="every chat counted")
        total = sent
        victim = max(server.worker_pids())
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: victim not in server.worker_pids() and len(server.worker_pids()) == 2, message="the replacement worker")
        assert metric_total(server, "llm_gateway_requests_total") == total  # read (and folded) after the kill
    sent += until_every_worker_served(server, folder)
    metric_total(server, "llm_gateway_requests_total")  # a read folds what the last kill left
    files = kinds_and_pids(folder)
    live = {str(pid) for pid in server.worker_pids()}
    for kind, pids in files.items():
        assert pids <= live | {"dead"}, (kind, pids)
    assert "dead" in files["counter"] and "dead" in files["histogram"]


def test_metric_values_ask_no_system_call_for_the_process_id_and_a_forked_child_writes_files_of_its_own(tmp_path):
    """Each value written asked os.getpid() (about ten system calls per request); the id is kept,
    and taken anew in a child after a fork, as prometheus_client's own check would."""
    probe = textwrap.dedent("""
        import glob, os, sys
        from gateway.telemetry import metrics
        metrics.FILES_SKIPPED.inc()
        metrics._process[0] = 4242424  # the id kept is the one each write goes by
        metrics.FILES_SKIPPED.inc()
        metrics._process[0] = os.getpid()
        child = os.fork()
        if child == 0:
            metrics.FILES_SKIPPED.inc()
            os._exit(0)
        os.waitpid(child, 0)
        names = sorted(os.path.basename(f) for f in glob.glob(os.environ["PROMETHEUS_MULTIPROC_DIR"] + "/counter_*.db"))
        print(names == sorted([f"counter_{os.getpid()}.db", "counter_4242424.db", f"counter_{child}.db"]), names)
    """)
    folder = tmp_path / "metrics"
    folder.mkdir()
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("True"), done.stdout + done.stderr


# --- a failing backend while another serves ------------------------------------------------------------


def start_failover_server(standby_url: str, folder):
    port = closed_port()
    config = gateway_toml(
        backends={
            "primary": backend(f"http://127.0.0.1:{port}/v1/chat/completions", failure_threshold=2, cooldown_seconds=1),
            "standby": backend(standby_url, streaming=True),
        },
        models=[{"id": "m", "backends": ["primary", "standby"]}],
    )
    return GatewayServer(config, folder, workers=1).wait_ready(), port


@pytest.fixture
def failover_server(openai_backend, tmp_path):
    server, port = start_failover_server(openai_backend.url, tmp_path)
    yield server, port
    server.stop()


@pytest.fixture(scope="module")
def page_server(openai_backend, tmp_path_factory):
    """The same gateway for the page's tests, which only read it."""
    server, port = start_failover_server(openai_backend.url, tmp_path_factory.mktemp("page"))
    yield server, port
    server.stop()


def test_a_failed_over_attempt_counts_for_its_backend_and_the_breaker_is_logged(failover_server, openai_backend):
    server, port = failover_server
    for _ in range(3):  # two refused attempts open the breaker; the third request skips it
        answer = chat(server)
        assert answer.status_code == 200 and answer.headers["X-Gateway-Backend"] == "standby"
    assert metric_total(server, "llm_gateway_backend_errors_total", backend="primary", kind="refused") == 2
    wait_until(lambda: backends_of(server)["primary"]["errors_5m"] == 2, message="the page's history")
    primary = backends_of(server)["primary"]
    assert primary["last_error"]["kind"] == "refused" and primary["state"] == "cooling_down"
    page = requests.get(server.url + "/", timeout=10).text
    assert 'data-backend="primary" data-state="cooling_down"' in page and "cooling down" in page
    opened = [line for line in server.log().splitlines() if "backend 'primary' is cooling down" in line]
    assert len(opened) == 1 and "for 1 s after 2 consecutive failures" in opened[0] and "refused" in opened[0]

    reopen_closed_port(port)
    revived = TestBackend(streaming=True, port=port)  # the primary comes back
    try:
        def primary_answers():
            return chat(server).headers.get("X-Gateway-Backend") == "primary"

        wait_until(primary_answers, timeout=10, interval=0.2, message="the trial request after the cooldown")
    finally:
        revived.stop()
    healed = [line for line in server.log().splitlines() if "backend 'primary' is healthy again" in line]
    assert len(healed) == 1
    assert backends_of(server)["primary"]["state"] == "ok"
    assert 'data-backend="primary" data-state="ok"' in requests.get(server.url + "/", timeout=10).text


# --- the page on a screen and on a phone --------------------------------------------------------------------

OVERFLOW_CHECK = """
<script>
  const problems = [];
  if (document.documentElement.scrollWidth > window.innerWidth + 1) problems.push("page wider than the window");
  for (const card of document.querySelectorAll(".card")) {
    const box = card.getBoundingClientRect();
    for (const el of card.querySelectorAll("*")) {
      const r = el.getBoundingClientRect();
      if (r.width && (r.right > box.right + 1 || r.left < box.left - 1)) problems.push((card.dataset.backend || card.id) + ": " + el.tagName + " " + el.textContent.trim().slice(0, 40));
    }
  }
  document.body.setAttribute("data-overflow", JSON.stringify(problems));
</script>
"""


def overflowing(html: str, width: int, tmp_path, screenshot=None) -> list:
    """What does not fit on a window `width` wide; the page (whole in itself: nothing to load) is
    also drawn into `screenshot`, by the same Chromium (one launch costs ~0.7 s of CPU)."""
    page = tmp_path / f"page-{width}.html"
    page.write_text(html.replace("</body>", OVERFLOW_CHECK + "</body>"), encoding="utf-8")
    drawn = []
    if screenshot is not None:
        screenshot.unlink(missing_ok=True)
        drawn = [f"--screenshot={screenshot}"]
    result, console = chromium(f"--window-size={width},1400", "--dump-dom", *drawn, page.as_uri())
    assert result.returncode == 0 and console == [], console
    if screenshot is not None:
        assert screenshot.stat().st_size > 10_000  # a rendered page, not an empty image
    marker = result.stdout.split('data-overflow="', 1)[1].split('"', 1)[0]
    return json.loads(marker.replace("&quot;", '"'))


@pytest.fixture(scope="module")
def busy_page(page_server, openai_backend):
    """The page with long values in it: a backend cooling down, an invalid_answer error, traffic."""
    server, _ = page_server
    for _ in range(3):
        chat(server)
    openai_backend.respond_with(lambda exchange: exchange.send_raw(200, "text/html", b"<html>not json</html>"))
    chat(server, stream=False)
    openai_backend.reset()
    wait_until(lambda: backends_of(server)["standby"]["errors_5m"] == 1, message="the invalid answer in the history")
    return requests.get(server.url + "/", timeout=10).text


def test_the_overflow_check_catches_a_value_that_does_not_fit(browser, busy_page, tmp_path):
    """The check below could fail: a long unbreakable value that is not allowed to wrap is found."""
    broken = busy_page.replace("</style>", ".stats dd { white-space: nowrap; overflow-wrap: normal; }</style>")
    broken = broken.replace("invalid answer", "invalid_answer_" + "x" * 80)
    assert overflowing(broken, 390, tmp_path)


@pytest.mark.parametrize("width", [1300, 390])
def test_the_status_page_fits_a_screen_and_a_phone(browser, busy_page, page_server, width, tmp_path):
    assert 'class="chart calls"' in busy_page and "invalid answer" in busy_page and "cooling down" in busy_page
    assert overflowing(busy_page, width, tmp_path, screenshot=OUTPUT / f"status-page-{width}.png") == []
