"""The Responses API through a real gunicorn with two gevent workers, driven by the real openai SDK
(and plain HTTP where the bytes matter): create with and without streaming, `responses.stream()`,
`responses.parse()`, a function-tool round trip, `previous_response_id` served by the other worker
and by another instance through Redis, GET and DELETE; keep-alives before the first event, a
backend that drops mid-stream, a non-streaming backend's built stream, failover, a client that
leaves, the graceful-shutdown deadline; the access log, metrics and status page."""

import json
import signal
import threading
import time

import pytest
import requests

from tests.backends import answers, drops_mid_stream, first_event_then_hold, model_turn, tool_round_trip, wait_until
from tests.conftest import INBOUND_KEY, TICKET
from tests.gunicorn_server import GatewayServer
from tests.responses_helpers import check_framing, parse_events, responses_config
from tests.sdk import openai  # the SDK itself is imported at first use

HEADERS = {"Authorization": f"Bearer {INBOUND_KEY}"}


@pytest.fixture(scope="module")
def two_workers(openai_backend, corp_backend, tmp_path_factory):
    directory = tmp_path_factory.mktemp("responses-gateway")
    config = responses_config(openai_backend.url, corp_backend.url, heartbeat_seconds=0.5, data_dir=str(directory / "state"))
    server = GatewayServer(config, directory, env={"CORP_TICKET": TICKET}, workers=2)
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture
def sdk(two_workers):
    with openai.OpenAI(base_url=two_workers.url + "/v1", api_key=INBOUND_KEY, max_retries=0, timeout=30) as client:
        yield client


def access_line(server, request_id: str) -> dict:
    return wait_until(lambda: server.access_line(request_id), message=f"the access-log line of {request_id}")


def post(server, body, **kwargs):
    return requests.post(server.url + "/v1/responses", json=body, headers=HEADERS, timeout=30, **kwargs)


# --- the openai SDK --------------------------------------------------------------------------------


def test_create_without_and_with_streaming(sdk, openai_backend):
    openai_backend.respond_with(answers("Hello from the backend", reasoning="a short thought"))
    response = sdk.responses.create(model="gpt-stream", input="hi", instructions="Be brief.")
    assert response.output_text == "Hello from the backend" and response.status == "completed" and response.model == "gpt-stream"
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.usage.total_tokens == 10
    events = list(sdk.responses.create(model="gpt-stream", input="hi", stream=True))
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Hello from the backend"
    assert "".join(e.delta for e in events if e.type == "response.reasoning_text.delta") == "a short thought"
    assert events[-1].response.usage.total_tokens == 16


def test_responses_stream_and_its_final_response(sdk, corp_backend):
    corp_backend.respond_with(answers("Built from a non-streaming backend"))
    with sdk.responses.stream(model="gauss", input="hi") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "Built from a non-streaming backend"
    assert corp_backend.last.body["stream"] is False  # the stream was built from one answer


def test_responses_parse_with_a_pydantic_model(sdk, openai_backend):
    from pydantic import BaseModel  # here: the openai SDK's, imported with it at first use

    class City(BaseModel):
        name: str
        population_millions: float

    def structured(exchange):
        schema = exchange.body["response_format"]["json_schema"]
        assert schema["name"] == "City" and schema["strict"] is True
        model_turn(exchange, text=json.dumps({"name": "Seoul", "population_millions": 9.4}))

    openai_backend.respond_with(structured)
    parsed = sdk.responses.parse(model="gpt-stream", input="the capital of Korea", text_format=City)
    assert parsed.output_parsed == City(name="Seoul", population_millions=9.4)


def test_a_function_tool_round_trip(sdk, openai_backend):
    openai_backend.respond_with(tool_round_trip("call_w1", "get_weather", '{"city": "Seoul"}', lambda result: f"Seoul: {result}."))
    tools = [{"type": "function", "name": "get_weather", "description": "Weather for a city.", "strict": True,
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}}]
    first = sdk.responses.create(model="gpt-stream", input="weather in Seoul?", tools=tools)
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather" and json.loads(call.arguments) == {"city": "Seoul"}
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 °C"}
    # Stateful: the gateway has the first turn.
    second = sdk.responses.create(model="gpt-stream", previous_response_id=first.id, input=[result], tools=tools)
    assert second.output_text == "Seoul: sunny, 21 °C."
    # Stateless, as the Agents SDK and Codex do: the whole history in input, nothing stored.
    with sdk.responses.stream(model="gpt-stream", input=[{"role": "user", "content": "weather in Seoul?"}, call, result], tools=tools, store=False) as stream:
        third = stream.get_final_response()
    assert third.output_text == "Seoul: sunny, 21 °C."
    assert openai_backend.last.body["messages"][1]["tool_calls"][0]["function"]["name"] == "get_weather"


