"""Every request Open WebUI 0.12.4 builds (tests/fixtures/openwebui) goes through both kinds of backend."""

import pytest
import requests

from tests.conftest import FIXTURES, fixture_body
from tests.sse_client import content_of, data_payloads, read_events

REQUESTS = sorted(p.name for p in FIXTURES.glob("0*.json"))


@pytest.mark.parametrize("name", REQUESTS)
@pytest.mark.parametrize("model, backend_fixture", [("gpt-stream", "openai_backend"), ("corp-plain", "corp_backend")])
def test_fixture_goes_through(gateway, request, name, model, backend_fixture):
    backend = request.getfixturevalue(backend_fixture)
    body = {**fixture_body(name), "model": model}
    response = requests.post(gateway.url + "/v1/chat/completions", json=body, stream=True, timeout=30)
    assert response.status_code == 200, response.text
    received = backend.last.body
    assert received["messages"] == body["messages"]  # the whole conversation, parts and all
    assert {k: v for k, v in received.items() if k not in ("model", "stream", "stream_options")} == {
        k: v for k, v in body.items() if k not in ("model", "stream", "stream_options")
    }
    if body.get("stream"):
        assert response.headers["Content-Type"].startswith("text/event-stream")
        payloads = data_payloads(read_events(response))
        assert payloads[-1] == "[DONE]"
        assert content_of(payloads).startswith(f"echo {len(body['messages'])}:")
        if body.get("stream_options", {}).get("include_usage"):
            assert payloads[-2]["choices"] == [] and "usage" in payloads[-2]
    else:  # background tasks (title, tags) need one JSON completion
        assert response.headers["Content-Type"] == "application/json"
        assert response.json()["choices"][0]["message"]["content"].startswith("echo 1:")
