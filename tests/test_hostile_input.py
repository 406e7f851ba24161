"""Generated bodies against the real server: never a 5xx, always OpenAI's error shape.

How many is the hypothesis profile's choice (tests/hypothesis_profile.py): 200 by default, 2,000 with
`HYPOTHESIS_PROFILE=full`.
"""

import json

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import hypothesis_profile  # noqa: F401 - loaded before the @settings below copies it

BAD_NUMBER_KEY = "x_bad_number"  # json.dumps escapes quotes in strings: only a key can look like this
MODELS = ["gpt-stream", "corp-plain", "openai-nostream", "Gauss2-37b-instruct-v1.0"]

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)

content_parts = st.lists(
    st.one_of(
        st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=40)}),
        st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.fixed_dictionaries({"url": st.text(max_size=40)})}),
        st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "input_audio", ""])}),
        st.dictionaries(st.sampled_from(["type", "text", "image_url"]), json_values, max_size=3),
        json_values,
    ),
    max_size=4,
)
contents = st.one_of(st.text(max_size=200), st.none(), content_parts, json_values, st.integers(100_000, 3_000_000).map(lambda n: "x" * n))
messages = st.fixed_dictionaries(
    {"role": st.one_of(st.sampled_from(["system", "user", "assistant", "tool", "developer"]), json_values)},
    optional={
        "content": contents,
        "tool_calls": st.one_of(json_values, st.lists(st.fixed_dictionaries({"id": st.text(max_size=5), "type": st.just("function"),
                                                                             "function": st.fixed_dictionaries({"name": st.text(max_size=5), "arguments": st.text(max_size=20)})}), max_size=2)),
        "tool_call_id": st.one_of(st.text(max_size=8), json_values),
        "name": json_values,
    },
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(st.sampled_from(MODELS), json_values),
        "messages": st.one_of(st.lists(messages, max_size=5), json_values),
        "stream": st.one_of(st.booleans(), json_values),
        "stream_options": st.one_of(st.fixed_dictionaries({"include_usage": st.booleans()}), json_values),
        "temperature": json_values,
        "max_tokens": json_values,
        "stop": json_values,
        "tools": st.one_of(st.lists(json_values, max_size=3), json_values),
        "user": json_values,
        "x_unknown": json_values,
    },
)


def deep(n: int, open_: str, close: str) -> bytes:
    return (open_ * n + close * n).encode()


raw_bodies = st.one_of(
    bodies.map(lambda b: json.dumps(b).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=300),  # invalid UTF-8, truncated JSON, garbage
    st.integers(1, 200_000).map(lambda n: deep(n, "[", "]")),
    st.integers(1, 5_000).map(lambda n: b'{"model":"corp-plain","messages":[{"role":"user","content":"x"}],"x":' + deep(n, "[", "]") + b"}"),
    st.text(max_size=100).map(lambda t: json.dumps({"model": "corp-plain", "messages": [{"role": "user", "content": t}]}).encode("utf-8", "surrogatepass")),
    # numbers JSON does not have, anywhere in a body (json.dumps writes NaN and Infinity bare)
    bodies.flatmap(lambda b: st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e400"]).map(
        lambda number: json.dumps({**b, BAD_NUMBER_KEY: 0}).replace(f'"{BAD_NUMBER_KEY}": 0', f'"{BAD_NUMBER_KEY}": {number}').encode())),
    # huge lists whose first item is bad, and user values too long for a header
    st.integers(1000, 300_000).map(lambda n: json.dumps({"model": "corp-plain", "messages": [1] * n}).encode()),
    st.integers(1025, 200_000).map(lambda n: json.dumps({"model": "corp-plain", "messages": [{"role": "user", "content": "x"}], "user": "u" * n}).encode()),
)


def check_refused_number(raw: bytes, response) -> None:
    """A body with a number JSON does not have is a 400, whatever else it holds."""
    if f'"{BAD_NUMBER_KEY}": '.encode() in raw:
        assert response.status_code == 400, response.text[:300]


@pytest.fixture(scope="module")
def session():
    with requests.Session() as s:
        yield s


def check_answer(response):
    assert response.status_code < 500, response.text[:500]
    if response.status_code >= 400:
        assert response.headers["Content-Type"] == "application/json"
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and isinstance(error["message"], str)
    elif response.headers["Content-Type"].startswith("text/event-stream"):
        text = response.content.decode("utf-8")
        assert text.endswith("data: [DONE]\n\n")
    else:
        assert response.json()["object"] == "chat.completion"


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(raw=raw_bodies)
def test_generated_bodies_never_break_the_gateway(gateway, session, raw):
    response = session.post(gateway.url + "/v1/chat/completions", data=raw, headers={"Content-Type": "application/json"}, timeout=30)
    check_answer(response)
    check_refused_number(raw, response)


def test_worker_still_answers_afterwards(gateway, client):
    assert requests.get(gateway.url + "/healthz", timeout=5).status_code == 200
    answer = client.chat.completions.create(model="corp-plain", messages=[{"role": "user", "content": "still there?"}])
    assert answer.choices[0].message.content == "echo 1: still there?"
