"""The streaming translator (gateway/responses/events.py) fed with real chunk sequences: what relayed
backends send, and the chunks a non-streaming backend's answer is built into (chat/chunks.py).
Every stream is also replayed through the openai SDK's own stream state, whose checks must pass."""

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from gateway.chat.answers import complete_envelope
from gateway.chat.chunks import completion_chunks
from gateway.errors import BackendDropped, BackendInvalidAnswer, ShuttingDown
from gateway.responses.events import ResponseEvents
from gateway.responses.from_chat import response_shell
from gateway.responses.request_schema import validate_responses_request
from gateway.responses.to_chat import ToolMap, chat_request, input_items
from tests.backends import chunk_json
from tests.responses_helpers import check_framing, parse_events, sdk_final_response, text_chunks, tool_call_chunks, usage_chunk

CODEX = Path(__file__).parent / "fixtures" / "codex"


def translate(chunks, tools=None, end=True, request=None, on_finished=None, one_by_one=True):
    request = {"model": "gauss", "input": "hi", **(request or {})}
    events = ResponseEvents(response_shell(request, stored=False), tools or ToolMap(), on_finished=on_finished)
    if one_by_one:
        data = b"".join(events.encode([chunk]) for chunk in chunks)
    else:
        data = events.encode(chunks)
    if end:
        data += events.end()
    return data, events


def stream_of(chunks, **kwargs):
    data, _ = translate(chunks, **kwargs)
    events = parse_events(data)
    return check_framing(events), events


def types(datas) -> list:
    return [d["type"] for d in datas]


def test_a_relayed_text_stream():
    datas, events = stream_of(text_chunks("Hello from the backend") + [usage_chunk(7, 4)])
    assert types(datas) == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed",
    ]
    assert "".join(d["delta"] for d in datas if d["type"] == "response.output_text.delta") == "Hello from the backend"
    final = datas[-1]["response"]
    assert final["status"] == "completed" and final["model"] == "gauss" and final["id"] == datas[0]["response"]["id"]
    assert final["output"][0]["content"][0]["text"] == "Hello from the backend"
    assert final["usage"]["input_tokens"] == 7 and final["usage"]["output_tokens"] == 4 and final["usage"]["total_tokens"] == 11
    assert sdk_final_response(events).output_text == "Hello from the backend"


def test_it_sends_what_codex_accepted():
    """The shape of R1-text.response.sse, which Codex 0.169 printed: the same events and item keys."""
    accepted = parse_events((CODEX / "R1-text.response.sse").read_bytes())
    datas, _ = stream_of([chunk_json(delta={"role": "assistant", "content": "Hello from stub."}).encode(),
                          chunk_json(delta={}, finish_reason="stop").encode(), usage_chunk(10, 4)])
    ours = [d for d in datas if d["type"] != "response.in_progress"]
    assert types(ours) == [data["type"] for _, data in accepted]
    for mine, theirs in zip(ours, (data for _, data in accepted)):
        assert set(theirs) <= set(mine), (theirs["type"], set(theirs) - set(mine))
        if "item" in theirs:
            assert set(theirs["item"]) <= set(mine["item"])


def test_reasoning_then_text():
    chunks = [chunk_json(delta={"role": "assistant", "content": ""}), chunk_json(delta={"reasoning_content": "Six "}),
              chunk_json(delta={"reasoning_content": "times seven."}), chunk_json(delta={"content": "42"}),
              chunk_json(delta={}, finish_reason="stop")]
    datas, events = stream_of([c.encode() for c in chunks])
    assert types(datas)[2:] == [
        "response.output_item.added", "response.content_part.added", "response.reasoning_text.delta", "response.reasoning_text.delta",
        "response.reasoning_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed",
    ]
    reasoning, message = datas[-1]["response"]["output"]
    assert reasoning["type"] == "reasoning" and reasoning["content"] == [{"type": "reasoning_text", "text": "Six times seven."}]
    assert datas[2]["item"]["id"] == reasoning["id"] and datas[2]["output_index"] == 0
    assert message["content"][0]["text"] == "42" and datas[9]["output_index"] == 1
    assert sdk_final_response(events).output_text == "42"


def test_the_reasoning_field_name_some_servers_use():
    datas, _ = stream_of([chunk_json(delta={"reasoning": "hmm"}).encode(), *text_chunks("ok", role=False)])
    assert datas[-1]["response"]["output"][0]["content"][0]["text"] == "hmm"


