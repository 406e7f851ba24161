"""Failover: a model served by several backends, tried in order until the first content event,
with a circuit breaker per backend. Real loopback backends; the gateway under real gunicorn."""

import threading
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.backends import TestBackend, chunk_json, closed_port, first_event_then_hold, wait_until
from tests.configs import backend, gateway_toml, model
from tests.gunicorn_server import GatewayServer
from tests.sse_client import content_of, data_payloads, iter_events, read_events

MESSAGES = [{"role": "user", "content": "hi"}]
COOLDOWN = 1.5


@pytest.fixture(scope="module")
def primary():
    server = TestBackend(streaming=True)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dr():
    server = TestBackend(streaming=True)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _reset(primary, dr):
    yield
    primary.reset()
    dr.reset()


@pytest.fixture(scope="module")
def failover(primary, dr, tmp_path_factory):
    down = f"http://127.0.0.1:{closed_port()}/v1/chat/completions"
    config = gateway_toml(
        gateway={"heartbeat_seconds": 0.5},
        backends={
            "primary": backend(primary.url, streaming=True, failure_threshold=1000, headers={"Msg-Id": "{uuid}"}),
            "dr": backend(dr.url, streaming=True, failure_threshold=1000, headers={"Msg-Id": "{uuid}"}),
            "flaky": backend(primary.url, streaming=True, failure_threshold=2, cooldown_seconds=COOLDOWN),
            "down": backend(down, failure_threshold=1000),
            "down_too": backend(down, failure_threshold=1000),
        },
        models=[
            model("duo", "", backends=["primary", "dr"], upstream={"primary": "gauss-37b", "dr": "gauss-37b-dr"}),
            model("dead-first", "", backends=["down", "dr"]),
            model("breaker", "", backends=["flaky", "dr"]),
            model("all-down", "", backends=["down", "down_too"]),
            model("solo", "dr"),
        ],
    ).replace('backend = ""\n', "")
    server = GatewayServer(config, tmp_path_factory.mktemp("failover"))
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def chat(server, model_id, stream=False):
    body = {"model": model_id, "messages": MESSAGES, "stream": stream}
    return requests.post(server.url + "/v1/chat/completions", json=body, stream=stream, timeout=30)


def answer_text(response, stream):
    if stream:
        return content_of(data_payloads(read_events(response)))
    return response.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_refused_backend_passes_the_request_to_the_next(failover, dr, stream):
    response = chat(failover, "dead-first", stream)
    assert response.status_code == 200
    assert answer_text(response, stream) == "echo 1: hi"
    assert response.headers["X-Gateway-Backend"] == "dr"
    line = wait_until(lambda: failover.access_line(response.headers["X-Request-Id"]), message="the access-log line")
    assert line["backend"] == "dr" and line["attempts"] == [{"backend": "down", "result": "refused"}, {"backend": "dr", "result": "ok"}]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", [500, 429, 503, 401])
def test_backend_failures_pass_on_with_fresh_headers_and_each_backends_model_name(failover, primary, dr, status, stream):
    primary.respond_with(lambda ex: ex.send_json(status, {"error": {"message": "not now"}}))
    response = chat(failover, "duo", stream)
    assert response.status_code == 200 and response.headers["X-Gateway-Backend"] == "dr"
    assert answer_text(response, stream) == "echo 1: hi"
    assert primary.last.body["model"] == "gauss-37b" and dr.last.body["model"] == "gauss-37b-dr"  # the upstream table
    assert primary.last.headers["msg-id"] != dr.last.headers["msg-id"]  # each attempt its own {uuid}


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_the_backend_rejects_is_returned_at_once(failover, primary, dr, stream):
    primary.respond_with(lambda ex: ex.send_json(400, {"error": {"message": "max_tokens too large"}}))
    response = chat(failover, "duo", stream)
    assert response.status_code == 400 and "max_tokens too large" in response.json()["error"]["message"]
    assert response.headers["X-Gateway-Backend"] == "primary"
    assert dr.requests == []


def test_a_stream_that_fails_after_its_first_event_is_not_retried(failover, primary, dr):
    def drop_after_one_event(exchange):
        exchange.start_sse()
        exchange.event(chunk_json(delta={"role": "assistant", "content": "Par"}))
        exchange.handler.close_connection = True
        exchange.handler.wfile.write(b"0\r\n\r\n")  # ends the body with no finish and no [DONE]

    primary.respond_with(drop_after_one_event)
    response = chat(failover, "duo", stream=True)
    assert response.status_code == 200
    payloads = data_payloads(read_events(response))
    assert content_of(payloads) == "Par" and "error" in payloads[-2] and payloads[-1] == "[DONE]"
    assert dr.requests == []  # the user saw part of primary's answer: never a second answer


