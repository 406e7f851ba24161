"""The four stream cases of the contract, usage chunks, unbuffered relay, and concurrency under gevent."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.backends import chunk_json, completion_json
from tests.sse_client import content_of, data_payloads, iter_events, read_events

CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
SSE_HEADERS = {"text/event-stream", "no-cache", "no"}


def stream(gateway, model, **extra):
    body = {"model": model, "messages": CONVERSATION, "stream": True, **extra}
    return requests.post(gateway.url + "/v1/chat/completions", json=body, stream=True, timeout=30)


def assert_sse_headers(response):
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"


@pytest.mark.parametrize("model, backend_fixture, backend_streams", [
    ("gpt-stream", "openai_backend", True),
    ("openai-nostream", "openai_backend", False),
    ("corp-plain", "corp_backend", False),
])
def test_stream_true_gets_a_complete_stream_ending_in_done(gateway, request, model, backend_fixture, backend_streams):
    backend = request.getfixturevalue(backend_fixture)
    with stream(gateway, model) as response:
        assert response.status_code == 200
        assert_sse_headers(response)
        items = read_events(response)  # returns only once the gateway closed the response
    payloads = data_payloads(items)
    assert payloads[-1] == "[DONE]" and payloads.count("[DONE]") == 1
    assert content_of(payloads) == "echo 2: Say hello"
    assert payloads[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [p["choices"][0]["finish_reason"] for p in payloads[:-1]][-1] == "stop"
    assert backend.last.body["stream"] is backend_streams
    if not backend_streams:
        assert backend.last.headers["accept"] == "application/json"


@pytest.mark.parametrize("model", ["gpt-stream", "openai-nostream", "corp-plain"])
def test_stream_false_gets_one_json_completion(gateway, model):
    body = {"model": model, "messages": CONVERSATION, "stream": False}
    response = requests.post(gateway.url + "/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    data = response.json()
    assert data["object"] == "chat.completion"
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "echo 2: Say hello"}


@pytest.mark.parametrize("model", ["gpt-stream", "corp-plain"])
def test_include_usage_gets_a_final_usage_chunk(gateway, model):
    with stream(gateway, model, stream_options={"include_usage": True}) as response:
        payloads = data_payloads(read_events(response))
    usage_chunk = payloads[-2]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["total_tokens"] > 0


@pytest.mark.parametrize("model", ["gpt-stream", "corp-plain"])
def test_sdk_streams_and_accepts_usage(client, model):
    chunks = list(client.chat.completions.create(
        model=model, messages=CONVERSATION, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo 2: Say hello"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


@pytest.mark.parametrize("model", ["gpt-stream", "corp-plain"])
def test_include_usage_is_kept_even_when_the_backend_reports_none(gateway, openai_backend, corp_backend, model):
    corp_backend.respond_with(lambda ex: ex.send_json(200, completion_json("no counts", usage=False)))
    openai_backend.respond_with(lambda ex: ex.paced_reply(["no ", "counts"], 0))  # ignores include_usage
    with stream(gateway, model, stream_options={"include_usage": True}) as response:
        payloads = data_payloads(read_events(response))
    assert content_of(payloads) == "no counts"
    assert payloads[-2]["choices"] == [] and payloads[-2]["usage"] is None  # promised, not made up
    assert payloads[-1] == "[DONE]"


def test_no_usage_chunk_unless_asked(gateway):
    with stream(gateway, "corp-plain") as response:
        payloads = data_payloads(read_events(response))
    assert all(p == "[DONE]" or p["choices"] for p in payloads)


def test_streaming_backend_gets_stream_options_as_sent(gateway, openai_backend):
    with stream(gateway, "gpt-stream", stream_options={"include_usage": True}) as response:
        read_events(response)
    assert openai_backend.last.body["stream"] is True
    assert openai_backend.last.body["stream_options"] == {"include_usage": True}


def test_relay_is_unbuffered(gateway, openai_backend):
    """The backend sends each event only after the client has the previous one: a buffering gateway deadlocks."""
    received = []
    seen = threading.Condition()

    def lockstep(exchange):
        exchange.start_sse()
        for i in range(5):
            exchange.event(chunk_json(delta={"content": f"e{i} "}))
            with seen:
                assert seen.wait_for(lambda: len(received) > i, timeout=10), f"client did not get event {i} in time"
            time.sleep(0.3)  # events 300 ms apart, as a slow backend sends them
        exchange.event(chunk_json(delta={}, finish_reason="stop"))
        exchange.event("[DONE]")
        exchange.end_sse()

    openai_backend.respond_with(lockstep)
    with stream(gateway, "gpt-stream") as response:
        for kind, payload in iter_events(response):
            if kind == "data" and payload != "[DONE]" and json.loads(payload)["choices"][0]["delta"].get("content"):
                with seen:
                    received.append(payload)
                    seen.notify_all()
    assert len(received) == 5


def test_relayed_events_pass_through_byte_for_byte(gateway, openai_backend):
    odd = '{"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"a\u2028b 한"},"finish_reason":null}],"x_vendor":{"k":1}}'

    def backend(exchange):
        exchange.start_sse()
        exchange.write(b": backend comment\r\n\r\n")
        exchange.write(("data: " + odd + "\r\n\r\n").encode())
        exchange.event(chunk_json(delta={}, finish_reason="stop"))
        exchange.event("[DONE]")
        exchange.end_sse()

    openai_backend.respond_with(backend)
    with stream(gateway, "gpt-stream") as response:
        items = read_events(response)
    # untouched but for the model, which names the id the client asked for (the backend's own
    # name goes to the access log)
    assert ("data", odd.replace('"model":"m"', '"model":"gpt-stream"')) in items


def test_close_delimited_backend_stream_is_relayed(gateway, openai_backend):
    def backend(exchange):
        exchange.start_sse(chunked=False)
        exchange.event(chunk_json(delta={"role": "assistant", "content": "hi"}))
        exchange.event(chunk_json(delta={}, finish_reason="stop"))
        # no [DONE]: the stream ends by closing the connection after a finished answer

    openai_backend.respond_with(backend)
    with stream(gateway, "gpt-stream") as response:
        payloads = data_payloads(read_events(response))
    assert content_of(payloads) == "hi" and payloads[-1] == "[DONE]"


def test_streaming_backend_answering_json_is_streamed_anyway(gateway, openai_backend):
    openai_backend.respond_with(lambda ex: ex.send_json(200, completion_json("whole answer")))
    with stream(gateway, "gpt-stream") as response:
        payloads = data_payloads(read_events(response))
    assert content_of(payloads) == "whole answer" and payloads[-1] == "[DONE]"


def test_one_worker_serves_fifty_slow_streams_at_once(gateway, openai_backend):
    """Each stream takes about a second at the backend; fifty together must not take fifty seconds."""
    openai_backend.respond_with(lambda exchange: exchange.paced_reply(["x"] * 5, 0.2))

    def one(_):
        with stream(gateway, "gpt-stream") as response:
            return content_of(data_payloads(read_events(response)))

    started = time.monotonic()
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, range(50)))
    elapsed = time.monotonic() - started
    assert results == ["xxxxx"] * 50
    # Serially this is 50 s; concurrently about 1 s plus overhead. 10 s leaves room for a slow machine.
    assert elapsed < 10, f"50 concurrent streams took {elapsed:.1f} s: something blocks the gevent loop"