def test_one_tool_call_with_its_arguments_in_pieces():
    arguments = '{"cmd": "echo tool-ran-ok"}'
    datas, events = stream_of(tool_call_chunks([("call_1", "exec_command", arguments)], pieces=4))
    assert types(datas) == ["response.created", "response.in_progress", "response.output_item.added"] + \
        ["response.function_call_arguments.delta"] * 4 + \
        ["response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    added = datas[2]["item"]
    assert (added["type"], added["name"], added["call_id"], added["arguments"], added["status"]) == ("function_call", "exec_command", "call_1", "", "in_progress")
    assert "".join(d["delta"] for d in datas if d["type"].endswith("arguments.delta")) == arguments
    assert datas[-3]["arguments"] == arguments and datas[-3]["item_id"] == added["id"]
    done = datas[-2]["item"]
    assert done == {**added, "arguments": arguments, "status": "completed"}
    assert datas[-1]["response"]["output"] == [done] and datas[-1]["response"]["status"] == "completed"
    [call] = sdk_final_response(events).output
    assert call.arguments == arguments and call.name == "exec_command"


def test_several_tool_calls_each_get_their_item():
    calls = [("call_a", "weather", '{"city": "Seoul"}'), ("call_b", "weather", '{"city": "Busan"}'), ("call_c", "time", "{}")]
    datas, events = stream_of(tool_call_chunks(calls, pieces=2))
    added = [d for d in datas if d["type"] == "response.output_item.added"]
    assert [(d["output_index"], d["item"]["call_id"]) for d in added] == [(0, "call_a"), (1, "call_b"), (2, "call_c")]
    for index, (call_id, _, arguments) in enumerate(calls):
        pieces = [d["delta"] for d in datas if d["type"] == "response.function_call_arguments.delta" and d["output_index"] == index]
        assert "".join(pieces) == arguments
    assert [item["arguments"] for item in datas[-1]["response"]["output"]] == [arguments for _, _, arguments in calls]
    assert len(sdk_final_response(events).output) == 3


def test_a_namespaced_call_comes_back_with_its_namespace():
    tools = ToolMap()
    tools.add("function", "close_agent", "multi_agent_v1")
    datas, _ = stream_of(tool_call_chunks([("call_1", "multi_agent_v1__close_agent", '{"target": "agent-xyz"}')]), tools=tools)
    for item in (datas[2]["item"], datas[-2]["item"], datas[-1]["response"]["output"][0]):
        assert item["name"] == "close_agent" and item["namespace"] == "multi_agent_v1"
    assert datas[-3]["name"] == "close_agent"


def test_a_custom_tool_call_streams_its_input():
    tools = ToolMap()
    tools.add("custom", "apply_patch")
    datas, events = stream_of(tool_call_chunks([("call_1", "apply_patch", json.dumps({"input": "*** Begin Patch\n*** End Patch"}))]), tools=tools)
    assert types(datas)[2:] == ["response.output_item.added", "response.custom_tool_call_input.delta", "response.custom_tool_call_input.done",
                                "response.output_item.done", "response.completed"]
    item = datas[-2]["item"]
    assert item["type"] == "custom_tool_call" and item["id"].startswith("ctc_") and item["input"] == "*** Begin Patch\n*** End Patch"
    assert sdk_final_response(events).output[0].input == item["input"]


def test_arguments_that_arrive_before_the_name_go_out_with_the_item():
    chunks = [chunk_json(delta={"tool_calls": [{"index": 0, "id": "call_1", "function": {"arguments": '{"a":'}}]}),
              chunk_json(delta={"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": " 1}"}}]}),
              chunk_json(delta={}, finish_reason="tool_calls")]
    datas, _ = stream_of([c.encode() for c in chunks])
    assert types(datas)[2:4] == ["response.output_item.added", "response.function_call_arguments.delta"]
    assert datas[-2]["item"]["arguments"] == '{"a": 1}' and datas[-2]["item"]["name"] == "f"


def test_text_after_a_tool_call_follows_the_calls_as_one_item_and_whitespace_is_dropped():
    base = tool_call_chunks([("call_1", "f", "{}")])
    datas, _ = stream_of(base[:-1] + [chunk_json(delta={"content": "\n"}).encode(), base[-1]])
    assert [item["type"] for item in datas[-1]["response"]["output"]] == ["function_call"]
    datas, events = stream_of(base[:-1] + [chunk_json(delta={"content": "Running it."}).encode(), base[-1]])
    assert [item["type"] for item in datas[-1]["response"]["output"]] == ["function_call", "message"]
    assert sdk_final_response(events).output_text == "Running it."


def test_text_then_a_tool_call():
    chunks = text_chunks("Let me check.")[:-1] + tool_call_chunks([("call_1", "f", "{}")])[1:]
    datas, events = stream_of(chunks)
    assert [item["type"] for item in datas[-1]["response"]["output"]] == ["message", "function_call"]
    first_call_event = types(datas).index("response.function_call_arguments.done")
    assert types(datas).index("response.output_item.done") < first_call_event  # the message closed before the call opened
    assert sdk_final_response(events).output_text == "Let me check."