@pytest.mark.parametrize("opening", [
    [{"role": "assistant", "content": ""}],  # vLLM's and OpenAI's first chunk
    [{"role": "assistant"}, {"content": None}, {"reasoning_content": ""}],
])
def test_a_stream_that_fails_after_chunks_that_show_nothing_passes_on(failover, primary, dr, opening):
    """The user has seen nothing yet: the next backend answers, and the stream holds its chunks
    alone (one role chunk, one answer), with no error."""
    def drop_after_the_opening(exchange):
        exchange.start_sse()
        for delta in opening:
            exchange.event(chunk_json(delta=delta, model="gauss-37b"))
        exchange.handler.close_connection = True
        exchange.handler.wfile.write(b"0\r\n\r\n")  # ends the body with no finish and no [DONE]

    primary.respond_with(drop_after_the_opening)
    response = chat(failover, "duo", stream=True)
    assert response.status_code == 200 and response.headers["X-Gateway-Backend"] == "dr"
    payloads = data_payloads(read_events(response))
    assert content_of(payloads) == "echo 1: hi" and payloads[-1] == "[DONE]"
    assert not any("error" in payload for payload in payloads)
    assert sum("role" in choice["delta"] for payload in payloads[:-1] for choice in payload["choices"]) == 1  # dr's own opening only
    assert len(primary.requests) == 1 and len(dr.requests) == 1


def test_the_last_backends_opening_chunk_goes_out_at_once(failover, primary, dr):
    """Nothing is held back where there is no next backend: the role chunk goes out before the
    content the backend is still computing."""
    release, content_sent = threading.Event(), threading.Event()

    def opening_then_wait(exchange):
        exchange.start_sse()
        exchange.event(chunk_json(delta={"role": "assistant", "content": ""}))
        release.wait(10)
        content_sent.set()
        exchange.event(chunk_json(delta={"content": "late"}))
        exchange.event(chunk_json(delta={}, finish_reason="stop"))
        exchange.end_sse()

    dr.respond_with(opening_then_wait)
    with requests.post(failover.url + "/v1/chat/completions", json={"model": "dead-first", "messages": MESSAGES, "stream": True},
                       stream=True, timeout=10) as response:
        events = iter_events(response)
        first = next(item for item in events if item[0] == "data")
        assert not content_sent.is_set()  # the opening came while the backend was still computing
        release.set()
        rest = list(events)
    assert '"role"' in first[1] and "late" in "".join(value for kind, value in rest if kind == "data")


def test_a_stream_committed_by_a_keepalive_names_the_backend_when_the_model_has_one(failover, primary, dr):
    """Open WebUI's usual chat with a backend that thinks longer than a heartbeat: the 200 goes
    out with the first keep-alive. A model's only backend is named then; of several, the one that
    will answer is not known yet."""
    def slow(exchange):
        time.sleep(1.2)  # more than two heartbeats (0.5 s): the 200 goes out with a keep-alive
        exchange.stream_reply("late but whole")

    for server in (primary, dr):
        server.respond_with(slow)
    with chat(failover, "solo", stream=True) as response:
        assert response.headers["X-Gateway-Backend"] == "dr"
        items = read_events(response)
    assert items[0] == ("comment", "keep-alive") and content_of(data_payloads(items)) == "late but whole"
    with chat(failover, "duo", stream=True) as response:
        assert "X-Gateway-Backend" not in response.headers
        items = read_events(response)
    assert items[0] == ("comment", "keep-alive") and content_of(data_payloads(items)) == "late but whole"


def test_keepalives_flow_while_the_next_backend_is_tried(failover, primary, dr):
    def slow_failure(exchange):  # thinks for three heartbeats, then fails
        time.sleep(1.5)
        exchange.send_json(502, {"error": {"message": "upstream died"}})

    primary.respond_with(slow_failure)
    with chat(failover, "duo", stream=True) as response:
        assert response.status_code == 200  # committed by the first keep-alive, then failed over
        items = read_events(response)
    assert ("comment", "keep-alive") in items
    assert content_of(data_payloads(items)) == "echo 1: hi" and len(dr.requests) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_when_every_backend_fails_one_error_names_each(failover, stream):
    response = chat(failover, "all-down", stream)
    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert "down: refused the connection" in message and "down_too: refused the connection" in message
    assert "X-Gateway-Backend" not in response.headers  # no backend answered


def test_every_backend_rate_limiting_is_a_429_with_retry_after(failover, primary, dr):
    for server in (primary, dr):
        server.respond_with(lambda ex: ex.send_json(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "7"}))
    response = chat(failover, "duo")
    assert response.status_code == 429 and response.headers["Retry-After"] == "7"
    assert "primary: is rate limiting" in response.json()["error"]["message"]


def test_the_breaker_skips_a_failing_backend_then_one_trial_decides(failover, primary, dr):
    primary.respond_with(lambda ex: ex.send_json(500, {"error": {"message": "down"}}))
    for _ in range(2):  # failure_threshold = 2
        assert chat(failover, "breaker").headers["X-Gateway-Backend"] == "dr"
    assert len(primary.requests) == 2
    status = {b["name"]: b for b in requests.get(failover.url + "/status.json", timeout=5).json()["backends"]}
    assert status["flaky"]["state"] == "cooling_down" and 0 < status["flaky"]["cooldown_left"] <= COOLDOWN
    for _ in range(3):  # skipped while it cools down: primary sees nothing
        assert chat(failover, "breaker").headers["X-Gateway-Backend"] == "dr"
    assert len(primary.requests) == 2

    primary.reset()  # healthy again
    wait_until(lambda: requests.get(failover.url + "/status.json", timeout=5).json()["backends"][2]["state"] == "ok",
               timeout=5, message="the cooldown to end")
    assert chat(failover, "breaker").headers["X-Gateway-Backend"] == "flaky"  # the trial, and it succeeds
    assert chat(failover, "breaker").headers["X-Gateway-Backend"] == "flaky"
    assert len(primary.requests) == 2


