"""POST /v1/embeddings: relayed to the backend's embeddings_url like chat is to its url.

In-process (`create_app(config).test_client()`) for what the backend receives, the schema, the
error table and the answer checks; on a real gunicorn + gevent server for the openai SDK's
`embeddings.create`, the access log and the metrics. The backends are the real loopback ones.
"""

import base64
import gc
import json
import struct
import sys
import threading
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from gateway.config import ConfigError, parse_config
from gateway.telemetry.record import access_log
from tests.backends import closed_port, embedding_of, embeddings_json, wait_until
from tests.configs import backend, gateway_toml, model
from tests.conftest import NO_BREAKER, TICKET, SecretWatchingClient
from tests.gunicorn_server import GatewayServer
from tests.sdk import openai  # the SDK itself is imported at first use

CHUNKS = ["Die Hauptstadt von Frankreich ist Paris.", "회의록: 3분기 매출 보고"]
NOWHERE_PORT = closed_port()
OWUI_USER = {  # what Open WebUI forwards with ENABLE_FORWARD_USER_INFO_HEADERS=true
    "X-OpenWebUI-User-Email": "kim@corp.example",
    "X-OpenWebUI-User-Id": "u-42",
    "X-OpenWebUI-User-Name": "Kim",
    "X-OpenWebUI-User-Role": "user",
}


def embeddings_url(chat_url: str) -> str:
    return chat_url.replace("/chat/completions", "/embeddings")


def embeddings_config(openai_backend, corp_backend) -> str:
    return gateway_toml(
        backends={
            "corp": backend(corp_backend.url, embeddings_url=embeddings_url(corp_backend.url), **NO_BREAKER,
                            headers={"x-dep-ticket": "${CORP_TICKET}", "User-Id": "{user.email|anonymous}", "Msg-Id": "{uuid}"}),
            # a server that rejects encoding_format: the client still gets the form it asked for
            "openai": backend(openai_backend.url, streaming=True, embeddings_url=embeddings_url(openai_backend.url),
                              drop_params=["encoding_format"], max_concurrency=1, **NO_BREAKER),
            # chat on a live host, embeddings on a dead one: errors name where it failed
            "nowhere": backend(corp_backend.url, embeddings_url=f"http://127.0.0.1:{NOWHERE_PORT}/v1/embeddings", **NO_BREAKER),
            "demo": backend("demo://echo", embeddings_url="demo://echo"),
        },
        models=[
            model("bge-m3", "corp", kind="embeddings", upstream="BAAI/bge-m3"),
            model("embed-open", "openai", kind="embeddings"),
            model("embed-nowhere", "nowhere", kind="embeddings"),
            model("embed-demo", "demo", kind="embeddings"),
            model("corp-chat", "corp"),
            model("relay-chat", "openai"),  # streams beside a huge embeddings request (the stall test)
        ],
    )


@pytest.fixture(scope="module")
def embed_app(openai_backend, corp_backend):
    app = create_app(parse_config(embeddings_config(openai_backend, corp_backend), "embeddings test config", {"CORP_TICKET": TICKET}))
    app.test_client_class = SecretWatchingClient
    return app


@pytest.fixture
def embed(embed_app):
    client = embed_app.test_client()
    return lambda body, path="/v1/embeddings", headers=None: client.post(path, json=body, headers=headers)


def assert_error(response, status, code, param=None, says=()):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.headers["Content-Type"] == "application/json"
    error = response.get_json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["param"] == param
    for words in says:
        assert words in error["message"], error["message"]
    return error


# --- what the backend receives, and what the client gets ------------------------------------------


