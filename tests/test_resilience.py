"""Slow, failing and vanished backends; clients that leave; limits, inbound auth and CORS.

A gateway with a short heartbeat, inbound keys, CORS and tight limits runs in front of the shared
test backends. Every wait has a deadline; timing goals stay in the benchmark.
"""

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.backends import chunk_json, completion_json, first_event_then_hold, wait_until
from tests.configs import backend, gateway_toml, model
from tests.conftest import HEARTBEAT as MAIN_HEARTBEAT
from tests.conftest import INBOUND_KEY, TICKET
from tests.gunicorn_server import GatewayServer, fd_targets
from tests.sdk import openai  # the SDK itself is imported at first use
from tests.sse_client import content_of, data_payloads, iter_events, read_events

HEARTBEAT = 0.5
API_KEY = INBOUND_KEY
AUTH = {"Authorization": f"Bearer {API_KEY}"}
ORIGIN = "https://chat.example.com"
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def blackhole():
    """A listening socket whose accept queue is full: connecting to it times out (loopback only)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(listener.getsockname())
        fillers.append(filler)
    yield listener.getsockname()[1]
    for s in (*fillers, listener):
        s.close()


@pytest.fixture(scope="module")
def hardened(openai_backend, corp_backend, blackhole, tmp_path_factory):
    ticket = {"x-dep-ticket": "${CORP_TICKET}"}
    config = gateway_toml(
        gateway={"api_keys": ["${GATEWAY_API_KEY}"], "heartbeat_seconds": HEARTBEAT, "cors_origins": [ORIGIN],
                 "max_request_bytes": 100000},
        backends={
            "openai": backend(openai_backend.url, streaming=True, read_timeout=2),
            "corp": backend(corp_backend.url, read_timeout=5, headers=ticket),
            "limited": backend(corp_backend.url, max_concurrency=2, headers=ticket),
            "quick_timeout": backend(corp_backend.url, read_timeout=0.2, headers=ticket),
            "slow_timeout": backend(corp_backend.url, read_timeout=1.2, headers=ticket),
            "blackhole": backend(f"http://127.0.0.1:{blackhole}/v1/chat/completions", connect_timeout=0.5),
        },
        models=[model("relay", "openai"), model("built", "corp"), model("limited", "limited"),
                model("quick-timeout", "quick_timeout"), model("slow-timeout", "slow_timeout"), model("blackhole", "blackhole")],
    )
    server = GatewayServer(config, tmp_path_factory.mktemp("hardened"), env={"CORP_TICKET": TICKET, "GATEWAY_API_KEY": API_KEY})
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def chat(gateway, model, stream=True, headers=AUTH, **kwargs):
    body = {"model": model, "messages": MESSAGES, "stream": stream}
    return requests.post(gateway.url + "/v1/chat/completions", json=body, headers=headers, stream=stream, timeout=30, **kwargs)


def hang(exchange):
    exchange.wait_for_client_close(timeout=30)


# --- keep-alives and the first-byte rule -------------------------------------------------------------


def test_slow_non_streaming_backend_gets_keepalives_then_the_answer(hardened, corp_backend):
    two_keepalives_seen = threading.Event()

    def slow(exchange):
        two_keepalives_seen.wait(10)  # the backend thinking until the client has had two keep-alives
        exchange.send_json(200, completion_json("finally"))

    corp_backend.respond_with(slow)
    items = []
    with chat(hardened, "built") as response:
        assert response.status_code == 200
        for item in iter_events(response):
            items.append(item)
            if items.count(("comment", "keep-alive")) == 2:
                two_keepalives_seen.set()
    kinds = [kind for kind, _ in items]
    assert kinds[:2] == ["comment", "comment"] and items[0] == ("comment", "keep-alive")
    assert content_of(data_payloads(items)) == "finally" and items[-1] == ("data", "[DONE]")


def test_sdk_accepts_a_stream_with_keepalives(hardened, corp_backend):
    def slow(exchange):
        # The backend thinking, three heartbeats long: the SDK reads keep-alives before the answer
        # (that the gateway sends them then is the test above).
        time.sleep(3 * HEARTBEAT)
        exchange.send_json(200, completion_json("patience"))

    corp_backend.respond_with(slow)
    with openai.OpenAI(base_url=hardened.url + "/v1", api_key=API_KEY, max_retries=0, timeout=30) as client:
        chunks = list(client.chat.completions.create(model="built", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "patience"


def test_silent_streaming_backend_between_events_gets_keepalives(hardened, openai_backend):
    proceed = threading.Event()

    def pause(exchange):
        exchange.start_sse()
        exchange.event(chunk_json(delta={"role": "assistant", "content": "a"}))
        proceed.wait(10)  # silent until the client has seen a keep-alive
        exchange.event(chunk_json(delta={"content": "b"}, finish_reason="stop"))
        exchange.event("[DONE]")
        exchange.end_sse()

    openai_backend.respond_with(pause)
    items = []
    with chat(hardened, "relay") as response:
        for item in iter_events(response):
            items.append(item)
            if item == ("comment", "keep-alive"):
                proceed.set()
    assert [k for k, _ in items[:2]] == ["data", "comment"]
    assert content_of(data_payloads(items)) == "ab"


def test_keepalives_resume_when_a_slow_client_catches_up_with_a_silent_backend(hardened, openai_backend):
    """Keep-alives that fell due while the client was not reading are still sent once it reads
    again and the backend stays silent: a due keep-alive is not lost while the body writes."""
    reading = threading.Event()

    def big_then_silent(exchange):
        exchange.start_sse()
        exchange.event(chunk_json(delta={"role": "assistant", "content": "a"}))
        exchange.event(chunk_json(delta={"content": "x" * 10_000_000}))  # more than the sockets buffer
        reading.wait(10)
        time.sleep(4 * HEARTBEAT)  # silent (read_timeout is 2 s), once the client reads again
        exchange.event(chunk_json(delta={"content": "b"}, finish_reason="stop"))
        exchange.event("[DONE]")
        exchange.end_sse()

    openai_backend.respond_with(big_then_silent)
    with chat(hardened, "relay") as response:
        items = iter_events(response)
        first = next(items)
        time.sleep(3 * HEARTBEAT)  # the client reads nothing: the gateway's write of the big event waits
        reading.set()
        rest = list(items)
    big = next(i for i, (kind, payload) in enumerate(rest) if kind == "data" and len(payload) > 1_000_000)
    assert ("comment", "keep-alive") in rest[big + 1 :], [kind for kind, _ in rest]
    assert content_of(data_payloads([first, *rest])) == "a" + "x" * 10_000_000 + "b"


def test_backend_failing_after_the_first_keepalive_gives_an_error_event(hardened, corp_backend):
    keepalive_seen = threading.Event()

    def fail_late(exchange):
        keepalive_seen.wait(10)
        exchange.send_json(500, {"error": {"message": "GPU fell over"}})

    corp_backend.respond_with(fail_late)
    items = []
    with chat(hardened, "built") as response:
        assert response.status_code == 200  # the stream had started: the status is already sent
        for item in iter_events(response):
            items.append(item)
            if item[0] == "comment":
                keepalive_seen.set()
    payloads = data_payloads(items)
    assert payloads[0]["error"]["code"] == "backend_server_error" and "GPU fell over" in payloads[0]["error"]["message"]
    assert payloads[1:] == ["[DONE]"]


def test_backend_failing_at_once_gives_the_http_status(hardened, corp_backend):
    corp_backend.respond_with(lambda ex: ex.send_json(503, {"error": {"message": "overloaded"}}))
    response = chat(hardened, "built")
    assert response.status_code == 502 and response.json()["error"]["code"] == "backend_server_error"


# --- timeouts ------------------------------------------------------------------------------------------


def test_connect_timeout_is_504_naming_the_backend(hardened):
    response = chat(hardened, "blackhole", stream=False)
    assert response.status_code == 504
    error = response.json()["error"]
    assert error["code"] == "backend_timeout" and "Backend 'blackhole'" in error["message"] and "connect_timeout" in error["message"]


def test_read_timeout_before_the_first_keepalive_is_504(hardened, corp_backend):
    corp_backend.respond_with(hang)
    response = chat(hardened, "quick-timeout")
    assert response.status_code == 504
    assert "read_timeout" in response.json()["error"]["message"]


def test_read_timeout_after_keepalives_is_an_error_event(hardened, corp_backend):
    corp_backend.respond_with(hang)
    with chat(hardened, "slow-timeout") as response:
        assert response.status_code == 200
        items = read_events(response)
    assert items[0] == ("comment", "keep-alive")
    payloads = data_payloads(items)
    assert payloads[-2]["error"]["code"] == "backend_timeout" and payloads[-1] == "[DONE]"


def test_streaming_backend_silent_mid_stream_times_out_with_an_error_event(hardened, openai_backend, corp_backend):
    openai_backend.respond_with(first_event_then_hold("start"))
    # The relay backend's read_timeout is 2 s; a stalled stream must end with an error, not hang.
    with chat(hardened, "relay") as response:
        payloads = data_payloads(read_events(response))
    assert content_of(payloads) == "start"
    assert payloads[-2]["error"]["code"] == "backend_timeout" and payloads[-1] == "[DONE]"


# --- clients that leave ----------------------------------------------------------------------------------


def _leave_after_first_item(gateway, model):
    with chat(gateway, model) as response:
        assert response.status_code == 200
        next(iter_events(response))
    # leaving the with block closes the connection mid-stream


@pytest.mark.parametrize("model, backend_name, chunked", [
    ("gpt-stream", "openai_backend", True),
    ("gpt-stream", "openai_backend", False),  # a stream that ends with its connection: no chunks
    ("corp-plain", "corp_backend", True),
], ids=["relay", "relay-until-close", "built"])
def test_client_leaving_closes_the_backend_request(gateway, request, model, backend_name, chunked):
    """On the main gateway, whose heartbeat is long (2 s): a gateway that noticed the client only
    when a write failed would close the backend request at least a heartbeat after it left."""
    backend = request.getfixturevalue(backend_name)

    def watch(exchange):
        if model == "gpt-stream":
            exchange.start_sse(chunked=chunked)
            exchange.event(chunk_json(delta={"role": "assistant", "content": "x"}))
        exchange.wait_for_client_close(timeout=30)

    backend.respond_with(watch)
    _leave_after_first_item(gateway, model)
    left = time.monotonic()
    wait_until(lambda: backend.client_closes, timeout=10, message="the backend connection to close")
    # The gateway watches the client socket: the backend request closes at once, not at the next write.
    assert backend.client_closes[0] - left < MAIN_HEARTBEAT


def worker_sockets(gateway) -> int:
    master = gateway.process.pid
    children = open(f"/proc/{master}/task/{master}/children").read().split()
    assert len(children) == 1
    return sum(target.startswith("socket:") for target in fd_targets(children[0]))


def test_two_hundred_disconnects_leave_nothing_held(hardened, openai_backend, corp_backend):
    # This test's own requests, counted here: the shared backends' client_closes may still get a
    # close from the test before (its backend noticing late on a busy machine).
    received, closed = [], []

    def chatty(exchange):  # streams until the gateway closes the connection
        received.append(exchange)
        exchange.start_sse()
        try:
            while True:
                exchange.event(chunk_json(delta={"content": "x"}))
                time.sleep(0.02)  # the backend's pace: 50 events a second
        except OSError:
            closed.append(exchange)

    def thinking(exchange):
        received.append(exchange)
        if exchange.wait_for_client_close(timeout=30) is not None:
            closed.append(exchange)

    openai_backend.respond_with(chatty)
    corp_backend.respond_with(thinking)
    assert requests.get(hardened.url + "/readyz", timeout=5).status_code == 200
    wait_until(lambda: all(b["in_flight"] == 0 for b in requests.get(hardened.url + "/readyz", timeout=5).json()["backends"].values()))
    baseline = worker_sockets(hardened)

    with ThreadPoolExecutor(20) as pool:
        list(pool.map(lambda i: _leave_after_first_item(hardened, "relay" if i % 2 else "built"), range(200)))

    def all_released():
        backends = requests.get(hardened.url + "/readyz", timeout=5).json()["backends"]
        return all(b["in_flight"] == 0 for b in backends.values()) and worker_sockets(hardened) <= baseline

    wait_until(all_released, timeout=15, message="every slot and socket to be released")
    # Every relayed stream reached the backend (its first item came from there); a built answer's
    # client may leave at its first keep-alive, before a slow gateway even sent the request on.
    wait_until(lambda: len(closed) == len(received) >= 100, timeout=15,
               message="the backend to see every request it received closed (at least the 100 relayed ones)")


# --- limits ---------------------------------------------------------------------------------------------


def test_max_concurrency_plus_one_gets_exactly_one_429(hardened, corp_backend):
    release = threading.Event()

    def held(exchange):
        release.wait(10)
        exchange.send_json(200, completion_json("done"))

    corp_backend.respond_with(held)
    with ThreadPoolExecutor(2) as pool:
        first_two = [pool.submit(chat, hardened, "limited", False) for _ in range(2)]
        wait_until(lambda: len(corp_backend.requests) == 2, message="two requests in flight")
        third = chat(hardened, "limited", stream=False)
        release.set()
        statuses = sorted([f.result().status_code for f in first_two] + [third.status_code])
    assert statuses == [200, 200, 429]
    assert third.headers["Retry-After"] == "1" and third.json()["error"]["code"] == "gateway_concurrency_limit"
    assert len(corp_backend.requests) == 2  # the third never reached the backend


def test_oversized_body_is_413(hardened):
    body = {"model": "built", "messages": [{"role": "user", "content": "x" * 200_000}]}
    response = requests.post(hardened.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=10)
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


def test_413_comes_before_the_body_is_read(hardened):
    with socket.create_connection(("127.0.0.1", hardened.port), timeout=10) as conn:
        conn.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {API_KEY}\r\nContent-Length: 1000000000\r\n\r\n".encode()
            + b'{"model": "built"'
        )
        head = conn.recv(65536)  # answered although almost none of the gigabyte was sent
    assert head.startswith(b"HTTP/1.1 413")


# --- inbound auth and CORS ---------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY},
                                     {"Authorization": "Basic " + API_KEY}, {"Authorization": "Bearer " + API_KEY + "x"}])
def test_missing_or_wrong_key_is_401(hardened, headers):
    for response in (chat(hardened, "built", stream=False, headers=headers),
                     requests.get(hardened.url + "/v1/models", headers=headers, timeout=10)):
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["type"] == "authentication_error" and API_KEY not in response.text


def test_right_key_is_accepted_and_health_needs_none(hardened):
    assert requests.get(hardened.url + "/v1/models", headers={"Authorization": "bearer " + API_KEY}, timeout=10).status_code == 200
    for path in ("/healthz", "/readyz", "/"):
        assert requests.get(hardened.url + path, timeout=10).status_code == 200


def test_preflight_passes_without_auth(hardened):
    response = requests.options(hardened.url + "/v1/chat/completions", timeout=10, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"})
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert response.headers["Access-Control-Allow-Headers"] == "authorization, content-type"


@pytest.mark.parametrize("headers, status", [({}, 401), (AUTH, 200)])
def test_allow_origin_is_on_every_answer_errors_too(hardened, headers, status):
    response = requests.get(hardened.url + "/v1/models", headers={**headers, "Origin": ORIGIN}, timeout=10)
    assert response.status_code == status
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN


def test_stream_and_errors_carry_allow_origin(hardened):
    with chat(hardened, "relay", headers={**AUTH, "Origin": ORIGIN}) as response:
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
        read_events(response)
    response = chat(hardened, "nope", headers={**AUTH, "Origin": ORIGIN})
    assert response.status_code == 404 and response.headers["Access-Control-Allow-Origin"] == ORIGIN


def test_other_origins_get_no_allow_origin(hardened):
    response = requests.get(hardened.url + "/v1/models", headers={**AUTH, "Origin": "https://evil.example"}, timeout=10)
    assert "Access-Control-Allow-Origin" not in response.headers


# --- the access log ------------------------------------------------------------------------------------------


def test_access_log_has_one_line_per_request_without_content(hardened):
    with chat(hardened, "relay") as response:
        request_id = response.headers["X-Request-Id"]
        read_events(response)
    line = wait_until(lambda: hardened.access_line(request_id))
    assert line["model"] == "relay" and line["backend"] == "openai" and line["status"] == 200 and line["stream"] is True
    assert line["outcome"] == "completed" and line["duration_ms"] >= line["ttfb_ms"] >= 0
    assert "hi" not in json.dumps({k: v for k, v in line.items() if k != "request_id"})


def test_access_log_tells_how_a_request_ended(hardened, openai_backend, corp_backend):
    corp_backend.respond_with(hang)
    quick = chat(hardened, "quick-timeout")
    openai_backend.respond_with(lambda ex: (ex.start_sse(), ex.event(chunk_json(delta={"content": "x"})), ex.wait_for_client_close(10)))
    with chat(hardened, "relay") as response:
        gone_id = response.headers["X-Request-Id"]
        next(iter_events(response))
    ids = {quick.headers["X-Request-Id"]: "timeout", gone_id: "client_gone"}

    def outcomes():
        found = {l["request_id"]: l["outcome"] for l in hardened.access_lines() if l["request_id"] in ids}
        return found if len(found) == 2 else None

    assert wait_until(outcomes, message="both access-log lines") == ids


def test_client_leaving_before_the_first_byte_stops_the_backend(hardened, corp_backend):
    corp_backend.respond_with(lambda ex: ex.wait_for_client_close(timeout=30))
    body = json.dumps({"model": "built", "messages": MESSAGES, "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", hardened.port), timeout=10) as conn:
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        wait_until(lambda: corp_backend.requests, message="the request to reach the backend")
    # gone before the first keep-alive was due: the backend request is closed all the same
    wait_until(lambda: corp_backend.client_closes, timeout=10, message="the backend connection to close")
    assert "unexpected failure" not in hardened.log()
