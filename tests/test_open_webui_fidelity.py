"""Open WebUI fidelity: tools, images, reasoning and signed user identity, per backend setting.

One gateway serves eight backends: both kinds (streaming OpenAI-compatible, non-streaming
corporate) times `tools = pass|drop` times `content = parts|text`. Its `user_jwt_secret` is set,
so user values come only from a verified X-OpenWebUI-User-Jwt. It also lists model ids Open WebUI
would rewrite requests for, which its start-up log must warn about.
"""

import itertools
import json
import time

import jwt
import pytest
import requests

from gateway.upstream.conversation import IMAGE_PLACEHOLDER
from tests.backends import chunk_json, completion_json
from tests.configs import backend, gateway_toml, model
from tests.conftest import FIXTURES, TICKET, fixture_body
from tests.gunicorn_server import GatewayServer
from tests.sdk import openai  # the SDK itself is imported at first use
from tests.sse_client import content_of, data_payloads, read_events

JWT_SECRET = "owui-jwt-secret-for-tests-0123456789"
KINDS = {"s": "openai_backend", "n": "corp_backend"}  # streaming / non-streaming
COMBOS = list(itertools.product(KINDS, ("pass", "drop"), ("parts", "text")))
TOOL_CALL = {"id": "call_9f2c1a7e", "type": "function", "function": {"name": "get_current_timestamp", "arguments": "{}"}}
CONTINUATION = [
    {"role": "user", "content": "What time is it?"},
    {"role": "assistant", "content": "", "tool_calls": [TOOL_CALL]},
    {"role": "tool", "tool_call_id": "call_9f2c1a7e", "content": "1764093600"},
]


USER_HEADERS = {"x-dep-ticket": "${CORP_TICKET}", "User-Id": "{user.email|anonymous}", "User-Name": "{user.name}",
                "Chat-Id": "{chat_id}"}


# Open WebUI rewrites requests for ids that look like OpenAI reasoning models (the first two).
REWRITTEN_IDS, KEPT_IDS = ("o3-mini", "gpt-5.1"), ("gpt-4o", "gauss-o1")


def model_id(kind, tools, content):
    return f"{kind}-{tools}-{content}"


def backend_name(kind, tools, content):
    return model_id(kind, tools, content).replace("-", "_")


@pytest.fixture(scope="module")
def fidelity(openai_backend, corp_backend, tmp_path_factory):
    config = gateway_toml(
        gateway={"user_jwt_secret": "${OWUI_JWT_SECRET}"},
        backends={
            backend_name(kind, tools, content): backend(openai_backend.url if kind == "s" else corp_backend.url,
                                                        streaming=kind == "s", tools=tools, content=content, headers=USER_HEADERS)
            for kind, tools, content in COMBOS
        },
        models=[model(model_id(*combo), backend_name(*combo)) for combo in COMBOS]
        + [model(i, backend_name("s", "pass", "parts")) for i in REWRITTEN_IDS + KEPT_IDS],
    )
    server = GatewayServer(config, tmp_path_factory.mktemp("fidelity"),
                           env={"CORP_TICKET": TICKET, "OWUI_JWT_SECRET": JWT_SECRET})
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def post(gateway, body, headers=None):
    return requests.post(gateway.url + "/v1/chat/completions", json=body, headers=headers, stream=True, timeout=30)


def token(secret=JWT_SECRET, expires_in=300, **claims):
    claims = {"sub": "u-1", "email": "lee@corp.example", "name": "이영희", "role": "user", **claims}
    if expires_in is not None:
        claims["exp"] = int(time.time()) + expires_in
    return jwt.encode(claims, secret, algorithm="HS256")


