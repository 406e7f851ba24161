"""POST /v1/responses, GET and DELETE /v1/responses/<id>, in-process (Flask's test client) against the
real loopback test backends: what the backend receives (the chat path's routing, system prompt,
defaults, overrides and headers), the answers, every 400, and stored responses (ownership,
store: false, item references) in SQLite. The stores themselves: test_responses_store.py."""

import pytest

from app import create_app
from gateway.config import parse_config
from tests.backends import answers, tool_round_trip
from tests.conftest import INBOUND_KEY, TICKET, SecretWatchingClient
from tests.responses_helpers import OTHER_KEY, check_framing, parse_events, responses_config, sdk_final_response

KEY = {"Authorization": f"Bearer {INBOUND_KEY}"}


def build_app(openai_backend, corp_backend, data_dir, extra_toml="", **gateway):
    text = responses_config(openai_backend.url, corp_backend.url, data_dir=str(data_dir), **gateway) + extra_toml
    config = parse_config(text, "test config", {"CORP_TICKET": TICKET})
    app = create_app(config)
    app.test_client_class = SecretWatchingClient
    return app


@pytest.fixture(scope="module")
def responses_app(openai_backend, corp_backend, tmp_path_factory):
    return build_app(openai_backend, corp_backend, tmp_path_factory.mktemp("responses-data"))


@pytest.fixture
def api(responses_app):
    return responses_app.test_client()


def create(client, body, headers=KEY, **kwargs):
    return client.post("/v1/responses", json=body, headers=headers, **kwargs)


def assert_error(response, status, param=None, code=None, says=()):
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    for words in says:
        assert words in error["message"], error["message"]
    return error


# --- through the chat path ----------------------------------------------------------------------------


def test_a_request_reaches_the_backend_as_a_chat_request_with_the_models_settings(api, corp_backend):
    corp_backend.respond_with(answers("안녕하세요"))
    response = create(api, {"model": "gauss", "instructions": "Be brief.", "max_output_tokens": 50,
                            "input": [{"role": "developer", "content": "Use Korean."}, {"role": "user", "content": "hi"}]},
                      headers={**KEY, "X-OpenWebUI-User-Email": "kim@example.com"})
    assert response.status_code == 200, response.get_data(as_text=True)
    sent = corp_backend.last
    assert sent.body["model"] == "Gauss2-37b" and sent.body["stream"] is False
    assert sent.body["messages"] == [
        {"role": "system", "content": "아는 것에 대해서만 대답해주세요.\n\nBe brief.\n\nUse Korean."},  # the model's prompt first
        {"role": "user", "content": "hi"},
    ]
    assert sent.body["max_tokens"] == 50 and sent.body["temperature"] == 0.4 and sent.body["top_p"] == 0.9  # defaults fill, overrides win
    assert sent.headers["x-dep-ticket"] == TICKET and sent.headers["user-id"] == "kim@example.com"
    assert response.headers["X-Gateway-Backend"] == "corp"
    answer = response.get_json()
    assert answer["model"] == "gauss" and answer["status"] == "completed" and answer["output"][0]["content"][0]["text"] == "안녕하세요"
    assert answer["usage"]["total_tokens"] == 10


def test_a_streamed_request_to_a_non_streaming_backend_is_a_built_stream(api, corp_backend):
    corp_backend.respond_with(answers("Built from one answer", reasoning="first think"))
    response = create(api, {"model": "gauss", "input": "hi", "stream": True})
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Cache-Control"] == "no-cache" and response.headers["X-Accel-Buffering"] == "no"
    assert corp_backend.last.body["stream"] is False and "stream_options" not in corp_backend.last.body
    events = parse_events(response.get_data())
    datas = check_framing(events)
    assert [item["type"] for item in datas[-1]["response"]["output"]] == ["reasoning", "message"]
    assert sdk_final_response(events).output_text == "Built from one answer"
    assert datas[-1]["response"]["usage"]["total_tokens"] == 10  # the built usage chunk


def test_a_streamed_request_to_a_streaming_backend_is_relayed_and_asks_for_usage(api, openai_backend):
    openai_backend.respond_with(answers("Relayed word by word"))
    response = create(api, {"model": "gpt-stream", "input": "hi", "stream": True})
    sent = openai_backend.last.body
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True} and sent["model"] == "upstream-stream-model"
    datas = check_framing(parse_events(response.get_data()))
    assert len([d for d in datas if d["type"] == "response.output_text.delta"]) == 4
    assert datas[-1]["response"]["usage"]["total_tokens"] == 16