def test_open_webui_rag_request_is_relayed_with_the_backends_headers(embed, corp_backend):
    response = embed({"input": CHUNKS, "model": "bge-m3"}, headers=OWUI_USER)
    assert response.status_code == 200
    received = corp_backend.last
    assert received.method == "POST" and received.path == "/v1/embeddings"
    assert received.body == {"input": CHUNKS, "model": "BAAI/bge-m3"}  # model mapped to upstream, nothing added
    assert received.headers["x-dep-ticket"] == TICKET and received.headers["user-id"] == "kim@corp.example"
    assert len(received.headers["msg-id"]) == 36  # a fresh {uuid}
    answer = response.get_json()
    assert answer["object"] == "list" and answer["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    assert [item["embedding"] for item in answer["data"]] == [embedding_of(c) for c in CHUNKS]
    assert [item["index"] for item in answer["data"]] == [0, 1]
    assert response.headers["X-Gateway-Backend"] == "corp"


def test_served_without_the_v1_prefix_too(embed, corp_backend):
    response = embed({"input": "hello", "model": "bge-m3"}, path="/embeddings")
    assert response.status_code == 200 and response.get_json()["data"][0]["embedding"] == embedding_of("hello")


@pytest.mark.parametrize("inputs, count", [
    ("one text", 1),
    (["a", "b", "c"], 3),
    ([101, 2023, 102], 1),  # token ids: one input
    ([[101, 2023], [101, 7592, 102]], 2),
])
def test_every_input_shape_gets_one_embedding_each(embed, corp_backend, inputs, count):
    response = embed({"input": inputs, "model": "bge-m3"})
    assert response.status_code == 200
    assert corp_backend.last.body["input"] == inputs
    assert len(response.get_json()["data"]) == count


def test_encoding_format_dimensions_user_and_unknown_fields_pass_through(embed, corp_backend):
    body = {"input": "x", "model": "bge-m3", "encoding_format": "float", "dimensions": 3, "user": "u-1", "x_prefix": "query: "}
    assert embed(body).status_code == 200
    assert corp_backend.last.body == {**body, "model": "BAAI/bge-m3"}


def test_base64_is_made_for_a_client_that_asked_when_the_backend_sent_floats(embed, openai_backend):
    response = embed({"input": ["a", "bb"], "model": "embed-open", "encoding_format": "base64"})
    assert response.status_code == 200
    assert "encoding_format" not in openai_backend.last.body  # drop_params: this backend rejects it
    for item, text in zip(response.get_json()["data"], ["a", "bb"]):
        raw = base64.b64decode(item["embedding"])
        assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == embedding_of(text)  # little-endian float32, as OpenAI


def test_floats_are_made_for_a_client_that_did_not_ask_for_base64(embed, corp_backend):
    def base64_answer(exchange):
        vector = base64.b64encode(struct.pack("<3f", 1.5, -2.0, 0.125)).decode()
        exchange.send_json(200, {"object": "list", "model": "m", "data": [{"object": "embedding", "index": 0, "embedding": vector}]})

    corp_backend.respond_with(base64_answer)
    response = embed({"input": "x", "model": "bge-m3"})
    assert response.status_code == 200 and response.get_json()["data"][0]["embedding"] == [1.5, -2.0, 0.125]


def test_items_come_back_in_index_order(embed, corp_backend):
    def reversed_answer(exchange):
        answer = embeddings_json(exchange.body)
        answer["data"].reverse()
        exchange.send_json(200, answer)

    corp_backend.respond_with(reversed_answer)
    response = embed({"input": ["first", "second text"], "model": "bge-m3"})
    data = response.get_json()["data"]
    assert [item["embedding"] for item in data] == [embedding_of("first"), embedding_of("second text")]
    assert [item["index"] for item in data] == [0, 1]


def test_a_lax_backends_answer_is_completed(embed, corp_backend):
    corp_backend.respond_with(lambda ex: ex.send_json(200, {"data": [{"embedding": [0.5]}, {"embedding": [1.0]}]}))
    answer = embed({"input": ["a", "b"], "model": "bge-m3"}).get_json()
    assert answer == {"object": "list", "model": "bge-m3",
                      "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}, {"object": "embedding", "index": 1, "embedding": [1.0]}]}


def test_the_demo_backend_embeds_deterministically(embed):
    first = embed({"input": ["same", "other"], "model": "embed-demo"}).get_json()["data"]
    again = embed({"input": "same", "model": "embed-demo"}).get_json()["data"]
    assert first[0]["embedding"] == again[0]["embedding"] != first[1]["embedding"]
    assert len(first[0]["embedding"]) == 16


# --- the client's mistakes -------------------------------------------------------------------------


@pytest.mark.parametrize("body, param", [
    ({"model": "bge-m3"}, "input"),
    ({"model": "bge-m3", "input": ""}, "input"),
    ({"model": "bge-m3", "input": []}, "input"),
    ({"model": "bge-m3", "input": {"text": "x"}}, "input"),
    ({"model": "bge-m3", "input": ["a", 5]}, "input.1"),
    ({"model": "bge-m3", "input": ["a", ""]}, "input.1"),
    ({"model": "bge-m3", "input": [1, -2]}, "input.1"),
    ({"model": "bge-m3", "input": [1, True]}, "input.1"),
    ({"model": "bge-m3", "input": [[1], []]}, "input.1"),
    ({"model": "bge-m3", "input": [[1], "a"]}, "input.1"),
    ({"model": "bge-m3", "input": [None]}, "input.0"),
    ({"model": "bge-m3", "input": "x", "encoding_format": "hex"}, "encoding_format"),
    ({"model": "bge-m3", "input": "x", "dimensions": 0}, "dimensions"),
    ({"model": "bge-m3", "input": "x", "dimensions": "3"}, "dimensions"),
    ({"model": "bge-m3", "input": "x", "user": 5}, "user"),
    ({"input": "x"}, "model"),
])
def test_schema_violations_are_400_naming_the_field(embed, corp_backend, body, param):
    count = len(corp_backend.requests)
    error = assert_error(embed(body), 400, None, param=param)
    assert error["type"] == "invalid_request_error"
    assert len(corp_backend.requests) == count  # never reached the backend


def test_a_body_that_is_not_an_object_is_400(embed_app):
    response = embed_app.test_client().post("/v1/embeddings", data=b"[1, 2]", headers={"Content-Type": "application/json"})
    assert_error(response, 400, None, says=("must be a JSON object",))


def test_an_embeddings_model_on_chat_is_400_saying_its_kind(embed_app):
    response = embed_app.test_client().post("/v1/chat/completions", json={"model": "bge-m3", "messages": [{"role": "user", "content": "hi"}]})
    assert_error(response, 400, "wrong_model_kind", param="model",
                 says=("'bge-m3' is an embeddings model", "/v1/embeddings"))


def test_the_answer_names_the_requested_model(embed, corp_backend):
    corp_backend.respond_with(lambda ex: ex.send_json(200, {**embeddings_json(ex.body), "model": "BAAI/bge-m3-gguf"}))
    assert embed({"model": "bge-m3", "input": "x"}).get_json()["model"] == "bge-m3"


def test_a_wrong_kind_refusal_is_logged_with_the_model_id(embed_app, monkeypatch):
    lines = []
    monkeypatch.setattr(access_log, "write", lambda line: lines.append(json.loads(line)))
    embed_app.test_client().post("/v1/embeddings", json={"model": "corp-chat", "input": "x"}).close()
    assert lines[-1]["error"] == "wrong_model_kind" and lines[-1]["model"] == "corp-chat"


def test_a_chat_model_on_embeddings_is_400_saying_its_kind(embed, corp_backend):
    count = len(corp_backend.requests)
    assert_error(embed({"model": "corp-chat", "input": "x"}), 400, "wrong_model_kind", param="model",
                 says=("'corp-chat' is a chat model", "/v1/chat/completions"))
    assert len(corp_backend.requests) == count


def test_an_unknown_model_is_404(embed):
    assert_error(embed({"model": "nope", "input": "x"}), 404, "model_not_found", param="model")


def test_a_backend_with_every_slot_taken_is_429(embed_app, openai_backend):
    registry = embed_app.extensions["registry"]
    slot = registry.backends["openai"].acquire()  # max_concurrency = 1: the one slot is in use
    try:
        response = embed_app.test_client().post("/v1/embeddings", json={"model": "embed-open", "input": "x"})
    finally:
        slot.release()
    assert_error(response, 429, "gateway_concurrency_limit")
    assert response.headers["Retry-After"] == "1" and "X-Gateway-Backend" not in response.headers


# --- the backend's failures: translated like chat's ------------------------------------------------


@pytest.mark.parametrize("status, answer, code, says", [
    (500, {"error": {"message": "GPU fell over"}}, "backend_server_error", ("Backend 'corp'", "HTTP 500", "GPU fell over")),
    (413, {"error": {"message": "input too long"}}, "backend_rejected_request", ("input too long",)),
    (429, {"error": {"message": "slow down"}}, "backend_rate_limited", ("slow down",)),
])
def test_backend_error_answers_are_translated_and_name_the_backend(embed, corp_backend, status, answer, code, says):
    corp_backend.respond_with(lambda ex: ex.send_json(status, answer, headers={"Retry-After": "9"}))
    response = embed({"model": "bge-m3", "input": "x"})
    expected_status = {500: 502}.get(status, status)
    assert_error(response, expected_status, code, says=says)
    assert response.headers["X-Gateway-Backend"] == "corp"
    if status == 429:
        assert response.headers["Retry-After"] == "9"


def test_a_backend_that_echoes_our_ticket_does_not_leak_it(embed, corp_backend):
    corp_backend.respond_with(lambda ex: ex.send_json(400, {"error": {"message": f"bad ticket {ex.request.headers['x-dep-ticket']}"}}))
    response = embed({"model": "bge-m3", "input": "x"})
    assert_error(response, 400, "backend_rejected_request", says=("bad ticket [redacted]",))
    assert TICKET not in response.get_data(as_text=True)


def test_a_backend_that_is_not_there_is_502_without_a_backend_header(embed):
    response = embed({"model": "embed-nowhere", "input": "x"})
    assert_error(response, 502, "backend_unreachable", says=(f"Backend 'nowhere' refused the connection at http://127.0.0.1:{NOWHERE_PORT}",))
    assert "X-Gateway-Backend" not in response.headers  # no backend answered


@pytest.mark.parametrize("answer, says", [
    (b"<html>Login</html>", "not JSON"),
    (json.dumps({"result": []}).encode(), "has no data list"),
    (json.dumps({"data": [{"embedding": [0.1]}]}).encode(), "has 1 embeddings for 2 inputs"),
    (json.dumps({"data": [{"embedding": [0.1]}, {"vector": [0.2]}]}).encode(), "without an embedding"),
    (json.dumps({"data": [{"embedding": [0.1]}, {"embedding": ["0.2"]}]}).encode(), "not a list of numbers"),
    (json.dumps({"data": [{"index": 0, "embedding": [0.1]}, {"index": 0, "embedding": [0.2]}]}).encode(), "indexes do not match"),
    (json.dumps({"data": [{"embedding": [0.1]}, {"embedding": "not*base64"}]}).encode(), "not base64-encoded float32"),
])
def test_an_answer_that_is_not_an_embeddings_list_is_502(embed, corp_backend, answer, says):
    corp_backend.respond_with(lambda ex: ex.send_raw(200, "application/json", answer))
    response = embed({"model": "bge-m3", "input": ["a", "b"]})
    assert_error(response, 502, "backend_invalid_answer", says=("Backend 'corp'", says))
    assert response.headers["X-Gateway-Backend"] == "corp"


# --- the real server: the openai SDK, the access log, the metrics ----------------------------------


@pytest.fixture(scope="module")
def embed_server(openai_backend, corp_backend, tmp_path_factory):
    server = GatewayServer(embeddings_config(openai_backend, corp_backend), tmp_path_factory.mktemp("embeddings"),
                           env={"CORP_TICKET": TICKET})
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture
def sdk(embed_server):
    with openai.OpenAI(base_url=embed_server.url + "/v1", api_key="unused", max_retries=0, timeout=30) as client:
        yield client


def test_the_openai_sdk_gets_embeddings(sdk, corp_backend):
    # The SDK asks for base64 unless told otherwise and decodes it; the backend sends floats.
    result = sdk.embeddings.create(model="bge-m3", input=CHUNKS)
    assert corp_backend.last.body["encoding_format"] == "base64"
    assert [item.embedding for item in result.data] == [embedding_of(c) for c in CHUNKS]
    assert result.usage.total_tokens == 4
    floats = sdk.embeddings.create(model="bge-m3", input="hello", encoding_format="float")
    assert floats.data[0].embedding == embedding_of("hello")


def test_the_sdk_sees_a_kind_mismatch_as_a_bad_request(sdk):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(model="corp-chat", input="x")
    assert caught.value.status_code == 400 and "is a chat model" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="bge-m3", messages=[{"role": "user", "content": "hi"}])
    assert "is an embeddings model" in caught.value.message


def test_access_log_and_metrics_count_embeddings_like_chat(embed_server, corp_backend):
    def requests_total(model, status):
        text = requests.get(embed_server.url + "/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "llm_gateway_requests_total" and sample.labels.get("model") == model and sample.labels["status"] == status:
                    return sample.value
        return 0

    before = requests_total("bge-m3", "200")
    response = requests.post(embed_server.url + "/v1/embeddings", json={"model": "bge-m3", "input": ["a", "b"]}, timeout=30)
    assert response.status_code == 200
    line = wait_until(lambda: embed_server.access_line(response.headers["X-Request-Id"]), message="the access-log line")
    assert line["path"] == "/v1/embeddings" and line["model"] == "bge-m3" and line["backend"] == "corp"
    assert line["status"] == 200 and line["outcome"] == "completed" and line["stream"] is False
    assert line["prompt_tokens"] == 4 and line["total_tokens"] == 4
    assert wait_until(lambda: requests_total("bge-m3", "200") == before + 1, message="the request counted")

    corp_backend.respond_with(lambda ex: ex.send_json(503, {"error": {"message": "down"}}))
    failed = requests.post(embed_server.url + "/v1/embeddings", json={"model": "bge-m3", "input": "x"}, timeout=30)
    assert failed.status_code == 502
    line = wait_until(lambda: embed_server.access_line(failed.headers["X-Request-Id"]), message="the failure's access-log line")
    assert line["outcome"] == "backend_error" and line["error"] == "5xx"


# --- the config ------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend_settings, model_settings, names", [
    ({}, {"kind": "embeddings"}, 'models."m".kind: an embeddings model needs its backend \'corp\' to have embeddings_url'),
    ({"embeddings_url": "ftp://x/embed"}, {}, "backends.corp.embeddings_url: must be an http:// or https:// URL"),
    ({"embeddings_url": "demo://echo"}, {}, "backends.corp.embeddings_url: must be an http:// or https:// URL (demo:// only beside a demo:// url)"),
    ({}, {"kind": "vectors"}, 'models."m".kind: must be one of: chat, embeddings (got \"vectors\", a string)'),
])
def test_config_errors_name_the_key(backend_settings, model_settings, names):
    text = gateway_toml(backends={"corp": backend("http://127.0.0.1:9/v1/chat/completions", **backend_settings)},
                        models=[model("m", "corp", **model_settings)])
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "gw.toml", {})
    assert str(caught.value).startswith("gw.toml: ") and names in str(caught.value)