# --- every fixture, both backend kinds, both settings of each option ---------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("0*.json")))
@pytest.mark.parametrize("kind, tools, content", COMBOS)
def test_every_fixture_with_every_setting(fidelity, request, name, kind, tools, content):
    backend = request.getfixturevalue(KINDS[kind])
    body = {**fixture_body(name), "model": model_id(kind, tools, content)}
    response = post(fidelity, body)
    assert response.status_code == 200, response.text
    received = backend.last.body
    # tools: whole with "pass", gone with "drop"
    if tools == "pass":
        assert received.get("tools") == body.get("tools")
    else:
        assert "tools" not in received and "tool_choice" not in received
    # content: lists as sent with "parts"; strings with a placeholder for images with "text"
    for sent, got in zip(body["messages"], received["messages"], strict=True):
        assert got["role"] == sent["role"]
        if content == "parts" or isinstance(sent["content"], str):
            assert got["content"] == sent["content"]
        else:
            assert isinstance(got["content"], str)
            texts = [p["text"] for p in sent["content"] if p["type"] == "text"]
            assert all(t in got["content"] for t in texts)
            assert got["content"].count(IMAGE_PLACEHOLDER) == sum(p["type"] == "image_url" for p in sent["content"])
    # what the client got
    if body.get("stream"):
        payloads = data_payloads(read_events(response))
        assert payloads[-1] == "[DONE]" and content_of(payloads).startswith(f"echo {len(body['messages'])}:")
    else:
        assert response.json()["choices"][0]["message"]["content"].startswith("echo 1:")


# --- tools ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_tool_call_reaches_the_sdk_as_a_tool_call(fidelity, request, kind):
    backend = request.getfixturevalue(KINDS[kind])
    if kind == "n":
        backend.respond_with(lambda ex: ex.send_json(200, completion_json(None, tool_calls=[TOOL_CALL])))
    else:
        r4 = (FIXTURES / "R4_chat_stream_response_tool_call.sse").read_bytes()
        backend.respond_with(lambda ex: (ex.start_sse(), ex.write(r4), ex.end_sse()))
    body = fixture_body("06_chat_stream_native_builtin_tools_v0124_default_admin.json")
    with openai.OpenAI(base_url=fidelity.url + "/v1", api_key="unused", max_retries=0, timeout=30) as client:
        chunks = list(client.chat.completions.create(model=model_id(kind, "pass", "parts"), messages=body["messages"],
                                                     tools=body["tools"], stream=True))
    calls = [call for c in chunks if c.choices for call in (c.choices[0].delta.tool_calls or [])]
    assert all(call.index == 0 for call in calls)
    assert calls[0].id == "call_9f2c1a7e" and calls[0].function.name == "get_current_timestamp"
    assert "".join(call.function.arguments or "" for call in calls) == "{}"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


@pytest.mark.parametrize("kind", KINDS)
def test_continuation_is_forwarded_intact_with_pass(fidelity, request, kind):
    backend = request.getfixturevalue(KINDS[kind])
    body = {"model": model_id(kind, "pass", "parts"), "stream": True, "messages": CONTINUATION,
            "tools": fixture_body("06_chat_stream_native_builtin_tools_v0124_default_admin.json")["tools"]}
    read_events(post(fidelity, body))
    assert backend.last.body["messages"] == CONTINUATION


@pytest.mark.parametrize("kind", KINDS)
def test_continuation_becomes_plain_turns_with_drop(fidelity, request, kind):
    backend = request.getfixturevalue(KINDS[kind])
    body = {"model": model_id(kind, "drop", "text"), "stream": True, "messages": CONTINUATION, "tool_choice": "auto",
            "parallel_tool_calls": True}
    read_events(post(fidelity, body))
    received = backend.last.body
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & set(received)
    assert [m["role"] for m in received["messages"]] == ["user", "assistant", "user"]
    assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) for m in received["messages"])
    assert "get_current_timestamp" in received["messages"][1]["content"] and "{}" in received["messages"][1]["content"]
    assert "1764093600" in received["messages"][2]["content"] and "get_current_timestamp" in received["messages"][2]["content"]