def test_a_tool_call_comes_back_as_a_function_call_item(api, openai_backend):
    openai_backend.respond_with(answers(tool_calls=[("call_1", "weather", '{"city": "Seoul"}')]))
    tools = [{"type": "function", "name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
             {"type": "web_search"}]
    answer = create(api, {"model": "gpt-stream", "input": "weather?", "tools": tools}).get_json()
    assert openai_backend.last.body["tools"] == [{"type": "function", "function": {"name": "weather", "parameters": tools[0]["parameters"]}}]
    [call] = answer["output"]
    assert (call["type"], call["name"], call["call_id"], call["arguments"]) == ("function_call", "weather", "call_1", '{"city": "Seoul"}')
    assert answer["tools"] == tools  # echoed as sent


def test_unprefixed_path_works_too(api, openai_backend):
    assert api.post("/responses", json={"model": "gpt-stream", "input": "hi"}, headers=KEY).status_code == 200


def test_the_users_limits_count_responses_requests_with_chat_ones(openai_backend, corp_backend, tmp_path):
    client = build_app(openai_backend, corp_backend, tmp_path, extra_toml="\n[limits]\nper_user_requests_per_minute = 2\n").test_client()
    kim = {**KEY, "X-OpenWebUI-User-Id": "kim"}
    assert create(client, {"model": "gpt-stream", "input": "one"}, headers=kim).status_code == 200
    assert client.post("/v1/chat/completions", json={"model": "gpt-stream", "messages": [{"role": "user", "content": "two"}]}, headers=kim).status_code == 200
    assert_error(create(client, {"model": "gpt-stream", "input": "three", "stream": True}, headers=kim), 429, code="user_rate_limit")
    assert create(client, {"model": "gpt-stream", "input": "one"}, headers={**KEY, "X-OpenWebUI-User-Id": "lee"}).status_code == 200


# --- errors -------------------------------------------------------------------------------------------


def test_errors_before_the_stream_have_the_chat_shape_and_status(api, openai_backend):
    assert_error(api.post("/v1/responses", json={"model": "gpt-stream", "input": "hi"}), 401)
    assert_error(create(api, {"model": "nope", "input": "hi"}), 404, code="model_not_found", param="model")
    assert_error(create(api, {"model": "bge-m3", "input": "hi"}), 400, code="wrong_model_kind", says=("send it to /v1/embeddings, not /v1/responses",))
    assert_error(api.post("/v1/responses", data=b"{not json", headers={**KEY, "Content-Type": "application/json"}), 400, says=("JSON",))
    assert_error(create(api, {"model": "gpt-stream", "input": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                                                                {"role": "user", "content": "c"}, {"type": "computer_call"}]}),
                 400, param="input.3.type", says=("computer_call",))
    assert_error(create(api, {"model": "gpt-stream", "input": "hi", "tools": [{"type": "function", "name": "a"}, {"type": "custom", "name": "b"}, {"type": 7}]}),
                 400, param="tools.2.type")
    assert_error(create(api, {"model": "gpt-stream", "input": "hi", "background": True}), 400, param="background")
    openai_backend.respond_with(lambda exchange: exchange.send_json(400, {"error": {"message": "context too long"}}))
    assert_error(create(api, {"model": "gpt-stream", "input": "hi", "stream": True}), 400, code="backend_rejected_request", says=("context too long",))
    assert len(openai_backend.requests) == 1  # only the last request reached a backend


def test_a_backend_failure_after_the_stream_began_is_response_failed(api, openai_backend):
    from tests.backends import drops_mid_stream

    openai_backend.respond_with(drops_mid_stream("partial"))
    response = create(api, {"model": "gpt-stream", "input": "hi", "stream": True})
    assert response.status_code == 200
    datas = check_framing(parse_events(response.get_data()))
    assert "".join(d["delta"] for d in datas if d["type"] == "response.output_text.delta") == "partial"
    error = datas[-1]["response"]["error"]
    assert datas[-1]["type"] == "response.failed" and error["code"] == "backend_connection_dropped" and "Backend 'openai'" in error["message"]


# --- stored responses -----------------------------------------------------------------------------------


def test_previous_response_id_continues_the_conversation(api, openai_backend):
    openai_backend.respond_with(answers("Seoul is the capital."))
    first = create(api, {"model": "gpt-stream", "instructions": "Be brief.", "input": "capital of Korea?"}).get_json()
    assert first["store"] is True
    openai_backend.respond_with(answers("About 9.4 million."))
    second = create(api, {"model": "gpt-stream", "input": "population?", "previous_response_id": first["id"], "stream": True})
    assert openai_backend.last.body["messages"] == [
        {"role": "user", "content": "capital of Korea?"},  # the first request's instructions are not carried over
        {"role": "assistant", "content": "Seoul is the capital."},
        {"role": "user", "content": "population?"},
    ]
    final = check_framing(parse_events(second.get_data()))[-1]["response"]
    assert final["previous_response_id"] == first["id"]
    openai_backend.respond_with(answers("ok"))
    create(api, {"model": "gpt-stream", "input": "and Busan?", "previous_response_id": final["id"]})
    assert [m["content"] for m in openai_backend.last.body["messages"]] == [
        "capital of Korea?", "Seoul is the capital.", "population?", "About 9.4 million.", "and Busan?"]


