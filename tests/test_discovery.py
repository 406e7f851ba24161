"""Model discovery: backends' own GET .../models lists, served beside the configured models.

In-process apps (one per test, its discovery stopped after it) call `refresh_all()` to refresh
deterministically; one real gunicorn + gevent server with a short interval shows the refresher
running by itself. The backends are real loopback test backends.
"""

import threading
import time

import pytest
import requests

from app import create_app
from gateway.config import ConfigError, parse_config
from tests.backends import TestBackend, closed_port, model_list_json, wait_until
from tests.configs import backend, gateway_toml, model
from tests.conftest import TICKET, SecretWatchingClient
from tests.gunicorn_server import GatewayServer

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def lab_backend():
    """A third backend, a plain OpenAI-compatible server that cannot stream."""
    lab = TestBackend(streaming=False)
    yield lab
    lab.stop()


@pytest.fixture(autouse=True)
def _fresh_lab(request):
    yield
    if "lab_backend" in request.fixturenames:
        request.getfixturevalue("lab_backend").reset()


@pytest.fixture
def make_app():
    """`make_app(backends, models)`: an in-process gateway for that config; its discovery stops after the test."""
    apps = []

    def make(backends, models, environ=None):
        config = parse_config(gateway_toml(backends=backends, models=models), "discovery test config", environ or {})
        app = create_app(config)
        app.test_client_class = SecretWatchingClient
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["registry"].close()


def listed_ids(app) -> list:
    return [m["id"] for m in app.test_client().get("/v1/models").get_json()["data"]]


def discovery_status(app, backend_name) -> dict:
    backends = app.test_client().get("/status.json").get_json()["backends"]
    return next(b for b in backends if b["name"] == backend_name)["discovery"]


def chat(app, model_id):
    return app.test_client().post("/v1/chat/completions", json={"model": model_id, "messages": MESSAGES})


def test_discovered_models_are_listed_after_the_configured_ones_and_route_to_their_backend(make_app, openai_backend):
    openai_backend.listed = ["Qwen2.5-72B-Instruct", "llama-3.1-8b"]
    app = make_app({"vllm": backend(openai_backend.url, discover_models=True)}, [model("configured", "vllm", upstream="x")])
    discovery_request = next(r for r in openai_backend.requests if r.method == "GET")
    assert discovery_request.path == "/v1/models"  # url's /chat/completions, as /models
    assert listed_ids(app) == ["configured", "Qwen2.5-72B-Instruct", "llama-3.1-8b"]
    assert app.test_client().get("/v1/models/llama-3.1-8b").get_json()["id"] == "llama-3.1-8b"
    assert chat(app, "llama-3.1-8b").status_code == 200
    assert openai_backend.last.body["model"] == "llama-3.1-8b"  # upstream: the backend's own id


def test_the_list_is_asked_with_the_backends_headers_at_models_url_and_prefixed(make_app, openai_backend, corp_backend):
    openai_backend.listed = ["shared"]
    corp_backend.listed = ["shared", "Gauss2"]
    corp_list = corp_backend.url.replace("/v1/chat/completions", "/api/v2/models?format=openai")
    app = make_app(
        {
            "vllm": backend(openai_backend.url, discover_models=True),
            "corp": backend(corp_backend.url, discover_models=True, models_url=corp_list, model_prefix="corp/",
                            headers={"x-dep-ticket": "${CORP_TICKET}", "User-Id": "{user.email|gateway}"}),
        },
        [model("configured", "vllm")],
        {"CORP_TICKET": TICKET},
    )
    asked = next(r for r in corp_backend.requests if r.method == "GET")
    assert asked.path == "/api/v2/models?format=openai"
    assert asked.headers["x-dep-ticket"] == TICKET and asked.headers["user-id"] == "gateway"  # no user: the fallback
    assert listed_ids(app) == ["configured", "shared", "corp/shared", "corp/Gauss2"]
    assert chat(app, "corp/shared").status_code == 200
    assert corp_backend.last.body["model"] == "shared" and corp_backend.last.headers["x-dep-ticket"] == TICKET
    assert chat(app, "shared").status_code == 200 and openai_backend.last.body["model"] == "shared"


def test_configured_ids_win_and_an_earlier_backend_wins_a_clash(make_app, openai_backend, lab_backend):
    openai_backend.listed = ["shared", "dup", "only-vllm"]
    lab_backend.listed = ["dup", "only-lab"]
    app = make_app(
        {"vllm": backend(openai_backend.url, discover_models=True), "lab": backend(lab_backend.url, discover_models=True)},
        [model("shared", "lab", upstream="configured-shared")],
    )
    assert listed_ids(app) == ["shared", "dup", "only-vllm", "only-lab"]
    assert chat(app, "shared").status_code == 200 and lab_backend.last.body["model"] == "configured-shared"
    assert chat(app, "dup").status_code == 200 and openai_backend.last.body["model"] == "dup"
    assert discovery_status(app, "vllm")["shadowed"] == ["shared"]
    assert discovery_status(app, "lab")["shadowed"] == ["dup"] and discovery_status(app, "lab")["models"] == ["only-lab"]