def test_a_client_that_leaves_mid_stream_is_no_failure_of_the_backend(failover, primary, dr):
    primary.respond_with(first_event_then_hold("Par"))
    for left in range(1, 4):  # more than the breaker's failure_threshold of 2
        with chat(failover, "breaker", stream=True) as response:
            assert response.headers["X-Gateway-Backend"] == "flaky"
            next(iter_events(response))
        # The gateway stops the backend call at once (its read aborted): not the backend's failure.
        wait_until(lambda: len(primary.client_closes) == left, timeout=5, message="the gateway to close the backend call")
    status = {b["name"]: b for b in requests.get(failover.url + "/status.json", timeout=5).json()["backends"]}
    assert status["flaky"]["state"] == "ok"
    primary.reset()
    assert chat(failover, "breaker").headers["X-Gateway-Backend"] == "flaky"


def test_failovers_are_counted_by_model_and_backend(failover, primary):
    primary.respond_with(lambda ex: ex.send_json(500, {"error": {"message": "down"}}))
    before = _failovers(failover, "duo", "primary")
    chat(failover, "duo")
    assert _failovers(failover, "duo", "primary") == before + 1
    status = {b["name"]: b for b in requests.get(failover.url + "/status.json", timeout=5).json()["backends"]}
    assert status["primary"]["failovers"] >= 1 and status["dr"]["failovers"] == 0


def _failovers(server, model_id, backend_name) -> float:
    text = requests.get(server.url + "/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "llm_gateway_failovers_total" and sample.labels == {"model": model_id, "backend": backend_name}:
                return sample.value
    return 0.0


@pytest.mark.parametrize("entry, says", [
    ('backend = "a"\nbackends = ["a", "b"]', "exactly one of backend"),
    ("", "exactly one of backend"),
    ('backends = ["a", "zz"]', "'zz', which is not defined"),
    ('backends = ["a", "b"]\nupstream = { c = "x" }', "'c', which this model does not use"),
    ('backends = ["a", "a"]', "names a backend twice"),
])
def test_config_errors_name_the_conflict(entry, says):
    from gateway.config import ConfigError, parse_config

    text = f'[backends.a]\nurl = "http://a/x"\n[backends.b]\nurl = "http://b/x"\n[backends.c]\nurl = "http://c/x"\n[[models]]\nid = "m"\n{entry}\n'
    with pytest.raises(ConfigError, match='models."m"') as error:
        parse_config(text, "gw.toml", {})
    assert says in str(error.value)


def test_upstream_table_falls_back_to_the_model_id():
    from gateway.config import parse_config

    text = '[backends.a]\nurl = "http://a/x"\n[backends.b]\nurl = "http://b/x"\n[[models]]\nid = "m"\nbackends = ["a", "b"]\nupstream = { a = "gauss" }\n'
    entry = parse_config(text, "gw.toml", {}).models["m"]
    assert (entry.upstream_for("a"), entry.upstream_for("b"), entry.backend) == ("gauss", "m", "a")


def test_every_backend_failing_after_a_keepalive_is_an_error_event_naming_each(failover, primary, dr):
    def slow_failure(exchange):  # past the first keep-alive, then a failure
        time.sleep(0.8)
        exchange.send_json(502, {"error": {"message": "upstream died"}})

    primary.respond_with(slow_failure)
    dr.respond_with(slow_failure)
    with chat(failover, "duo", stream=True) as response:
        assert response.status_code == 200
        items = read_events(response)
    payloads = data_payloads(items)
    assert items[0] == ("comment", "keep-alive") and payloads[-1] == "[DONE]"
    message = payloads[-2]["error"]["message"]
    assert "primary: failed (HTTP 502)" in message and "dr: failed (HTTP 502)" in message


def test_every_backend_failing_is_logged_as_a_backend_error(failover):
    response = chat(failover, "all-down")
    line = wait_until(lambda: failover.access_line(response.headers["X-Request-Id"]), message="the access-log line")
    assert line["outcome"] == "backend_error" and line["status"] == 502
    assert [a["result"] for a in line["attempts"]] == ["refused", "refused"]


def test_a_secret_that_starts_another_leaves_nothing_of_either():
    from gateway.errors import redact

    for _ in range(20):  # frozenset order varies with the hash seed: the longest must go first every time
        assert redact("key sk-1234-extra and sk-1234", frozenset({"sk-1234", "sk-1234-extra"})) == "key [redacted] and [redacted]"