def test_a_function_call_round_trip_through_previous_response_id(api, openai_backend):
    openai_backend.respond_with(tool_round_trip("call_7", "weather", '{"city": "Seoul"}', lambda result: f"It is {result}."))
    first = create(api, {"model": "gpt-stream", "input": "weather?", "tools": [{"type": "function", "name": "weather"}]}).get_json()
    call = first["output"][0]
    second = create(api, {"model": "gpt-stream", "previous_response_id": first["id"], "tools": [{"type": "function", "name": "weather"}],
                          "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}]}).get_json()
    assert openai_backend.last.body["messages"][1:] == [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_7", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Seoul"}'}}]},
        {"role": "tool", "tool_call_id": "call_7", "content": "sunny"},
    ]
    assert second["output"][0]["content"][0]["text"] == "It is sunny."


def test_get_and_delete_a_stored_response(api, openai_backend):
    openai_backend.respond_with(answers("stored"))
    created = create(api, {"model": "gpt-stream", "input": "hi"}).get_json()
    got = api.get(f"/v1/responses/{created['id']}", headers=KEY)
    assert got.status_code == 200 and got.get_json() == created
    deleted = api.delete(f"/v1/responses/{created['id']}", headers=KEY)
    assert deleted.get_json() == {"id": created["id"], "object": "response.deleted", "deleted": True}
    assert_error(api.get(f"/v1/responses/{created['id']}", headers=KEY), 404, code="response_not_found")
    assert_error(api.delete(f"/v1/responses/{created['id']}", headers=KEY), 404)
    assert_error(create(api, {"model": "gpt-stream", "input": "x", "previous_response_id": created["id"]}), 400,
                 param="previous_response_id", code="previous_response_not_found")


def test_a_stored_response_belongs_to_its_key_and_user(api, openai_backend):
    openai_backend.respond_with(answers("mine"))
    kim = {**KEY, "X-OpenWebUI-User-Id": "kim"}
    created = create(api, {"model": "gpt-stream", "input": "hi"}, headers=kim).get_json()
    others = [
        {"Authorization": f"Bearer {OTHER_KEY}", "X-OpenWebUI-User-Id": "kim"},  # another key, the same user id
        {**KEY, "X-OpenWebUI-User-Id": "lee"},  # the same key, another user
        KEY,  # the same key, no user
    ]
    for headers in others:
        assert_error(api.get(f"/v1/responses/{created['id']}", headers=headers), 404)
        assert_error(api.delete(f"/v1/responses/{created['id']}", headers=headers), 404)
        assert_error(create(api, {"model": "gpt-stream", "input": "x", "previous_response_id": created["id"]}, headers=headers), 400,
                     code="previous_response_not_found")
    assert api.get(f"/v1/responses/{created['id']}", headers=kim).status_code == 200  # still there for its owner


def test_store_false_stores_nothing(api, openai_backend):
    openai_backend.respond_with(answers("not kept"))
    for stream in (False, True):
        response = create(api, {"model": "gpt-stream", "input": "hi", "store": False, "stream": stream})
        final = response.get_json() if not stream else check_framing(parse_events(response.get_data()))[-1]["response"]
        assert final["store"] is False
        assert_error(api.get(f"/v1/responses/{final['id']}", headers=KEY), 404)


def test_item_references_name_stored_items(api, openai_backend):
    openai_backend.respond_with(answers("Seoul."))
    first = create(api, {"model": "gpt-stream", "input": [{"type": "message", "id": "msg_q1", "role": "user", "content": "capital?"}]}).get_json()
    openai_backend.respond_with(answers("ok"))
    create(api, {"model": "gpt-stream", "input": [{"type": "item_reference", "id": "msg_q1"}, {"type": "item_reference", "id": first["output"][0]["id"]},
                                                 {"role": "user", "content": "sure?"}]})
    assert [m["content"] for m in openai_backend.last.body["messages"]] == ["capital?", "Seoul.", "sure?"]
    assert_error(create(api, {"model": "gpt-stream", "input": [{"role": "user", "content": "a"}, {"type": "item_reference", "id": "msg_nope"}]}),
                 400, param="input.1.id", code="item_not_found")
    assert_error(create(api, {"model": "gpt-stream", "input": [{"type": "item_reference", "id": "msg_q1"}]},
                        headers={"Authorization": f"Bearer {OTHER_KEY}"}), 400, code="item_not_found")


def test_a_response_store_of_zero_seconds_stores_nothing(openai_backend, corp_backend, tmp_path):
    client = build_app(openai_backend, corp_backend, tmp_path / "data", response_store_seconds=0).test_client()
    openai_backend.respond_with(answers("hi"))
    created = create(client, {"model": "gpt-stream", "input": "hi"}).get_json()
    assert created["store"] is False
    assert_error(client.get(f"/v1/responses/{created['id']}", headers=KEY), 404)
    assert_error(create(client, {"model": "gpt-stream", "input": "x", "previous_response_id": created["id"]}), 400,
                 says=("response_store_seconds = 0",))
    assert not (tmp_path / "data" / "responses.sqlite3").exists()  # no response is ever written (the usage ledger shares data_dir)


def test_data_dir_is_made_for_the_service_alone(openai_backend, corp_backend, tmp_path):
    client = build_app(openai_backend, corp_backend, tmp_path / "state" / "llm-gateway").test_client()
    openai_backend.respond_with(answers("hi"))
    create(client, {"model": "gpt-stream", "input": "hi"})
    directory = tmp_path / "state" / "llm-gateway"
    assert directory.stat().st_mode & 0o777 == 0o700
    assert (directory / "responses.sqlite3").stat().st_mode & 0o777 == 0o600


def test_an_unusable_data_dir_is_a_503_for_lookups_and_no_failure_for_answers(openai_backend, corp_backend, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    client = build_app(openai_backend, corp_backend, tmp_path / "file" / "data").test_client()
    openai_backend.respond_with(answers("still answered"))
    created = create(client, {"model": "gpt-stream", "input": "hi"})
    assert created.status_code == 200 and created.get_json()["output"][0]["content"][0]["text"] == "still answered"
    assert_error(client.get(f"/v1/responses/{created.get_json()['id']}", headers=KEY), 503, code="response_store_unavailable")


# --- generated bodies: never a 5xx, always the error shape --------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402 - the property test's own imports
from hypothesis import strategies as st  # noqa: E402

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=12),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=10)
_parts = st.lists(st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["input_text", "output_text", "refusal", "input_image", "input_file", ""])},
                          optional={"text": _json, "refusal": _json, "image_url": _json, "file_id": _json, "detail": _json}),
    _json), max_size=3)