def test_previous_response_id_on_the_other_worker_and_get_and_delete(sdk, two_workers, openai_backend):
    openai_backend.respond_with(answers("first answer"))
    first = sdk.responses.with_raw_response.create(model="gpt-stream", input="first question")
    first_pid = access_line(two_workers, first.headers["X-Request-Id"])["pid"]
    first_id = first.parse().id

    def continued_elsewhere():
        # Each request on a new connection: the two workers take turns accepting them.
        answer = post(two_workers, {"model": "gpt-stream", "input": "second question", "previous_response_id": first_id})
        assert answer.status_code == 200, answer.text
        return access_line(two_workers, answer.headers["X-Request-Id"])["pid"] != first_pid

    wait_until(continued_elsewhere, timeout=30, interval=0, message="a continuation served by the other worker")
    assert [m["content"] for m in openai_backend.last.body["messages"]] == ["first question", "first answer", "second question"]
    assert sdk.responses.retrieve(first_id).output_text == "first answer"
    assert sdk.responses.delete(first_id) is None
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(first_id)
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.responses.create(model="gpt-stream", input="x", previous_response_id=first_id)
    assert raised.value.code == "previous_response_not_found" and raised.value.param == "previous_response_id"


def test_previous_response_id_on_another_instance_through_redis(openai_backend, corp_backend, tmp_path):
    from tests.redis_server import RedisServer

    redis = RedisServer(tmp_path / "redis")
    servers = []
    try:
        for name in ("a", "b"):  # two instances, each with its own (unused) data_dir: only Redis is shared
            config = responses_config(openai_backend.url, corp_backend.url, redis_url=redis.url, data_dir=str(tmp_path / name / "state"))
            servers.append(GatewayServer(config, tmp_path / name, env={"CORP_TICKET": TICKET}))
        a, b = (server.wait_ready() for server in servers)  # started together
        openai_backend.respond_with(answers("kept in Redis"))
        created = post(a, {"model": "gpt-stream", "input": "hi", "stream": True})
        response_id = check_framing(parse_events(created.content))[-1]["response"]["id"]
        continued = post(b, {"model": "gpt-stream", "input": "again", "previous_response_id": response_id})
        assert continued.status_code == 200, continued.text
        assert [m["content"] for m in openai_backend.last.body["messages"]] == ["hi", "kept in Redis", "again"]
        assert requests.get(f"{b.url}/v1/responses/{response_id}", headers=HEADERS, timeout=10).json()["output"][0]["content"][0]["text"] == "kept in Redis"
        assert requests.delete(f"{b.url}/v1/responses/{response_id}", headers=HEADERS, timeout=10).json()["deleted"] is True
        assert requests.get(f"{a.url}/v1/responses/{response_id}", headers=HEADERS, timeout=10).status_code == 404
        # in Redis, not in data_dir (which holds only the usage ledger's usage.sqlite3)
        assert not any((tmp_path / side / "state" / "responses.sqlite3").exists() for side in ("a", "b"))
    finally:
        for server in servers:
            server.stop()
        redis.stop()


# --- the openai-agents SDK --------------------------------------------------------------------------


def test_an_agent_with_a_function_tool_runs_through_the_gateway(two_workers, openai_backend):
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)  # its traces would go to OpenAI's servers
    asked = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return "sunny, 21 °C"

    openai_backend.respond_with(tool_round_trip("call_a1", "get_weather", '{"city": "Seoul"}', lambda result: f"Seoul is {result}."))
    # Connection: close, as the async client outlives the run's own event loop and cannot be closed after it.
    client = openai.AsyncOpenAI(base_url=two_workers.url + "/v1", api_key=INBOUND_KEY, max_retries=0, timeout=30,
                                default_headers={"Connection": "close"})
    agent = Agent(name="weather", instructions="Answer with the tool.", tools=[get_weather],
                  model=OpenAIResponsesModel(model="gpt-stream", openai_client=client))
    result = Runner.run_sync(agent, "What is the weather in Seoul?")
    assert asked == ["Seoul"]  # the tool ran, with the backend's arguments
    assert result.final_output == "Seoul is sunny, 21 °C."
    first, second = openai_backend.requests[-2:]
    assert first.body["tools"][0]["function"]["name"] == "get_weather" and first.body["messages"][0] == {"role": "system", "content": "Answer with the tool."}
    assert second.body["messages"][-1] == {"role": "tool", "tool_call_id": "call_a1", "content": "sunny, 21 °C"}


# --- the stream's behaviour on a real server ---------------------------------------------------------


def test_keepalives_go_out_before_the_first_event(two_workers, corp_backend):
    def thinking(exchange):  # a model that takes 1.3 s (two and a half heartbeats) before it answers
        time.sleep(1.3)
        model_turn(exchange, text="after a while")

    corp_backend.respond_with(thinking)
    with post(two_workers, {"model": "gauss", "input": "hi", "stream": True}, stream=True) as response:
        data = b"".join(response.iter_content(chunk_size=None))
    assert data.startswith(b": keep-alive\n\n")
    assert data.count(b": keep-alive\n\n", 0, data.index(b"event: response.created")) >= 2  # 0.5 s heartbeats
    datas = check_framing(parse_events(data))
    assert datas[-1]["response"]["output"][0]["content"][0]["text"] == "after a while"