def test_a_refresh_replaces_the_list(make_app, openai_backend):
    openai_backend.listed = ["old-model"]
    app = make_app({"vllm": backend(openai_backend.url, discover_models=True)}, [model("configured", "vllm")])
    assert listed_ids(app) == ["configured", "old-model"]
    openai_backend.listed = ["new-model"]
    app.extensions["registry"].discovery.refresh_all()
    assert listed_ids(app) == ["configured", "new-model"]
    assert chat(app, "old-model").status_code == 404
    openai_backend.listed = []  # an empty answer is an answer
    app.extensions["registry"].discovery.refresh_all()
    assert listed_ids(app) == ["configured"]


def test_a_backend_that_stops_answering_keeps_its_last_list_and_the_status_page_says_so(make_app, openai_backend):
    openai_backend.listed = ["kept-model"]
    app = make_app({"vllm": backend(openai_backend.url, discover_models=True)}, [model("configured", "vllm")])
    assert discovery_status(app, "vllm")["state"] == "ok"
    openai_backend.respond_with(lambda ex: ex.send_json(503, {"error": {"message": "reloading weights"}}))
    app.extensions["registry"].discovery.refresh_all()

    assert listed_ids(app) == ["configured", "kept-model"]
    status = discovery_status(app, "vllm")
    assert status["state"] == "failing" and status["models"] == ["kept-model"] and status["last_success"]
    assert "Backend 'vllm' failed (HTTP 503): reloading weights" in status["last_error"]
    page = app.test_client().get("/").get_data(as_text=True)
    assert 'data-state="failing"' in page and "reloading weights" in page and "Still listing the 1 models" in page

    openai_backend.reset()
    openai_backend.listed = ["kept-model", "back-model"]
    app.extensions["registry"].discovery.refresh_all()
    assert discovery_status(app, "vllm")["state"] == "ok" and discovery_status(app, "vllm")["last_error"] is None
    assert listed_ids(app) == ["configured", "kept-model", "back-model"]


def test_start_up_waits_at_most_connect_timeout_and_takes_a_late_answer(make_app, lab_backend):
    release = threading.Event()

    def slow_list(exchange):
        if exchange.request.method == "GET":
            release.wait(30)
            exchange.send_json(200, model_list_json(["late-model"]))

    lab_backend.respond_with(slow_list)
    began = time.monotonic()
    try:
        app = make_app({"lab": backend(lab_backend.url, discover_models=True, connect_timeout=0.3, read_timeout=30)},
                       [model("configured", "lab")])
        took = time.monotonic() - began
        assert listed_ids(app) == ["configured"]
        assert discovery_status(app, "lab")["state"] == "waiting"
    finally:
        release.set()
    assert 0.3 <= took < 1.5, took
    assert wait_until(lambda: listed_ids(app) == ["configured", "late-model"], message="the late answer to be served")


def test_an_unreachable_backend_does_not_stop_start_up(make_app, openai_backend):
    gone = f"http://127.0.0.1:{closed_port()}/v1/chat/completions"
    openai_backend.listed = ["fine"]
    app = make_app({"gone": backend(gone, discover_models=True), "vllm": backend(openai_backend.url, discover_models=True)},
                   [model("configured", "vllm")])
    assert listed_ids(app) == ["configured", "fine"]
    status = discovery_status(app, "gone")
    assert status["state"] == "failing" and "refused the connection" in status["last_error"] and status["models"] == []
    assert "No models from it yet" in app.test_client().get("/").get_data(as_text=True)


def test_a_list_on_another_host_is_named_when_it_fails(make_app, openai_backend):
    port = closed_port()
    app = make_app({"vllm": backend(openai_backend.url, discover_models=True, models_url=f"http://127.0.0.1:{port}/v1/models")},
                   [model("configured", "vllm")])
    assert f"refused the connection at http://127.0.0.1:{port}" in discovery_status(app, "vllm")["last_error"]
    assert chat(app, "configured").status_code == 200  # chat goes to url, which is up


@pytest.mark.parametrize("answer, listed, error", [
    ({"object": "model", "id": "tgi-model"}, ["tgi-model"], None),  # TGI answers one model object
    ({"data": [{"id": "ok"}, {"name": "no id"}, "text", {"id": ""}, {"id": "ok"}]}, ["ok"], None),
    ({"models": ["a"]}, [], "not one (no data list"),
    ([{"id": "a"}], [], "not one (no data list"),
    ("<html>", [], "not JSON"),
])
def test_what_counts_as_a_model_list(make_app, openai_backend, answer, listed, error):
    def answer_list(exchange):
        if isinstance(answer, str):
            exchange.send_raw(200, "text/html", answer.encode())
        else:
            exchange.send_json(200, answer)

    openai_backend.respond_with(answer_list)
    app = make_app({"vllm": backend(openai_backend.url, discover_models=True)}, [model("configured", "vllm")])
    assert listed_ids(app) == ["configured", *listed]
    status = discovery_status(app, "vllm")
    if error:
        assert status["state"] == "failing" and error in status["last_error"]
    else:
        assert status["state"] == "ok"


