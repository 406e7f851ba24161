"""The contract's error table: OpenAI's error shape, the right status, a message naming who failed.

Plain JSON answers (stream=false, bad requests) are checked in-process (`app_client`); stream=true
and errors inside a stream on the real server (`gateway`).
"""

import json

import pytest
import requests
from flask.testing import FlaskClient

from tests.backends import chunk_json, completion_json
from tests.conftest import TICKET, WRONG_TICKET, json_of
from tests.sse_client import data_payloads, read_events

MESSAGES = [{"role": "user", "content": "hi"}]


def post(where, body=None, data=None, headers=None):
    """A chat request to `where`: the in-process app (`app_client`) or the real server (`gateway`)."""
    if isinstance(where, FlaskClient):
        return where.post("/v1/chat/completions", json=body, data=data, headers=headers)
    return requests.post(where.url + "/v1/chat/completions", json=body, data=data, headers=headers, timeout=30)


@pytest.fixture
def layer(request):
    """`layer(stream)`: the in-process app for stream=false (one JSON answer), the real server for
    stream=true (whether the error comes as a status or inside the stream depends on the server)."""
    return lambda stream: request.getfixturevalue("gateway" if stream else "app_client")


def assert_error(response, status, *, code=None, param=None, says=()):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    error = json_of(response)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code
    assert error["param"] == param
    for words in says:
        assert words in error["message"], error["message"]
    assert TICKET not in response.text and "Traceback" not in response.text
    return error


@pytest.mark.parametrize("data", [b"{bad json", b"\xff\xfe\x00garbage", b"", b"[" * 100000 + b"]" * 100000])
def test_malformed_json_is_400(app_client, data):
    assert_error(post(app_client, data=data, headers={"Content-Type": "application/json"}), 400, says=("Invalid request",))


def test_schema_violation_names_the_field(app_client):
    body = {"model": "corp-plain", "messages": [*MESSAGES, *MESSAGES, {"role": "bot", "content": "x"}]}
    error = assert_error(post(app_client, body), 400, param="messages.2.role")
    assert error["type"] == "invalid_request_error"


def test_unknown_model_is_404(app_client):
    assert_error(post(app_client, {"model": "nope", "messages": MESSAGES}), 404, code="model_not_found", param="model", says=("nope",))


@pytest.mark.parametrize("stream", [False, True])
def test_backend_refused_is_502(layer, stream):
    error = assert_error(post(layer(stream), {"model": "nowhere", "messages": MESSAGES, "stream": stream}), 502, says=("Backend 'nowhere'", "refused"))
    assert error["code"] == "backend_unreachable"


@pytest.mark.parametrize("model", ["corp-plain", "gpt-stream"])
@pytest.mark.parametrize("stream", [False, True])
def test_backend_500_is_502(layer, openai_backend, corp_backend, model, stream):
    for backend in (openai_backend, corp_backend):
        backend.respond_with(lambda ex: ex.send_json(500, {"error": {"message": "model crashed"}}))
    assert_error(post(layer(stream), {"model": model, "messages": MESSAGES, "stream": stream}), 502, code="backend_server_error", says=("model crashed", "HTTP 500"))


@pytest.mark.parametrize("stream", [False, True])
def test_backend_rejecting_our_credentials_is_502_saying_so(layer, corp_backend, stream):
    error = assert_error(post(layer(stream), {"model": "corp-wrong-ticket", "messages": MESSAGES, "stream": stream}), 502, code="backend_auth_rejected")
    assert "Backend 'corp_wrong_ticket' rejected the gateway's credentials (HTTP 401)" in error["message"]
    assert WRONG_TICKET not in json.dumps(error)


@pytest.mark.parametrize("stream", [False, True])
def test_backend_429_passes_retry_after(layer, corp_backend, stream):
    corp_backend.respond_with(lambda ex: ex.send_json(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "17"}))
    response = post(layer(stream), {"model": "corp-plain", "messages": MESSAGES, "stream": stream})
    assert_error(response, 429, code="backend_rate_limited", says=("slow down",))
    assert response.headers["Retry-After"] == "17"


def test_backend_other_4xx_keeps_its_status_and_message(app_client, corp_backend):
    corp_backend.respond_with(lambda ex: ex.send_json(422, {"detail": "max_tokens too large for this model"}))
    assert_error(post(app_client, {"model": "corp-plain", "messages": MESSAGES}), 422, says=("max_tokens too large", "Backend 'corp'"))


@pytest.mark.parametrize("stream", [False, True])
def test_backend_200_with_html_is_502(layer, corp_backend, stream):
    corp_backend.respond_with(lambda ex: ex.send_raw(200, "text/html", b"<html><body>Login</body></html>"))
    assert_error(post(layer(stream), {"model": "corp-plain", "messages": MESSAGES, "stream": stream}), 502, code="backend_invalid_answer", says=("not JSON",))


def test_backend_200_with_json_that_is_not_a_completion_is_502(app_client, corp_backend):
    corp_backend.respond_with(lambda ex: ex.send_json(200, {"result": "ok"}))
    assert_error(post(app_client, {"model": "corp-plain", "messages": MESSAGES}), 502, code="backend_invalid_answer", says=("no choices",))