def test_a_backend_that_drops_mid_stream_ends_with_response_failed(sdk, openai_backend):
    openai_backend.respond_with(drops_mid_stream("partial"))
    events = list(sdk.responses.create(model="gpt-stream", input="hi", stream=True))
    assert events[-1].type == "response.failed"
    assert events[-1].response.error.code == "backend_connection_dropped"
    assert "Backend 'openai'" in events[-1].response.error.message
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "partial"


def test_failover_to_the_next_backend_before_the_first_event(two_workers, openai_backend):
    openai_backend.respond_with(answers("from the second backend"))
    for stream in (False, True):
        response = post(two_workers, {"model": "gpt-failover", "input": "hi", "stream": stream})
        assert response.status_code == 200 and response.headers["X-Gateway-Backend"] == "openai"
        line = access_line(two_workers, response.headers["X-Request-Id"])
        assert [attempt["backend"] for attempt in line["attempts"]] == ["nowhere", "openai"]
        text = response.json()["output"][0]["content"][0]["text"] if not stream else \
            check_framing(parse_events(response.content))[-1]["response"]["output"][0]["content"][0]["text"]
        assert text == "from the second backend"


def test_a_client_that_leaves_closes_the_backend_request(two_workers, openai_backend):
    openai_backend.respond_with(first_event_then_hold("Hel"))
    with post(two_workers, {"model": "gpt-stream", "input": "hi", "stream": True}, stream=True) as response:
        chunks = response.iter_content(chunk_size=None)
        received = b""
        while b"response.output_text.delta" not in received:
            received += next(chunks)
    wait_until(lambda: openai_backend.client_closes, timeout=10, message="the backend request to be closed")


def test_the_graceful_deadline_ends_a_stream_with_response_failed(openai_backend, corp_backend, tmp_path):
    config = responses_config(openai_backend.url, corp_backend.url, heartbeat_seconds=0.3, data_dir=str(tmp_path / "state"))
    server = GatewayServer(config, tmp_path, env={"CORP_TICKET": TICKET, "GATEWAY_GRACEFUL_TIMEOUT": "3"}).wait_ready()
    openai_backend.respond_with(lambda exchange: exchange.paced_reply(["x"] * 200, 0.1))  # 20 s: longer than the grace
    result = {}

    def stream():
        with post(server, {"model": "gpt-stream", "input": "hi", "stream": True}, stream=True) as response:
            result["request_id"] = response.headers["X-Request-Id"]
            result["data"] = b"".join(response.iter_content(chunk_size=None))

    reader = threading.Thread(target=stream)
    reader.start()
    try:
        wait_until(lambda: openai_backend.requests, message="the stream to start")
        server.process.send_signal(signal.SIGTERM)
        reader.join(timeout=20)
        datas = check_framing(parse_events(result["data"]))
        assert datas[-1]["type"] == "response.failed" and datas[-1]["response"]["error"]["code"] == "gateway_shutting_down"
        assert any(d["type"] == "response.output_text.delta" for d in datas)  # it was cut mid-answer
        assert server.wait_exit(timeout=20) == 0
        assert access_line(server, result["request_id"])["outcome"] == "shutting_down"
    finally:
        server.stop()


# --- what operators see -----------------------------------------------------------------------------


def test_the_access_log_metrics_and_status_page(two_workers, openai_backend):
    def requests_total():
        text = requests.get(two_workers.url + "/metrics", timeout=10).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("llm_gateway_requests_total{") and 'endpoint="responses"' in line and 'backend="openai"' in line)

    def openai_requests_5m():
        return next(b for b in requests.get(two_workers.url + "/status.json", timeout=10).json()["backends"] if b["name"] == "openai")["requests_5m"]

    before, page_before = requests_total(), openai_requests_5m()
    openai_backend.respond_with(answers("logged"))
    response = post(two_workers, {"model": "gpt-stream", "input": "hi", "stream": True, "tools": [{"type": "web_search"}, {"type": "file_search"}],
                                  "prompt_cache_key": "k", "include": ["reasoning.encrypted_content"], "shiny_new_field": True})
    assert response.status_code == 200
    line = access_line(two_workers, response.headers["X-Request-Id"])
    assert line["path"] == "/v1/responses" and line["model"] == "gpt-stream" and line["backend"] == "openai" and line["outcome"] == "completed"
    assert line["dropped_tools"] == ["web_search", "file_search"]
    assert line["ignored_fields"] == ["include", "prompt_cache_key"] and line["unknown_fields"] == ["shiny_new_field"]
    assert line["total_tokens"] == 16
    wait_until(lambda: requests_total() == before + 1, message="the request counted under endpoint=responses")
    wait_until(lambda: openai_requests_5m() >= page_before + 1, message="the status page counting it for its backend")
