"""What clients and operators read is true: answers name the model the client asked for (the
backend's own name goes to the access log), and messages say what is really wrong (issue #20).
In-process; the status page and metrics under real workers are in test_status_truth.py."""

import json
import time

import jwt
import pytest

from app import create_app
from gateway.backends.failover import Attempts
from gateway.config import parse_config
from gateway.errors import AllBackendsFailed
from gateway.telemetry.record import access_log
from tests.backends import chunk_json, closed_port
from tests.configs import backend, gateway_toml, model
from tests.conftest import json_of

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def access_lines(monkeypatch):
    lines = []
    monkeypatch.setattr(access_log, "write", lambda line: lines.append(json.loads(line)))
    return lines


def data_chunks(response) -> list:
    text = response.get_data(as_text=True)
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


# --- the model an answer names ----------------------------------------------------------------------


def test_a_json_answer_names_the_requested_model_and_the_log_the_upstream_one(app_client, access_lines):
    response = app_client.post("/v1/chat/completions", json={"model": "corp-plain", "messages": MESSAGES})
    assert response.status_code == 200
    assert json_of(response)["model"] == "corp-plain"  # the backend was sent (and answered) Gauss2-37b-instruct-v1.0
    response.close()  # the server closes the response: the request's record is written
    line = access_lines[-1]
    assert (line["model"], line["upstream_model"]) == ("corp-plain", "Gauss2-37b-instruct-v1.0")


def test_every_relayed_chunk_names_the_requested_model(app_client, openai_backend, access_lines):
    def relay(exchange):
        exchange.start_sse()
        for delta in ({"role": "assistant", "content": ""}, {"content": "a"}, {"content": '"model":"upstream"'}):
            exchange.event(chunk_json(delta=delta, model="smollm2"))
        exchange.event(chunk_json(delta={}, finish_reason="stop", model="smollm2"))
        exchange.event(chunk_json(model="smollm2", usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}))
        exchange.event("[DONE]")
        exchange.end_sse()

    openai_backend.respond_with(relay)
    response = app_client.post("/v1/chat/completions", json={"model": "gpt-stream", "messages": MESSAGES, "stream": True,
                                                             "stream_options": {"include_usage": True}})
    chunks = data_chunks(response)
    assert len(chunks) == 5 and {c["model"] for c in chunks} == {"gpt-stream"}
    assert chunks[2]["choices"][0]["delta"]["content"] == '"model":"upstream"'  # content is never touched
    response.close()
    assert access_lines[-1]["upstream_model"] == "upstream-stream-model"


def test_relayed_chunks_without_a_model_get_the_requested_one(app_client, openai_backend):
    """Some backends name the model in no chunk, or only in the first: every chunk names it."""
    def relay(exchange):
        exchange.start_sse()
        exchange.event(json.dumps({"id": "c1", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "a"}}]}))
        exchange.event(chunk_json(delta={"content": "b"}, model="smollm2"))
        exchange.event(json.dumps({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        exchange.event("[DONE]")
        exchange.end_sse()

    openai_backend.respond_with(relay)
    response = app_client.post("/v1/chat/completions", json={"model": "gpt-stream", "messages": MESSAGES, "stream": True})
    chunks = data_chunks(response)
    assert [c["model"] for c in chunks] == ["gpt-stream"] * 3
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "ab"


def test_a_built_stream_and_its_usage_chunk_name_the_requested_model(app_client):
    body = {"model": "corp-plain", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    chunks = data_chunks(app_client.post("/v1/chat/completions", json=body))
    assert chunks and {c["model"] for c in chunks} == {"corp-plain"} and chunks[-1]["usage"]


# --- messages ---------------------------------------------------------------------------------------


def test_the_404_names_every_endpoint(app_client):
    error = json_of(app_client.get("/v1/nothing-here"))["error"]
    for path in ("/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/models"):
        assert path in error["message"]


def test_metrics_say_their_charset_once(app_client):
    content_type = app_client.get("/metrics").headers["Content-Type"]
    assert content_type.count("charset") == 1 and content_type.startswith("text/plain; version=0.0.4")


def test_a_backend_cooling_down_for_less_than_a_second_never_says_0_s():
    nowhere = f"http://127.0.0.1:{closed_port()}/v1/chat/completions"
    text = gateway_toml(backends={"a": backend(nowhere), "b": backend(nowhere)}, models=[{"id": "m", "backends": ["a", "b"]}])
    config = parse_config(text, "t", {})
    backends = list(create_app(config).extensions["registry"].backends.values())
    for b in backends:
        b.breaker.cooling_until = time.time() + 0.3
    with pytest.raises(AllBackendsFailed) as failed:
        Attempts("m", backends, build=None).complete()
    assert "for 1 s more" in failed.value.message and "0 s" not in failed.value.message
    assert failed.value.headers["Retry-After"] == "1"


JWT_SECRET = "jwt-secret-4b1d9e-long-enough-for-hs256"


@pytest.fixture(scope="module")
def signed_app(corp_backend):
    config = gateway_toml(gateway={"user_jwt_secret": JWT_SECRET}, backends={"corp": backend(corp_backend.url)}, models=[model("m", "corp")])
    return create_app(parse_config(config, "t", {}))


@pytest.mark.parametrize("claims, key, says", [
    ({"sub": "u1"}, JWT_SECRET, "has no `exp` claim"),
    ({"sub": "u1", "exp": 1}, JWT_SECRET, "has expired"),
    ({"sub": "u1", "exp": 4102444800}, "another-secret-123-long-enough-for-hs256", "is not signed with this gateway's user_jwt_secret"),
    (None, None, "is malformed"),
])
def test_a_bad_user_token_is_told_what_is_wrong(signed_app, claims, key, says):
    token = jwt.encode(claims, key, algorithm="HS256") if claims else "not.a.jwt"
    response = signed_app.test_client().post("/v1/chat/completions", json={"model": "m", "messages": MESSAGES},
                                             headers={"X-OpenWebUI-User-Jwt": token})
    error = json_of(response)["error"]
    assert response.status_code == 401 and error["code"] == "invalid_user_token"
    assert says in error["message"], error["message"]