@pytest.mark.parametrize("finish, status, reason", [("length", "incomplete", "max_output_tokens"), ("content_filter", "incomplete", "content_filter")])
def test_a_cut_answer_ends_with_response_incomplete(finish, status, reason):
    datas, _ = stream_of(text_chunks("cut sh", finish=finish))
    assert datas[-1]["type"] == "response.incomplete"
    assert datas[-1]["response"]["status"] == status and datas[-1]["response"]["incomplete_details"] == {"reason": reason}


def test_the_chunks_of_a_non_streaming_backends_answer():
    completion = complete_envelope({
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Checking.", "reasoning_content": "need weather",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Seoul"}'}},
                           {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": {"city": "Busan"}}}]}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14},
    }, "upstream")
    built = list(completion_chunks(completion, include_usage=True))
    for one_by_one in (True, False):  # read in place, a whole built answer arrives as one list
        data, _ = translate(built, one_by_one=one_by_one)
        events = parse_events(data)
        datas = check_framing(events)
        output = datas[-1]["response"]["output"]
        assert [item["type"] for item in output] == ["reasoning", "message", "function_call", "function_call"]
        assert [item["arguments"] for item in output[2:]] == ['{"city":"Seoul"}', '{"city": "Busan"}']
        assert datas[-1]["response"]["usage"]["total_tokens"] == 14
        assert sdk_final_response(events).output_text == "Checking."


def test_structured_output_parses_with_the_sdk():
    class City(BaseModel):
        city: str

    _, events = stream_of(text_chunks('{"city": "Seoul"}'))
    assert sdk_final_response(events, text_format=City).output_parsed == City(city="Seoul")


# --- the end, and failures --------------------------------------------------------------------------


def test_the_final_response_is_handed_over_before_the_last_event_is_written():
    finished = []
    data, events = translate(text_chunks("hi"), end=False, on_finished=finished.append)
    assert finished == []
    last = events.end()
    assert finished[0]["status"] == "completed" and finished[0]["output"][0]["content"][0]["text"] == "hi"
    assert json.loads(last.split(b"data: ")[-1])["response"] == finished[0]


def test_a_failure_mid_stream_is_response_failed_with_the_chat_errors_code_and_message():
    data, events = translate(text_chunks("partial answer")[:3], end=False)
    data += events.error(BackendDropped("openai", "closed the connection before the answer was complete (secret-ticket)"), secrets={"secret-ticket"})
    datas = check_framing(parse_events(data))
    failed = datas[-1]
    assert failed["type"] == "response.failed" and failed["response"]["status"] == "failed"
    assert failed["response"]["error"] == {"code": "backend_connection_dropped",
                                           "message": "Backend 'openai' closed the connection before the answer was complete ([redacted])"}
    assert failed["response"]["output"][0]["status"] == "incomplete"  # what had come, marked unfinished
    assert b"[DONE]" not in data


def test_a_failure_before_any_chunk_still_opens_the_response():
    events = ResponseEvents(response_shell({"model": "gauss"}, stored=False), ToolMap())
    datas = check_framing(parse_events(events.error(ShuttingDown("The gateway is shutting down; the answer was cut short. Please retry."))))
    assert types(datas) == ["response.created", "response.in_progress", "response.failed"]
    assert datas[-1]["response"]["error"]["code"] == "gateway_shutting_down"


def test_a_chunk_that_is_not_json_is_the_backends_invalid_answer():
    events = ResponseEvents(response_shell({"model": "gauss"}, stored=False), ToolMap(), backend_name=lambda: "corp")
    with pytest.raises(BackendInvalidAnswer) as raised:
        events.encode([b"{not json"])
    assert raised.value.message.startswith("Backend 'corp'")


def test_a_whole_codex_turn_maps_and_translates():
    request = validate_responses_request(json.loads((CODEX / "02-tool-call.request.json").read_text())["body"])
    bridge = chat_request(request, input_items(request))
    events = ResponseEvents(response_shell(request, stored=False), bridge.tools)
    data = events.encode(tool_call_chunks([("call_9", "exec_command", '{"cmd": "echo tool-ran-ok"}')])) + events.end()
    datas = check_framing(parse_events(data))
    item = datas[-1]["response"]["output"][0]
    assert (item["type"], item["name"], item["arguments"]) == ("function_call", "exec_command", '{"cmd": "echo tool-ran-ok"}')
    assert "namespace" not in item
