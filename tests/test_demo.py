"""With no config at all, the built-in demo model answers through the same pipeline."""

import pytest
import requests

from tests.gunicorn_server import GatewayServer
from tests.sdk import openai  # the SDK itself is imported at first use


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    server = GatewayServer(None, tmp_path_factory.mktemp("demo"))
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def test_demo_lists_its_model(demo):
    data = requests.get(demo.url + "/v1/models", timeout=10).json()
    assert [m["id"] for m in data["data"]] == ["demo-echo"]


@pytest.fixture
def sdk(demo):
    """The openai SDK pointed at the demo server, closed after the test (an open keep-alive
    connection would make the server's stop wait for it)."""
    with openai.OpenAI(base_url=demo.url + "/v1", api_key="unused", max_retries=0, timeout=30) as client:
        yield client


def test_demo_streams_with_the_sdk(sdk):
    chunks = list(sdk.chat.completions.create(
        model="demo-echo", stream=True,
        messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "hello gateway"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "I received 2 message(s)" in text and text.endswith("You said: hello gateway")
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 5  # word by word
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_demo_answers_without_streaming(sdk):
    answer = sdk.chat.completions.create(model="demo-echo", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content.endswith("You said: hi")


def test_status_page_says_demo_mode(demo):
    page = requests.get(demo.url + "/", timeout=10)
    assert page.status_code == 200 and "Demo mode" in page.text and "demo-echo" in page.text
    assert requests.get(demo.url + "/healthz", timeout=10).json() == {"status": "ok"}
    assert requests.get(demo.url + "/readyz", timeout=10).status_code == 200
