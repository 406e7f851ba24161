"""What reaches the backend: the whole conversation, the picked model, the merged system prompt, headers.

In-process (`app_client`): none of this depends on the server; the backends are the real loopback ones.
"""

import json
import logging
import uuid
from urllib.parse import quote, unquote

from gateway.telemetry.record import access_log
from tests.conftest import TICKET

FOUR_TURNS = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome."},
    {"role": "user", "content": "Which is bigger?"},
]


def post(app_client, body, headers=None):
    return app_client.post("/v1/chat/completions", json=body, headers=headers)


def test_four_turn_conversation_arrives_whole_and_in_order(app_client, corp_backend):
    response = post(app_client, {"model": "corp-plain", "messages": FOUR_TURNS, "temperature": 0.2, "max_tokens": 50})
    assert response.status_code == 200
    received = corp_backend.last.body
    assert received["messages"] == FOUR_TURNS
    assert received["model"] == "Gauss2-37b-instruct-v1.0"  # corp-plain maps to this upstream name
    assert received["temperature"] == 0.2 and received["max_tokens"] == 50
    assert received["stream"] is False
    assert response.get_json()["choices"][0]["message"]["content"] == "echo 5: Which is bigger?"


def test_the_backend_gets_utf8_json_and_a_lone_surrogate_escaped(app_client, corp_backend):
    korean = "대화 내용을 요약해 주세요"
    assert post(app_client, {"model": "corp-plain", "messages": [{"role": "user", "content": korean}]}).status_code == 200
    assert korean.encode("utf-8") in corp_backend.last.raw  # UTF-8 bytes, as the openai SDK sends, not \\u escapes
    assert corp_backend.last.body["messages"][-1]["content"] == korean
    lone = "a\ud800b"  # legal as a JSON escape, not as UTF-8: that body goes in ASCII, escaped
    assert post(app_client, {"model": "corp-plain", "messages": [{"role": "user", "content": lone}]}).status_code == 200
    assert b'"a\\ud800b"' in corp_backend.last.raw and corp_backend.last.raw.isascii()


def test_the_model_the_user_picked_is_the_one_called(app_client, openai_backend):
    assert post(app_client, {"model": "gpt-stream", "messages": FOUR_TURNS}).status_code == 200
    assert openai_backend.last.body["model"] == "upstream-stream-model"
    assert post(app_client, {"model": "openai-nostream", "messages": FOUR_TURNS}).status_code == 200
    assert openai_backend.last.body["model"] == "openai-nostream"  # no upstream: the id itself


def test_system_prompt_is_prepended_when_the_conversation_has_none(app_client, corp_backend):
    post(app_client, {"model": "Gauss2-37b-instruct-v1.0", "messages": FOUR_TURNS})
    messages = corp_backend.last.body["messages"]
    assert messages[0] == {"role": "system", "content": "아는 것에 대해서만 대답해주세요."}
    assert messages[1:] == FOUR_TURNS


def test_system_prompt_is_merged_into_the_conversations_own_first(app_client, corp_backend):
    conversation = [{"role": "system", "content": "You are terse."}, *FOUR_TURNS]
    post(app_client, {"model": "Gauss2-37b-instruct-v1.0", "messages": conversation})
    messages = corp_backend.last.body["messages"]
    assert [m["role"] for m in messages].count("system") == 1
    assert messages[0] == {"role": "system", "content": "아는 것에 대해서만 대답해주세요.\n\nYou are terse."}
    assert messages[1:] == FOUR_TURNS


def test_unknown_fields_pass_and_drop_params_are_removed(app_client, corp_backend):
    body = {"model": "corp-plain", "messages": FOUR_TURNS, "x_drop_me": 1, "x_vendor": {"a": [1, 2]}, "seed": 7,
            "stream_options": {"include_usage": True}}
    assert post(app_client, body).status_code == 200
    received = corp_backend.last.body
    assert "x_drop_me" not in received
    assert received["x_vendor"] == {"a": [1, 2]} and received["seed"] == 7
    assert "stream_options" not in received  # a non-streaming backend never gets stream_options


def test_a_streaming_backend_is_asked_for_usage_the_client_did_not_ask_for_and_the_client_never_sees_it(app_client, openai_backend, monkeypatch):
    """The usage ledger, budgets and token limits count every answer; Open WebUI asks for usage
    only where a model's usage capability is on. The usage chunk is noted, not sent."""
    lines = []
    monkeypatch.setattr(access_log, "write", lambda line: lines.append(json.loads(line)))
    response = post(app_client, {"model": "gpt-stream", "messages": FOUR_TURNS, "stream": True, "stream_options": {"x_vendor": 1}})
    text = response.get_data(as_text=True)
    response.close()
    assert openai_backend.last.body["stream_options"] == {"x_vendor": 1, "include_usage": True}
    assert '"usage"' not in text and text.rstrip().endswith("data: [DONE]")
    assert lines[-1]["total_tokens"] > 0 and lines[-1]["prompt_tokens"] == 7  # as the backend reported it
    post(app_client, {"model": "gpt-stream", "messages": FOUR_TURNS, "stream": True, "stream_options": {"include_usage": True}})
    assert openai_backend.last.body["stream_options"] == {"include_usage": True}  # the client's own ask: its chunk is sent
    post(app_client, {"model": "gpt-stream", "messages": FOUR_TURNS, "stream": True, "stream_options": {"continuous_usage_stats": True}})
    assert openai_backend.last.body["stream_options"] == {"include_usage": True}  # usage on every chunk only for a client that asked
    post(app_client, {"model": "gpt-stream", "messages": FOUR_TURNS})
    assert "stream_options" not in openai_backend.last.body  # not streamed: never


