"""The Responses API bridge's translations, without a server: request → chat request (to_chat.py),
chat answer → Response (from_chat.py), and the request schema's 400s."""

import json
from pathlib import Path

import pytest

from gateway.chat.answers import complete_envelope
from gateway.errors import InvalidRequest
from gateway.responses.from_chat import response_from_completion, response_shell, response_usage
from gateway.responses.request_schema import ignored_fields, unknown_fields, validate_responses_request
from gateway.responses.to_chat import ToolMap, chat_request, input_items

CODEX = Path(__file__).parent / "fixtures" / "codex"


def codex_body(name: str) -> dict:
    return json.loads((CODEX / name).read_text(encoding="utf-8"))["body"]


def bridge(request: dict, history=()):
    request = validate_responses_request({"model": "m", **request})
    return chat_request(request, [*history, *input_items(request)])


def chat_of(request: dict) -> dict:
    return bridge(request).chat


# --- input → messages ------------------------------------------------------------------------------


def test_a_string_input_is_one_user_message():
    assert chat_of({"input": "hello"}) == {"model": "m", "messages": [{"role": "user", "content": "hello"}], "stream": False}


def test_instructions_come_first_and_developer_turns_become_one_leading_system_message():
    chat = chat_of({
        "instructions": "Be brief.",
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex."}]},
            {"role": "system", "content": "Answer in Korean."},
            {"role": "user", "content": "hi"},
            {"role": "developer", "content": "a later developer turn"},
        ],
    })
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief.\n\nYou are Codex.\n\nAnswer in Korean."},
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "a later developer turn"},  # developer → system, where it was
    ]


