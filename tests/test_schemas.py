"""The Chat Completions request schema: what it accepts and how it names what it rejects."""

import pytest

from gateway.errors import InvalidRequest
from gateway.chat.request_schema import validate_chat_request
from tests.conftest import FIXTURES, fixture_body

USER = {"role": "user", "content": "hi"}


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("0*.json")))
def test_every_open_webui_fixture_is_accepted(name):
    body = fixture_body(name)
    assert validate_chat_request(body) is body


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "system", "content": "s"}, USER, {"role": "assistant", "content": "a"}, USER],
        [{"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": "data:,"}}]}],
        [USER, {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
         {"role": "tool", "tool_call_id": "c1", "content": "42"}],
        [USER, {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}],
        [{"role": "developer", "content": "d"}, {**USER, "name": "kim", "x_unknown": 1}],
    ],
)
def test_valid_conversations(messages):
    validate_chat_request({"model": "m", "messages": messages, "x_vendor_field": {"kept": True}})


@pytest.mark.parametrize(
    "body, param",
    [
        ({"messages": [USER]}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": "hi"}, "messages"),
        ({"model": "m", "messages": [USER, USER, {"role": "robot", "content": "x"}]}, "messages.2.role"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
        ({"model": "m", "messages": [{"role": "user", "content": None}]}, "messages.0.content"),
        ({"model": "m", "messages": [{"role": "user"}]}, "messages.0.content"),
        ({"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages.0.content.0.text"),
        ({"model": "m", "messages": [{"role": "user", "content": [{"text": "x"}]}]}, "messages.0.content.0.type"),
        ({"model": "m", "messages": [{"role": "tool", "content": "r"}]}, "messages.0.tool_call_id"),
        ({"model": "m", "messages": [USER], "stream": "true"}, "stream"),
        ({"model": "m", "messages": [USER], "temperature": "0.5"}, "temperature"),
        ({"model": "m", "messages": [USER], "max_tokens": 1.5}, "max_tokens"),
        ({"model": "m", "messages": [USER], "stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
        ({"model": 7, "messages": [USER]}, "model"),
    ],
)
def test_invalid_bodies_name_the_field(body, param):
    with pytest.raises(InvalidRequest) as caught:
        validate_chat_request(body)
    assert caught.value.param == param
    assert param in caught.value.message


@pytest.mark.parametrize("body", [[], "text", 3, None])
def test_a_body_that_is_not_an_object(body):
    with pytest.raises(InvalidRequest) as caught:
        validate_chat_request(body)
    assert caught.value.status == 400 and caught.value.param is None