def test_a_backend_that_refuses_the_usage_ask_is_called_again_without_it_and_not_asked_again(openai_backend):
    """A strict server (pydantic's extra="forbid") answers 422 to a field it does not know. The
    client, which never sent stream_options, gets its answer all the same."""
    from app import create_app
    from gateway.config import parse_config
    from tests.backends import default_behavior
    from tests.configs import backend, gateway_toml, model

    def strict(exchange):
        if "stream_options" in exchange.body:
            exchange.send_json(422, {"detail": [{"loc": ["body", "stream_options"], "msg": "Extra inputs are not permitted"}]})
        else:
            default_behavior(exchange)

    openai_backend.respond_with(strict)
    config = gateway_toml(backends={"strict": backend(openai_backend.url, streaming=True)}, models=[model("s", "strict")])
    client = create_app(parse_config(config, "strict test config", {})).test_client()
    said, warnings = [], logging.Handler()
    warnings.emit = lambda record: said.append(record.getMessage())
    logging.getLogger("gateway").addHandler(warnings)
    try:
        for _ in range(2):
            response = client.post("/v1/chat/completions", json={"model": "s", "messages": FOUR_TURNS, "stream": True})
            assert response.status_code == 200 and "data: [DONE]" in response.get_data(as_text=True)
    finally:
        logging.getLogger("gateway").removeHandler(warnings)
    assert ["stream_options" in r.body for r in openai_backend.requests] == [True, False, False]  # asked once only
    assert sum("backend 'strict' refused stream_options" in line for line in said) == 1
    # A 422 about something else is the client's, as ever: returned, not retried.
    openai_backend.respond_with(lambda ex: ex.send_json(422, {"detail": "max_tokens too large"}))
    assert client.post("/v1/chat/completions", json={"model": "s", "messages": FOUR_TURNS, "stream": True}).status_code == 422


def test_headers_secret_uuids_and_forwarded_user(app_client, corp_backend):
    owui = {
        "X-OpenWebUI-User-Email": "kim@corp.example",
        "X-OpenWebUI-User-Name": quote("김철수 Kim", safe=" "),  # Open WebUI URL-encodes the name
        "X-OpenWebUI-User-Id": "u-123",
        "X-OpenWebUI-Chat-Id": "chat-9",
    }
    post(app_client, {"model": "corp-plain", "messages": FOUR_TURNS}, headers=owui)
    post(app_client, {"model": "corp-plain", "messages": FOUR_TURNS}, headers=owui)
    first, second = corp_backend.requests[-2].headers, corp_backend.requests[-1].headers
    assert first["x-dep-ticket"] == TICKET  # from ${CORP_TICKET} in the environment
    assert first["send-system-name"] == "D0aKG" and first["user-type"] == "AD_ID"
    assert first["user-id"] == "kim@corp.example"
    assert first["chat-id"] == "chat-9"
    assert first["user-name"].isascii() and unquote(first["user-name"]) == "김철수 Kim"
    ids = [first["prompt-msg-id"], first["completion-msg-id"], second["prompt-msg-id"], second["completion-msg-id"]]
    assert len(set(ids)) == 4
    assert all(uuid.UUID(i) for i in ids)


def test_header_fallbacks_when_open_webui_sends_nothing(app_client, corp_backend):
    post(app_client, {"model": "corp-plain", "messages": FOUR_TURNS})
    headers = corp_backend.last.headers
    assert headers["user-id"] == "anonymous"
    assert "user-name" not in headers and "chat-id" not in headers  # rendered empty: not sent


def test_user_field_of_the_body_is_the_user_id_without_headers(app_client, corp_backend, tmp_path):
    # {user.email} has no value from the body, so the fallback applies; the user field itself passes on
    post(app_client, {"model": "corp-plain", "messages": FOUR_TURNS, "user": "emp-42"})
    assert corp_backend.last.body["user"] == "emp-42"
    assert corp_backend.last.headers["user-id"] == "anonymous"


def test_header_injection_through_user_values_is_impossible(app_client, corp_backend):
    evil = quote("Kim\r\nx-dep-ticket: stolen", safe=" ")  # decodes to a value with CR/LF
    assert post(app_client, {"model": "corp-plain", "messages": FOUR_TURNS}, headers={"X-OpenWebUI-User-Name": evil}).status_code == 200
    headers = corp_backend.last.headers
    assert headers["x-dep-ticket"] == TICKET
    assert unquote(headers["user-name"]) == "Kim\r\nx-dep-ticket: stolen"


def test_a_user_value_that_starts_with_a_line_break_is_sent_whole(app_client, corp_backend):
    evil = "%0D%0AX-Evil-Name:%20injected"  # Open WebUI URL-encodes the name; this one decodes to CR LF first
    assert post(app_client, {"model": "corp-plain", "messages": FOUR_TURNS}, headers={"X-OpenWebUI-User-Name": evil}).status_code == 200
    sent = corp_backend.last.headers["user-name"]
    assert sent.startswith("%0D%0A") and unquote(sent) == "\r\nX-Evil-Name: injected"