@pytest.mark.parametrize("part, chat_part", [
    ({"type": "input_text", "text": "a"}, {"type": "text", "text": "a"}),
    ({"type": "output_text", "text": "b", "annotations": []}, {"type": "text", "text": "b"}),
    ({"type": "input_image", "image_url": "data:image/png;base64,AAA", "detail": "low"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA", "detail": "low"}}),
    ({"type": "refusal", "refusal": "no"}, {"type": "text", "text": "no"}),
])
def test_every_content_part_type_maps_to_a_chat_part(part, chat_part):
    chat = chat_of({"input": [{"role": "user", "content": [{"type": "input_text", "text": "look:"}, part]}]})
    assert chat["messages"][0]["content"] == [{"type": "text", "text": "look:"}, chat_part]


def test_one_text_part_is_sent_as_a_string_and_an_assistants_parts_as_one_answer():
    chat = chat_of({"input": [
        {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hel"}, {"type": "output_text", "text": "lo"}]},
    ]})
    assert chat["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello"}]


def test_function_calls_and_their_outputs_become_tool_calls_and_tool_messages():
    chat = chat_of({"input": [
        {"role": "user", "content": "weather in Seoul and Busan?"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "two calls"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": '{"city":"Seoul"}', "id": "fc_1", "status": "completed"},
        {"type": "function_call", "call_id": "c2", "name": "weather", "arguments": '{"city":"Busan"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "rain"}]},
    ]})
    assert chat["messages"][1:] == [
        {"role": "assistant", "content": "Checking.", "tool_calls": [  # the text and both calls: one turn
            {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Seoul"}'}},
            {"id": "c2", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Busan"}'}},
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rain"},
    ]  # the reasoning item is not sent


def test_custom_tool_calls_round_trip_through_a_one_string_function():
    b = bridge({
        "tools": [{"type": "custom", "name": "apply_patch", "description": "Edit files.", "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}}],
        "input": [
            {"role": "user", "content": "fix it"},
            {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": "*** Begin Patch"},
            {"type": "custom_tool_call_output", "call_id": "c1", "output": "done"},
        ],
    })
    function = b.chat["tools"][0]["function"]
    assert function["name"] == "apply_patch" and function["description"] == "Edit files."
    assert function["parameters"]["required"] == ["input"] and "start: /.+/" in function["parameters"]["properties"]["input"]["description"]
    assert b.chat["messages"][1]["tool_calls"][0]["function"] == {"name": "apply_patch", "arguments": '{"input": "*** Begin Patch"}'}
    assert b.chat["messages"][2] == {"role": "tool", "tool_call_id": "c1", "content": "done"}
    assert b.tools.origin("apply_patch") == ("custom", "apply_patch", None)


def test_a_tool_output_with_an_image_says_it_was_left_out():
    chat = chat_of({"input": [
        {"role": "user", "content": "look"},
        {"type": "function_call", "call_id": "c1", "name": "screenshot", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "here"}, {"type": "input_image", "image_url": "data:,x"}]},
    ]})
    assert chat["messages"][2]["content"] == [{"type": "text", "text": "here"}, {"type": "text", "text": "[image omitted: a tool's image output cannot be passed to this chat backend]"}]


def test_history_comes_before_the_new_input():
    history = [{"type": "message", "role": "user", "content": "first"}, {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "one"}]}]
    chat = bridge({"input": "second", "instructions": "Be brief."}, history).chat
    assert chat["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "first"},
                                {"role": "assistant", "content": "one"}, {"role": "user", "content": "second"}]


# --- tools and settings ----------------------------------------------------------------------------


def test_the_codex_request_maps_its_tools_flattening_the_namespace_and_dropping_web_search():
    b = bridge(codex_body("01-first-turn.request.json"))
    names = [tool["function"]["name"] for tool in b.chat["tools"]]
    assert names[:4] == ["exec_command", "write_stdin", "request_user_input", "view_image"]
    assert "multi_agent_v1__close_agent" in names and "multi_agent_v1__spawn_agent" in names
    assert b.dropped_tools == ["web_search"]
    assert b.tools.origin("multi_agent_v1__close_agent") == ("function", "close_agent", "multi_agent_v1")
    exec_command = next(t["function"] for t in b.chat["tools"] if t["function"]["name"] == "exec_command")
    assert exec_command["strict"] is False and exec_command["parameters"]["required"] == ["cmd"]
    assert b.chat["tool_choice"] == "auto" and b.chat["parallel_tool_calls"] is True
    assert b.chat["stream"] is True and b.chat["stream_options"] == {"include_usage": True}
    roles = [m["role"] for m in b.chat["messages"]]
    assert roles == ["system", "user", "user"]  # two developer messages: one leading system message
    for field in ("include", "prompt_cache_key", "client_metadata", "reasoning", "store", "input", "instructions"):
        assert field not in b.chat


def test_a_namespaced_call_in_codexs_next_request_maps_back_to_the_flattened_tool():
    chat = bridge(codex_body("04-namespaced-tool-result.request.json")).chat
    call = chat["messages"][-2]["tool_calls"][0]
    assert call["function"] == {"name": "multi_agent_v1__close_agent", "arguments": '{"target": "agent-xyz"}'}
    assert call["function"]["name"] in [tool["function"]["name"] for tool in chat["tools"]]
    assert chat["messages"][-1]["role"] == "tool" and chat["messages"][-1]["tool_call_id"] == call["id"]


@pytest.mark.parametrize("hosted", ["web_search", "web_search_preview", "file_search", "code_interpreter", "computer_use_preview",
                                    "mcp", "image_generation", "local_shell", "a_tool_from_next_year"])
def test_hosted_tools_are_dropped_and_named(hosted):
    b = bridge({"input": "hi", "tools": [{"type": hosted}, {"type": "function", "name": "f", "parameters": {"type": "object"}}],
                "tool_choice": {"type": hosted}})
    assert b.dropped_tools == [hosted]
    assert b.chat["tools"] == [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert "tool_choice" not in b.chat  # a hosted tool's choice goes with it


def test_only_hosted_tools_means_no_tools_at_all():
    chat = chat_of({"input": "hi", "tools": [{"type": "web_search"}], "tool_choice": "required", "parallel_tool_calls": False})
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & set(chat)


@pytest.mark.parametrize("choice, chat_choice", [
    ("none", "none"), ("required", "required"),
    ({"type": "function", "name": "f"}, {"type": "function", "function": {"name": "f"}}),
    ({"type": "function", "name": "close_agent", "namespace": "ns"}, {"type": "function", "function": {"name": "ns__close_agent"}}),
    ({"type": "custom", "name": "patch"}, {"type": "function", "function": {"name": "patch"}}),
])
def test_tool_choice_is_mapped(choice, chat_choice):
    tools = [{"type": "function", "name": "f"}, {"type": "custom", "name": "patch"},
             {"type": "namespace", "name": "ns", "description": "d", "tools": [{"type": "function", "name": "close_agent"}]}]
    assert chat_of({"input": "hi", "tools": tools, "tool_choice": choice})["tool_choice"] == chat_choice


def test_allowed_tools_keeps_only_those_tools():
    tools = [{"type": "function", "name": "a"}, {"type": "function", "name": "b"}]
    chat = chat_of({"input": "hi", "tools": tools, "tool_choice": {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "b"}]}})
    assert [t["function"]["name"] for t in chat["tools"]] == ["b"] and chat["tool_choice"] == "required"


def test_settings_are_mapped_and_fields_with_no_chat_meaning_are_not_sent():
    request = {
        "input": "hi", "max_output_tokens": 256, "temperature": 0.2, "top_p": 0.9, "user": "u-1",
        "reasoning": {"effort": "low", "summary": "auto"}, "text": {"format": {"type": "json_object"}, "verbosity": "low"},
        "metadata": {"a": "b"}, "service_tier": "auto", "truncation": "auto", "safety_identifier": "s", "include": ["x"],
        "store": True, "previous_response_id": None, "prompt_cache_key": "k", "brand_new_field": 1,
    }
    chat = chat_of(request)
    assert chat == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": False, "max_tokens": 256, "temperature": 0.2,
                    "top_p": 0.9, "user": "u-1", "reasoning_effort": "low", "response_format": {"type": "json_object"}}
    body = {"model": "m", **request}
    assert unknown_fields(body) == ["brand_new_field"]
    assert ignored_fields(body) == ["include", "metadata", "prompt_cache_key", "truncation", "service_tier", "safety_identifier",
                                    "reasoning.summary", "text.verbosity"]


def test_a_json_schema_text_format_becomes_a_response_format():
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}
    chat = chat_of({"input": "hi", "text": {"format": {"type": "json_schema", "name": "City", "schema": schema, "strict": True}}})
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {"name": "City", "schema": schema, "strict": True}}


# --- the schema's 400s ---------------------------------------------------------------------------------


@pytest.mark.parametrize("body, param, says", [
    ({"input": "hi"}, "model", "Missing data"),
    ({"model": "m", "input": 5}, "input", "string or a list"),
    ({"model": "m", "input": [{"role": "user", "content": "a"}, {"type": "web_search_call", "id": "ws_1"}]}, "input.1.type", "web_search_call"),
    ({"model": "m", "input": [{"content": "no role, no type"}]}, "input.0.type", "Missing data"),
    ({"model": "m", "input": [{"role": "robot", "content": "a"}]}, "input.0.role", "Must be one of"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "input.0.content.0.type", "input_audio"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]}, "input.0.content.0.file_id", "image_url"),
    ({"model": "m", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input.0.call_id", "Missing data"),
    ({"model": "m", "input": [{"type": "function_call_output", "call_id": "c"}]}, "input.0.output", "Missing data"),
    ({"model": "m", "input": [{"type": "item_reference"}]}, "input.0.id", "Missing data"),
    ({"model": "m", "input": "hi", "tools": [{"type": "function", "name": "a"}, {"type": "function", "name": "b"}, {"name": "c"}]}, "tools.2.type", "Missing data"),
    ({"model": "m", "input": "hi", "tools": [{"type": "function"}]}, "tools.0.name", "Missing data"),
    ({"model": "m", "input": "hi", "tools": [{"type": "namespace", "name": "ns", "tools": [{"type": "web_search"}]}]}, "tools.0.tools.0.type", "namespace holds"),
    ({"model": "m", "input": "hi", "tool_choice": "sometimes"}, "tool_choice", "Must be one of"),
    ({"model": "m", "input": "hi", "max_output_tokens": "5"}, "max_output_tokens", "integer"),
    ({"model": "m", "input": "hi", "stream": "true"}, "stream", "true or false"),
    ({"model": "m", "input": "hi", "text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema", "Missing data"),
    ({"model": "m", "input": "hi", "text": {"format": {"type": "yaml"}}}, "text.format.type", "Must be one of"),
    ({"model": "m", "input": "hi", "background": True}, "background", "Background responses are not supported"),
    ({"model": "m", "input": "hi", "conversation": "conv_1"}, "conversation", "previous_response_id"),
    ({"model": "m", "input": "hi", "prompt": {"id": "pmpt_1"}}, "prompt", "instructions"),
])
def test_a_malformed_request_is_a_400_naming_the_field(body, param, says):
    with pytest.raises(InvalidRequest) as raised:
        validate_responses_request(body)
    assert raised.value.param == param and says in raised.value.message, raised.value.message


def test_background_false_and_null_refusals_are_fine():
    validate_responses_request({"model": "m", "input": "hi", "background": False, "conversation": None, "prompt": None})


def test_two_tools_the_backend_would_know_by_one_name_are_a_400():
    tools = [{"type": "function", "name": "ns__close"}, {"type": "namespace", "name": "ns", "description": "d", "tools": [{"type": "function", "name": "close"}]}]
    with pytest.raises(InvalidRequest) as raised:
        bridge({"input": "hi", "tools": tools})
    assert raised.value.param == "tools.1.tools.0.name" and "ns__close" in raised.value.message


def test_an_empty_conversation_is_a_400():
    with pytest.raises(InvalidRequest) as raised:
        bridge({"input": [], "instructions": None})
    assert raised.value.param == "input"


def test_every_codex_fixture_request_is_valid():
    for path in sorted(CODEX.glob("0*.json")):
        validate_responses_request(codex_body(path.name))


# --- the answer → Response ----------------------------------------------------------------------------


def _completion(message: dict, finish_reason="stop", usage=None) -> dict:
    return complete_envelope({"choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish_reason}],
                              **({"usage": usage} if usage else {})}, "m")


def _answer(message, finish_reason="stop", usage=None, tools=None, request=None):
    shell = response_shell({"model": "gauss", "input": "hi", **(request or {})}, stored=True)
    return response_from_completion(_completion(message, finish_reason, usage), shell, tools or ToolMap())


def test_a_text_answer_is_a_completed_response_with_one_message():
    usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10, "prompt_tokens_details": {"cached_tokens": 2}}
    response = _answer({"content": "Hello"}, usage=usage, request={"temperature": 0.3, "instructions": "Be brief.", "max_output_tokens": 50})
    assert response["id"].startswith("resp_") and response["object"] == "response" and response["status"] == "completed"
    assert response["model"] == "gauss"  # the id the client asked for, never the backend's name
    [message] = response["output"]
    assert message["id"].startswith("msg_") and message["status"] == "completed" and message["role"] == "assistant"
    assert message["content"] == [{"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}]
    assert response["usage"] == {"input_tokens": 7, "input_tokens_details": {"cached_tokens": 2, "cache_write_tokens": 0}, "output_tokens": 3,
                                 "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 10}
    assert (response["temperature"], response["instructions"], response["max_output_tokens"], response["store"]) == (0.3, "Be brief.", 50, True)
    assert response["text"] == {"format": {"type": "text"}} and response["tool_choice"] == "auto" and response["error"] is None


def test_reasoning_content_becomes_a_reasoning_item_before_the_message():
    response = _answer({"content": "42", "reasoning_content": "6 times 7"})
    assert [item["type"] for item in response["output"]] == ["reasoning", "message"]
    reasoning = response["output"][0]
    assert reasoning["id"].startswith("rs_") and reasoning["content"] == [{"type": "reasoning_text", "text": "6 times 7"}] and reasoning["summary"] == []


def test_tool_calls_come_back_by_the_tools_own_name_with_namespace_or_as_custom_calls():
    b = bridge({"input": "hi", "tools": [
        {"type": "function", "name": "weather"}, {"type": "custom", "name": "apply_patch"},
        {"type": "namespace", "name": "multi_agent_v1", "description": "agents", "tools": [{"type": "function", "name": "close_agent"}]},
    ]})
    response = _answer({"content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Seoul"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "multi_agent_v1__close_agent", "arguments": {"target": "a1"}}},
        {"id": "call_3", "type": "function", "function": {"name": "apply_patch", "arguments": '{"input": "*** Begin Patch"}'}},
    ]}, finish_reason="tool_calls", tools=b.tools)
    weather, close, patch = response["output"]
    assert weather["id"].startswith("fc_") and {k: weather[k] for k in ("type", "call_id", "name", "arguments", "status")} == {
        "type": "function_call", "call_id": "call_1", "name": "weather", "arguments": '{"city":"Seoul"}', "status": "completed"}
    assert "namespace" not in weather
    assert (close["name"], close["namespace"], close["arguments"]) == ("close_agent", "multi_agent_v1", '{"target": "a1"}')
    assert patch["id"].startswith("ctc_") and patch["type"] == "custom_tool_call" and patch["input"] == "*** Begin Patch"
    assert response["status"] == "completed"
    from openai.types.responses import Response

    Response.model_validate(response)  # every item as the SDK's types define it


@pytest.mark.parametrize("finish_reason, status, reason", [
    ("stop", "completed", None), ("length", "incomplete", "max_output_tokens"), ("content_filter", "incomplete", "content_filter"),
])
def test_finish_reasons_set_the_status(finish_reason, status, reason):
    response = _answer({"content": "cut sh"}, finish_reason=finish_reason)
    assert response["status"] == status
    assert response["incomplete_details"] == ({"reason": reason} if reason else None)
    assert response["output"][0]["status"] == ("incomplete" if reason else "completed")


def test_no_usage_from_the_backend_is_no_usage_not_zero():
    assert _answer({"content": "hi"})["usage"] is None
    assert response_usage({"total_tokens": 5}) == {"input_tokens": 0, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0}, "output_tokens": 0,
                                                   "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 5}


def test_the_sdk_reads_the_response_and_its_output_text():
    from openai.types.responses import Response

    response = Response.model_validate(_answer({"content": "Hello", "reasoning_content": "think"}, usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}))
    assert response.output_text == "Hello" and response.usage.total_tokens == 2
