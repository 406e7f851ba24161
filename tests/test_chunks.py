"""gateway/chat/chunks.py on its own: which relayed chunks show the user nothing yet (failover may
still pass a request on after them), and every chunk naming the model the client asked for."""

import json

import pytest

from gateway.chat.chunks import ModelRename, shows_nothing, split_usage


@pytest.mark.parametrize("chunk", [
    {"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
    {"choices": [{"delta": {"role": "assistant"}}]},
    {"choices": [{"delta": {"content": None, "reasoning_content": "", "tool_calls": []}}]},
    {"choices": [], "usage": None},
])
def test_an_opening_chunk_shows_nothing(chunk):
    assert shows_nothing(json.dumps(chunk).encode())


@pytest.mark.parametrize("payload", [
    json.dumps({"choices": [{"delta": {"role": "assistant", "content": "Hi"}}]}),
    json.dumps({"choices": [{"delta": {"reasoning_content": "Let me think"}}]}),
    json.dumps({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"name": "f"}}]}}]}),
    json.dumps({"choices": [{"delta": {}, "finish_reason": "stop"}]}),  # an empty answer ends here
    json.dumps({"choices": [], "usage": {"total_tokens": 3}}),
    json.dumps({"choices": [{"delta": {"role": "assistant", "content": ""}}], "pad": "x" * 2000}),  # too long to be an opening
    json.dumps({"choices": [{"delta": "text"}]}),
    json.dumps({"no": "choices"}),
    "[1, 2]",
    "not json",
])
def test_anything_else_shows_something(payload):
    assert not shows_nothing(payload.encode())


def test_every_chunk_names_the_model_asked_for_whether_the_backend_named_one_or_not():
    rename = ModelRename("corp/gauss")
    assert json.loads(rename(b'{"id":"c","model":"gauss-37b","choices":[]}'))["model"] == "corp/gauss"
    assert rename(b'{"id":"c","choices":[]}') == b'{"model":"corp/gauss","id":"c","choices":[]}'
    assert rename(b'{"model":"gauss-37b","choices":[]}') == b'{"model":"corp/gauss","choices":[]}'
    assert rename(b" {} ") == b'{"model":"corp/gauss"}'
    assert rename(b"[1]") == b"[1]" and rename(b'{"cut') == b'{"cut'  # not an object: passed on as it is
    assert ModelRename("m")(b'{"model":null,"choices":[]}') == b'{"model":"m","choices":[]}'  # one model field, never two


def test_usage_a_client_did_not_ask_for_is_taken_out_of_what_it_is_sent():
    note, sent = split_usage(b'{"id":"c","choices":[],"usage":{"total_tokens":9}}')
    assert note.usage == {"total_tokens": 9} and sent is None  # include_usage's own chunk: not sent at all
    note, sent = split_usage(b'{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"total_tokens":9}}')
    assert note.usage == {"total_tokens": 9} and json.loads(sent) == {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    plain = b'{"choices":[{"delta":{"content":"\\"usage\\": {"}}]}'  # the words in the content, not a field
    assert split_usage(plain) == (None, plain)