_items = st.one_of(
    st.fixed_dictionaries({}, optional={
        "type": st.one_of(st.sampled_from(["message", "function_call", "function_call_output", "custom_tool_call", "custom_tool_call_output",
                                           "reasoning", "item_reference", "web_search_call"]), _json),
        "role": st.one_of(st.sampled_from(["user", "assistant", "system", "developer"]), _json),
        "content": st.one_of(st.text(max_size=20), _parts, _json),
        "call_id": _json, "name": _json, "arguments": _json, "namespace": _json, "input": _json,
        "output": st.one_of(st.text(max_size=20), _parts, _json), "id": _json,
    }),
    _json,
)
_tools = st.lists(st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["function", "custom", "namespace", "web_search", "mcp"])},
                          optional={"name": _json, "parameters": _json, "strict": _json, "format": _json, "description": _json,
                                    "tools": st.lists(st.fixed_dictionaries({"type": st.sampled_from(["function", "custom", "x"])},
                                                                            optional={"name": _json}), max_size=2)}),
    _json), max_size=3)
_bodies = st.fixed_dictionaries({}, optional={
    "model": st.one_of(st.sampled_from(["gpt-stream", "gauss", "bge-m3"]), _json),
    "input": st.one_of(st.text(max_size=30), st.lists(_items, max_size=4), _json),
    "instructions": _json, "tools": st.one_of(_tools, _json), "tool_choice": _json, "parallel_tool_calls": _json,
    "max_output_tokens": _json, "temperature": _json, "text": st.one_of(st.fixed_dictionaries({"format": _json}), _json),
    "reasoning": _json, "stream": st.one_of(st.booleans(), _json), "store": _json, "previous_response_id": _json, "background": _json,
    "x_new": _json,
})


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_bodies)
def test_generated_bodies_never_get_a_5xx(responses_app, body):
    response = create(responses_app.test_client(), body)
    assert response.status_code < 500, (body, response.get_data(as_text=True))
    if response.status_code >= 400:
        assert set(response.get_json()["error"]) == {"message", "type", "param", "code"}