# --- reasoning -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_reasoning_arrives_before_content(fidelity, request, kind):
    backend = request.getfixturevalue(KINDS[kind])
    if kind == "n":
        backend.respond_with(lambda ex: ex.send_json(200, completion_json("42", reasoning_content="Let me think.")))
    else:
        def reasoning_stream(ex):
            ex.start_sse()
            ex.event(chunk_json(delta={"role": "assistant", "content": ""}))
            ex.event(chunk_json(delta={"reasoning_content": "Let me "}))
            ex.event(chunk_json(delta={"reasoning_content": "think."}))
            ex.event(chunk_json(delta={"content": "42"}))
            ex.event(chunk_json(delta={}, finish_reason="stop"))
            ex.event("[DONE]")
            ex.end_sse()
        backend.respond_with(reasoning_stream)
    body = {"model": model_id(kind, "pass", "parts"), "stream": True, "messages": [{"role": "user", "content": "?"}]}
    payloads = [p for p in data_payloads(read_events(post(fidelity, body))) if p != "[DONE]"]
    deltas = [p["choices"][0]["delta"] for p in payloads]
    reasoning_at = [i for i, d in enumerate(deltas) if d.get("reasoning_content")]
    content_at = [i for i, d in enumerate(deltas) if d.get("content")]
    assert "".join(deltas[i]["reasoning_content"] for i in reasoning_at) == "Let me think."
    assert reasoning_at and content_at and max(reasoning_at) < min(content_at)


def test_reasoning_is_kept_without_streaming(fidelity, corp_backend):
    corp_backend.respond_with(lambda ex: ex.send_json(200, completion_json("42", reasoning_content="Let me think.")))
    body = {"model": "n-pass-parts", "messages": [{"role": "user", "content": "?"}]}
    message = post(fidelity, body).json()["choices"][0]["message"]
    assert message["reasoning_content"] == "Let me think." and message["content"] == "42"


# --- signed user identity ----------------------------------------------------------------------------------------


def test_valid_jwt_fills_the_user(fidelity, corp_backend):
    headers = {"X-OpenWebUI-User-Jwt": token(), "X-OpenWebUI-Chat-Id": "chat-77"}
    assert post(fidelity, {"model": "n-pass-parts", "messages": [{"role": "user", "content": "hi"}]}, headers).status_code == 200
    received = corp_backend.last.headers
    assert received["user-id"] == "lee@corp.example" and received["chat-id"] == "chat-77"
    assert requests.utils.unquote(received["user-name"]) == "이영희"


@pytest.mark.parametrize("bad", [
    token(secret="not-the-secret-but-long-enough-0000"),  # forged
    token(expires_in=-60),  # expired
    token(expires_in=None),  # never expires: refused
    "not.a.jwt",
    "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1In0.",  # alg "none", unsigned
])
def test_bad_jwt_is_401(fidelity, corp_backend, bad):
    count = len(corp_backend.requests)
    response = post(fidelity, {"model": "n-pass-parts", "messages": [{"role": "user", "content": "hi"}]}, {"X-OpenWebUI-User-Jwt": bad})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_user_token"
    assert len(corp_backend.requests) == count  # nothing reached the backend


def test_plain_user_headers_are_ignored_when_a_jwt_secret_is_set(fidelity, corp_backend):
    headers = {"X-OpenWebUI-User-Email": "ceo@corp.example", "X-OpenWebUI-User-Name": "CEO"}
    post(fidelity, {"model": "n-pass-parts", "messages": [{"role": "user", "content": "hi"}], "user": "ceo"}, headers)
    assert corp_backend.last.headers["user-id"] == "anonymous" and "user-name" not in corp_backend.last.headers
    headers["X-OpenWebUI-User-Jwt"] = token()
    post(fidelity, {"model": "n-pass-parts", "messages": [{"role": "user", "content": "hi"}]}, headers)
    assert corp_backend.last.headers["user-id"] == "lee@corp.example"


# --- model list ----------------------------------------------------------------------------------------------------


def test_ids_open_webui_rewrites_are_warned_about_at_start_up(fidelity):
    warnings = [line for line in fidelity.log().splitlines() if "look like OpenAI reasoning models" in line]
    assert len(warnings) == 1
    assert "o3-mini" in warnings[0] and "gpt-5.1" in warnings[0]
    assert "gpt-4o" not in warnings[0] and "gauss-o1" not in warnings[0]


def test_json_of_fixture_r1_shape(fidelity):
    data = requests.get(fidelity.url + "/v1/models", timeout=10).json()
    expected_keys = set(json.loads((FIXTURES / "R1_models_list_response_minimal.json").read_text())["data"][1])
    assert all(expected_keys <= set(m) for m in data["data"])