def test_a_secret_in_a_failing_backends_answer_is_redacted(make_app, corp_backend):
    corp_backend.respond_with(lambda ex: ex.send_json(403, {"error": {"message": f"ticket {ex.request.headers.get('x-dep-ticket')} expired"}}))
    app = make_app({"corp": backend(corp_backend.url, discover_models=True, headers={"x-dep-ticket": "${CORP_TICKET}"})},
                   [model("configured", "corp")], {"CORP_TICKET": TICKET})
    error = discovery_status(app, "corp")["last_error"]
    assert "rejected the gateway's credentials (HTTP 403)" in error and "ticket [redacted] expired" in error


def test_backends_without_discovery_show_none(make_app, openai_backend):
    app = make_app({"vllm": backend(openai_backend.url)}, [model("configured", "vllm")])
    assert discovery_status(app, "vllm") is None
    assert not any(r.method == "GET" for r in openai_backend.requests)


# --- the config ------------------------------------------------------------------------------------


def test_the_list_url_is_derived_from_url_keeping_its_query():
    config = parse_config(gateway_toml(
        backends={"a": backend("https://llm.corp.example/v1/chat/completions?key=k-1234", discover_models=True),
                  "b": backend("https://llm.corp.example/ask", discover_models=True, models_url="https://llm.corp.example/list")},
        models=[model("m", "a")]), "gw.toml", {})
    assert config.backends["a"].discovery_url == "https://llm.corp.example/v1/models?key=k-1234"
    assert config.backends["b"].discovery_url == "https://llm.corp.example/list"


@pytest.mark.parametrize("settings, names", [
    ({"url": "https://llm.corp.example/ask", "discover_models": True},
     "backends.corp.discover_models: needs models_url: url does not end in /chat/completions"),
    ({"url": "demo://echo", "discover_models": True}, "backends.corp.discover_models: the built-in demo backend has no model list"),
    ({"url": "https://llm.corp.example/v1/chat/completions", "models_url": "https://x/models"},
     "backends.corp.models_url: is set without discover_models = true"),
    ({"url": "https://llm.corp.example/v1/chat/completions", "model_prefix": "corp/"},
     "backends.corp.model_prefix: is set without discover_models = true"),
    ({"url": "https://llm.corp.example/v1/chat/completions", "discover_models": "yes"}, "backends.corp.discover_models: must be true or false"),
    ({"url": "https://llm.corp.example/v1/chat/completions", "discover_models": True, "models_url": "ftp://x"},
     "backends.corp.models_url: must be an http:// or https:// URL"),
])
def test_config_errors_name_the_key(settings, names):
    settings = dict(settings)
    with pytest.raises(ConfigError) as caught:
        parse_config(gateway_toml(backends={"corp": backend(settings.pop("url"), **settings)}, models=[model("m", "corp")]), "gw.toml", {})
    assert str(caught.value).startswith("gw.toml: ") and names in str(caught.value)


# --- the real server: the refresher runs by itself under gevent ------------------------------------


def chat_status(server, model_id) -> int:
    # The response goes with this function: one still referenced keeps its connection open, and
    # the server's stop would wait out the keep-alive for it.
    response = requests.post(server.url + "/v1/chat/completions", json={"model": model_id, "messages": MESSAGES}, timeout=30)
    return response.status_code


def test_a_real_worker_refreshes_by_itself(lab_backend, tmp_path):
    lab_backend.listed = ["first-model"]
    config = gateway_toml(backends={"lab": backend(lab_backend.url, discover_models=True)}, models=[model("configured", "lab")])
    server = GatewayServer(config, tmp_path, env={"GATEWAY_DISCOVERY_INTERVAL": "0.2"})
    try:
        server.wait_ready()

        def ids():
            return [m["id"] for m in requests.get(server.url + "/v1/models", timeout=10).json()["data"]]

        assert ids() == ["configured", "first-model"]  # start-up waited for the first answer
        lab_backend.listed = ["second-model"]
        assert wait_until(lambda: ids() == ["configured", "second-model"], message="the refresher to pick up the new list")
        page = requests.get(server.url + "/", timeout=10).text
        assert 'data-state="ok"' in page and "<code>second-model</code>" in page and "discovered" in page
        assert chat_status(server, "second-model") == 200 and lab_backend.last.body["model"] == "second-model"
    finally:
        server.stop()