def test_a_secret_in_the_embeddings_url_is_redacted_like_one_in_url():
    text = gateway_toml(backends={"corp": backend("http://127.0.0.1:9/v1/chat/completions",
                                                  embeddings_url="https://user:pw-7f1c9e@llm.corp.example/embed?api_key=k-93be1d0c")},
                        models=[model("m", "corp", kind="embeddings")])
    config = parse_config(text, "gw.toml", {})
    assert {"pw-7f1c9e", "k-93be1d0c"} <= config.secrets
    assert config.models["m"].kind == "embeddings"


# --- one huge request must not stall the worker's other streams (issue #21) -------------------------


def stream_gaps(url: str, gaps: list, started: threading.Event, enough: threading.Event) -> None:
    """Reads one paced stream until `enough` is set; appends the arrival time of every event to `gaps`."""
    body = {"model": "relay-chat", "stream": True, "messages": [{"role": "user", "content": "count"}]}
    with requests.post(url + "/v1/chat/completions", json=body, stream=True, timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith(b"data: {"):
                gaps.append(time.monotonic())
                started.set()
                if enough.is_set():
                    return  # leaves: the gateway ends the stream as its client goes


def test_a_huge_embeddings_answer_does_not_stall_the_workers_other_streams(embed_server, corp_backend, openai_backend):
    """400,000 inputs, a ~28 MB answer, on a worker that is also relaying streams: every step of
    reading, checking, writing and sending it used to be one long C call (json.loads alone held
    the GIL for over a second) or a collector pass over its half-million objects, stalling every
    stream. The bound here is loose (a busy CI machine); `make bench` has the exact figure."""
    count = 400_000
    item = b'{"object":"embedding","index":%d,"embedding":[0.25,-0.5]}'
    answer = b'{"object":"list","model":"BAAI/bge-m3","data":[' + b",".join(item % i for i in range(count)) + b'],"usage":{"prompt_tokens":1,"total_tokens":1}}'
    corp_backend.respond_with(lambda exchange: exchange.send_raw(200, "application/json", answer))
    # A stream that outlasts the huge request (30 s at most); it is left once that is answered.
    openai_backend.respond_with(lambda exchange: exchange.paced_reply(["x"] * 1000, 0.03))
    arrivals = [[]]  # one stream: "openai" takes one request at a time (max_concurrency = 1)
    started = [threading.Event() for _ in arrivals]
    enough = threading.Event()
    readers = [threading.Thread(target=stream_gaps, args=(embed_server.url, times, ready, enough)) for times, ready in zip(arrivals, started)]
    for reader in readers:
        reader.start()
    for ready in started:
        assert ready.wait(10)
    request = ('{"model": "bge-m3", "input": [' + '"x", ' * (count - 1) + '"x"]}').encode()  # without a json.dumps of its own
    began = time.monotonic()
    with requests.post(embed_server.url + "/v1/embeddings", data=request, headers={"Content-Type": "application/json"}, stream=True, timeout=120) as big:
        assert big.status_code == 200
        size = sum(len(chunk) for chunk in big.iter_content(1 << 20))  # not parsed here: that would stall this process
    ended = time.monotonic()
    enough.set()
    for reader in readers:
        reader.join(timeout=30)
        assert not reader.is_alive()
    assert size > 20_000_000
    assert all(times[-1] > ended for times in arrivals), "a stream ended before the huge answer did: its gaps cover only part of it"
    worst = max(later - earlier for times in arrivals for earlier, later in zip(times, times[1:]) if later > began and earlier < ended)
    assert worst < 0.6, f"the other streams waited {worst * 1000:.0f} ms"


def test_large_work_runs_in_the_pool_with_no_collector_and_a_short_switch_interval(monkeypatch):
    """While a large document is parsed in gevent's pool, the event loop takes the GIL back every
    0.5 ms, not every 5 (each wait for it was up to one interval: 80-100 ms gaps in the other
    streams, measured); both come back as they were once the work is done."""
    from gateway import concurrency

    monkeypatch.setattr(concurrency, "cooperative", lambda: True)  # the pool itself is gevent's, real
    before = sys.getswitchinterval()
    seen = concurrency.run_if_large(concurrency.LARGE_BYTES + 1, lambda: (sys.getswitchinterval(), gc.isenabled()))
    assert seen == (0.0005, False)
    assert sys.getswitchinterval() == before and gc.isenabled()