def test_backend_redirect_is_not_followed(app_client, corp_backend):
    corp_backend.respond_with(lambda ex: ex.send_raw(307, "text/plain", b"", headers={"Location": "http://127.0.0.1:1/steal"}))
    count = len(corp_backend.requests)
    assert_error(post(app_client, {"model": "corp-plain", "messages": MESSAGES}), 502, code="backend_redirect", says=("127.0.0.1:1",))
    assert len(corp_backend.requests) == count + 1


def test_streaming_backend_that_drops_mid_stream_ends_with_error_event(gateway, openai_backend):
    def drop(exchange):
        exchange.start_sse()
        exchange.event(chunk_json(delta={"role": "assistant", "content": "partial"}))
        exchange.handler.wfile.write(b"ff\r\ndata: {\"trunc")  # a chunk promised, never finished
        exchange.handler.wfile.flush()
        exchange.handler.close_connection = True
        exchange.handler.connection.shutdown(2)

    openai_backend.respond_with(drop)
    with requests.post(gateway.url + "/v1/chat/completions", json={"model": "gpt-stream", "messages": MESSAGES, "stream": True}, stream=True, timeout=30) as response:
        assert response.status_code == 200
        payloads = data_payloads(read_events(response))
    assert payloads[0]["choices"][0]["delta"]["content"] == "partial"
    error = payloads[-2]["error"]
    assert "choices" not in payloads[-2]
    assert "Backend 'openai'" in error["message"] and error["code"] == "backend_connection_dropped"
    assert payloads[-1] == "[DONE]"


def test_stream_that_ends_before_finishing_is_an_error_not_a_complete_answer(gateway, openai_backend):
    def short(exchange):
        exchange.start_sse()
        exchange.event(chunk_json(delta={"role": "assistant", "content": "half an ans"}))
        exchange.end_sse()  # a clean end of the HTTP body, but no finish_reason and no [DONE]

    openai_backend.respond_with(short)
    with requests.post(gateway.url + "/v1/chat/completions", json={"model": "gpt-stream", "messages": MESSAGES, "stream": True}, stream=True, timeout=30) as response:
        payloads = data_payloads(read_events(response))
    assert payloads[-2]["error"]["code"] == "backend_invalid_answer" and payloads[-1] == "[DONE]"


def test_error_event_from_the_backend_before_anything_else_is_a_status(gateway, openai_backend):
    def fail_first(exchange):
        exchange.start_sse()
        exchange.event(json.dumps({"error": {"message": "quota exceeded", "type": "upstream_error"}}))
        exchange.event("[DONE]")
        exchange.end_sse()

    openai_backend.respond_with(fail_first)
    response = post(gateway, {"model": "gpt-stream", "messages": MESSAGES, "stream": True})
    assert_error(response, 502, says=("Backend 'openai'", "quota exceeded"))


def test_error_event_from_the_backend_mid_stream_is_relayed_as_ours(gateway, openai_backend):
    def fail_later(exchange):
        exchange.start_sse()
        exchange.event(chunk_json(delta={"role": "assistant", "content": "Hel"}))
        exchange.event(json.dumps({"error": {"message": "quota exceeded", "type": "upstream_error"}}))
        exchange.event("[DONE]")
        exchange.end_sse()

    openai_backend.respond_with(fail_later)
    with requests.post(gateway.url + "/v1/chat/completions", json={"model": "gpt-stream", "messages": MESSAGES, "stream": True}, stream=True, timeout=30) as response:
        payloads = data_payloads(read_events(response))
    assert payloads[0]["choices"][0]["delta"]["content"] == "Hel"
    assert payloads[1] == {"error": {"message": "Backend 'openai' reported an error in its stream: quota exceeded",
                                     "type": "backend_error", "param": None, "code": "backend_server_error"}}
    assert payloads[2:] == ["[DONE]"]


@pytest.mark.parametrize("path, method", [("/v1/nothing", "get"), ("/v1/chat/completions", "get"), ("/v1/models", "post")])
def test_wrong_paths_and_methods_get_openai_shaped_errors(app_client, path, method):
    response = app_client.open(path, method=method.upper())
    assert response.status_code in (404, 405)
    assert_error(response, response.status_code, code="not_found" if response.status_code == 404 else "method_not_allowed")


def test_stream_with_no_event_before_done_is_502(gateway, openai_backend):
    openai_backend.respond_with(lambda ex: (ex.start_sse(), ex.event("[DONE]"), ex.end_sse()))
    assert_error(post(gateway, {"model": "gpt-stream", "messages": MESSAGES, "stream": True}), 502,
                 code="backend_invalid_answer", says=("without sending an answer",))


def test_null_finish_reason_of_a_whole_answer_becomes_stop(gateway, corp_backend):
    answer = completion_json("done")
    answer["choices"][0]["finish_reason"] = None
    corp_backend.respond_with(lambda ex: ex.send_json(200, answer))
    with requests.post(gateway.url + "/v1/chat/completions", json={"model": "corp-plain", "messages": MESSAGES, "stream": True},
                       stream=True, timeout=30) as response:
        payloads = data_payloads(read_events(response))
    assert [p["choices"][0]["finish_reason"] for p in payloads[:-1]][-1] == "stop"
