"""Hostile input and routine operations never take a worker down (one test per way it broke)."""

import base64
import json
import select
import socket
import time

import jwt
import pytest
import requests

from app import create_app
from gateway.config import parse_config
from tests.backends import wait_until
from tests.configs import backend, gateway_toml, model
from tests.gunicorn_server import GatewayServer

MESSAGES = [{"role": "user", "content": "hi"}]
JWT_SECRET = "owui-jwt-secret-for-hardening-tests"
LIMIT = 100_000


def guarded_config(openai_url: str) -> str:
    return gateway_toml(
        gateway={"body_timeout": 1, "max_request_bytes": LIMIT, "user_jwt_secret": JWT_SECRET, "heartbeat_seconds": 2},
        backends={"openai": backend(openai_url, streaming=True, headers={"User-Id": "{user.id|nobody}"})},
        models=[model("relay", "openai")],
    )


@pytest.fixture(scope="module")
def guarded(openai_backend, tmp_path_factory):
    server = GatewayServer(guarded_config(openai_backend.url), tmp_path_factory.mktemp("guarded"))
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def guarded_app(openai_backend):
    return create_app(parse_config(guarded_config(openai_backend.url), "guarded"))


def raw_exchange(server, head: bytes, body_parts=(), timeout=10.0) -> tuple[bytes, bool]:
    """Sends `head` and each body part as they are; returns what came back and whether the
    gateway then closed the connection."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(head)
        for part in body_parts:
            sock.sendall(part)
        answer = b""
        while b"\r\n\r\n" not in answer:
            piece = sock.recv(65536)
            if not piece:
                return answer, True
            answer += piece
        head_text, _, rest = answer.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head_text.split(b"\r\n") if line.lower().startswith(b"content-length")))
        while len(rest) < length:
            rest += sock.recv(65536)
        try:
            closed = sock.recv(1) == b""
        except ConnectionResetError:  # closed with some of our body unread: the kernel resets instead
            closed = True
        except socket.timeout:
            closed = False
        return head_text + b"\r\n\r\n" + rest, closed


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def error_of(answer: bytes) -> dict:
    return json.loads(answer.partition(b"\r\n\r\n")[2])["error"]


# --- 1. huge lists are answered at once ---------------------------------------------------------------


@pytest.mark.parametrize("field", ["tools", "messages"])
def test_a_ten_megabyte_list_of_bad_items_is_answered_at_once(gateway, field):
    head = json.dumps({"model": "corp-plain", "messages": MESSAGES} if field != "messages" else {"model": "corp-plain"})
    data = (head[:-1] + f', "{field}": [' + "1," * 4_899_999 + "1]}").encode()  # 9.8 MB, written without a 0.6 s json.dumps
    assert len(data) > 9_700_000
    # Before the fix this took 15-30 s (one error built per item) and stalled the worker.
    response = requests.post(gateway.url + "/v1/chat/completions", data=data, headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == f"{field}.0"
    assert requests.get(gateway.url + "/healthz", timeout=5).status_code == 200


def test_a_large_bad_body_is_one_access_log_line_never_a_traceback(gateway):
    """Bodies over 256 KiB are parsed off the event loop; the client's mistake must not come back
    from the thread pool as a traceback in the log (a client could flood it)."""
    data = json.dumps({"model": "corp-plain", "messages": [{"role": "wizard", "content": "x" * 300_000}]}).encode()
    before = len(gateway.log())
    response = requests.post(gateway.url + "/v1/chat/completions", data=data, headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 400 and response.json()["error"]["param"] == "messages.0.role"
    request_id = response.headers["X-Request-Id"]
    wait_until(lambda: request_id in gateway.log()[before:], message="the access-log line")
    written = gateway.log()[before:]
    assert "Traceback" not in written and "InvalidRequest" not in written
    # Nothing but access-log lines (an earlier request's may land after `before`), ours once.
    records = [json.loads(line) for line in written.splitlines() if line.strip()]
    assert [record["request_id"] for record in records].count(request_id) == 1


# --- 2. bodies that never arrive ----------------------------------------------------------------------


def test_a_stalled_body_gets_408_and_the_connection_closes(guarded):
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    answer, closed = raw_exchange(guarded, head, [b'{"model":'])
    assert status_of(answer) == 408, answer
    error = error_of(answer)
    assert error["code"] == "request_timeout" and "body_timeout" in error["message"]
    assert closed


def test_a_trickled_body_is_timed_out_as_a_whole(guarded):
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=10) as sock:
        sock.sendall(head)
        started = time.monotonic()
        readable = False
        while not readable and time.monotonic() - started < 8:  # one byte every 0.2 s: never "silent"
            try:
                sock.sendall(b" ")
            except OSError:
                break  # the gateway answered and closed: read what it said below
            readable, _, _ = select.select([sock], [], [], 0.2)  # the trickle's pace: the scenario itself
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408"), answer


# --- 4. chunked framing -------------------------------------------------------------------------------

CHUNKED_HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("framing", [b"zz\r\nabc\r\n0\r\n\r\n", b"-5\r\nabcde\r\n0\r\n\r\n", b"3\r\nabcXX0\r\n\r\n"])
def test_malformed_chunked_framing_is_400(guarded, framing):
    answer, _ = raw_exchange(guarded, CHUNKED_HEAD, [framing])
    assert status_of(answer) == 400, answer
    assert "chunked" in error_of(answer)["message"]
    assert "Traceback" not in guarded.log()


def test_a_chunked_body_over_the_limit_is_413_even_when_its_start_is_valid_json(guarded):
    valid = json.dumps({"model": "relay", "messages": MESSAGES}).encode()
    filler = b" " * (LIMIT + 1000)  # JSON allows trailing whitespace: cut at the limit it would parse
    parts = [f"{len(valid):x}\r\n".encode() + valid + b"\r\n", f"{len(filler):x}\r\n".encode() + filler + b"\r\n", b"0\r\n\r\n"]
    answer, closed = raw_exchange(guarded, CHUNKED_HEAD, parts)
    assert status_of(answer) == 413, answer
    assert error_of(answer)["code"] == "request_too_large"


# --- 6. numbers that are not JSON -----------------------------------------------------------------------


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_json_numbers_are_400(app_client, number):
    data = b'{"model":"corp-plain","messages":[{"role":"user","content":"hi"}],"temperature":' + number + b"}"
    response = app_client.post("/v1/chat/completions", data=data, content_type="application/json")
    assert response.status_code == 400
    assert "JSON" in response.get_json()["error"]["message"]


# --- 7. clock skew on signed user tokens --------------------------------------------------------------


def test_a_token_issued_a_second_ahead_is_accepted(guarded_app, openai_backend):
    now = int(time.time())
    token = jwt.encode({"sub": "u-17", "exp": now + 300, "iat": now + 1, "nbf": now + 1}, JWT_SECRET, algorithm="HS256")
    response = guarded_app.test_client().post(
        "/v1/chat/completions", json={"model": "relay", "messages": MESSAGES}, headers={"X-OpenWebUI-User-Jwt": token}
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert openai_backend.last.headers["user-id"] == "u-17"


def test_a_token_far_in_the_future_is_still_refused(guarded_app):
    now = int(time.time())
    token = jwt.encode({"sub": "u-17", "exp": now + 600, "nbf": now + 120}, JWT_SECRET, algorithm="HS256")
    response = guarded_app.test_client().post(
        "/v1/chat/completions", json={"model": "relay", "messages": MESSAGES}, headers={"X-OpenWebUI-User-Jwt": token}
    )
    assert response.status_code == 401


# --- 11. usage is recorded whenever the backend reported it -------------------------------------------


def test_usage_of_a_built_stream_is_logged_without_include_usage(gateway):
    from tests.backends import wait_until

    response = requests.post(gateway.url + "/v1/chat/completions", json={"model": "corp-plain", "stream": True, "messages": MESSAGES}, timeout=30)
    assert response.status_code == 200 and '"usage"' not in response.text  # not asked for: not sent
    request_id = response.headers["X-Request-Id"]
    line = wait_until(lambda: gateway.access_line(request_id), message="the request's access-log line")
    assert line["total_tokens"] == 10 and line["prompt_tokens"] == 7


# --- 13. a backend's own error text is one short line -------------------------------------------------


def test_a_long_plain_text_error_reaches_the_client_as_one_short_line(app_client, corp_backend):
    trace = "Traceback (most recent call last):\n" + "  File \"/srv/model.py\", line 1, in run\n" * 60 + "RuntimeError: boom"
    corp_backend.respond_with(lambda ex: ex.send_raw(500, "text/plain", trace.encode()))
    response = app_client.post("/v1/chat/completions", json={"model": "corp-plain", "messages": MESSAGES})
    assert response.status_code == 502
    message = response.get_json()["error"]["message"]
    detail = message.split(": ", 1)[1]
    assert len(detail) <= 300 and "\n" not in message and detail.startswith("Traceback")


NGINX_PAGE = (b"<html>\r\n<head><title>400 Bad Request</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n"
              b"<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")


@pytest.mark.parametrize("content_type, body, said", [
    ("text/html", NGINX_PAGE, "400 Bad Request 400 Bad Request nginx"),  # a proxy's page: its visible text
    (None, b"<!DOCTYPE html><html><head><script>var x = '<b>';</script><title>Oops</title></head><body><p>context &amp; more</p></body></html>",
     "Oops context & more"),
    (None, b"prompt too long for this model\n", "prompt too long for this model"),  # no Content-Type: text all the same
    ("text/plain", "\x1b[31mValueError\x1b[0m: bad input".encode(), "ValueError: bad input"),
    ("text/plain; charset=iso-8859-1", "ungültig".encode("latin-1"), "ung\ufffdltig"),  # declared text: read whatever its bytes
    ("application/json", json.dumps({"detail": [{"loc": ["body", "top_k"], "msg": "Input should be a valid integer"}]}).encode(),
     "body.top_k: Input should be a valid integer"),  # FastAPI's validation errors
])
def test_a_backends_error_text_of_any_text_kind_reaches_the_client(app_client, corp_backend, content_type, body, said):
    def answer(exchange):
        exchange.handler.send_response(400)
        if content_type:
            exchange.handler.send_header("Content-Type", content_type)
        exchange.handler.send_header("Content-Length", str(len(body)))
        exchange.handler.end_headers()
        exchange.handler.wfile.write(body)

    corp_backend.respond_with(answer)
    response = app_client.post("/v1/chat/completions", json={"model": "corp-plain", "messages": MESSAGES})
    assert response.status_code == 400
    assert response.get_json()["error"]["message"] == f"Backend 'corp' rejected the request (HTTP 400): {said}"


def test_a_backends_error_body_that_is_no_text_adds_nothing(app_client, corp_backend):
    corp_backend.respond_with(lambda ex: ex.send_raw(400, "application/octet-stream", b"\x00\x01\xff"))
    response = app_client.post("/v1/chat/completions", json={"model": "corp-plain", "messages": MESSAGES})
    assert response.get_json()["error"]["message"] == "Backend 'corp' rejected the request (HTTP 400)"


# --- 14. a plain http:// backend is not "certificates verified" -----------------------------------------


def test_status_says_plain_http_for_an_http_backend(app_client):
    backends = {b["name"]: b for b in app_client.get("/status.json").get_json()["backends"]}
    assert backends["corp"]["tls"] == "plain http"
    page = app_client.get("/").get_data(as_text=True)
    assert "plain HTTP" in page and "certificates verified" not in page


# --- 8, 9, 10: header values, redaction -----------------------------------------------------------------

HEADER_SECRET = "tok%41bc-Zq9"


@pytest.fixture(scope="module")
def headers_app(corp_backend):
    from tests.backends import closed_port

    config = gateway_toml(
        backends={
            "gauss": backend(corp_backend.url, headers={"x-dep-ticket": "${CORP_TICKET}", "X-Auth": "${HEADER_SECRET};{user.name}", "X-System": "gauss", "User-Id": "{user.id|nobody}"}),
            "down": backend(f"http://127.0.0.1:{closed_port()}/v1/chat/completions", headers={"X-System": "down"}),
        },
        models=[model("gauss-38b", "gauss"), model("down-38b", "down")],
    )
    from tests.conftest import TICKET

    return create_app(parse_config(config, "headers", {"CORP_TICKET": TICKET, "HEADER_SECRET": HEADER_SECRET}))


def test_a_secret_is_sent_exactly_even_beside_an_encoded_user_name(headers_app, corp_backend):
    response = headers_app.test_client().post(
        "/v1/chat/completions", json={"model": "gauss-38b", "messages": MESSAGES}, headers={"X-OpenWebUI-User-Name": "%ED%99%8D%EA%B8%B8%EB%8F%99"}
    )
    assert response.status_code == 200
    assert corp_backend.last.headers["x-auth"] == HEADER_SECRET + ";%ED%99%8D%EA%B8%B8%EB%8F%99"  # 홍길동, encoded once


def test_a_user_value_too_long_for_a_header_is_400_naming_the_field(headers_app, corp_backend):
    response = headers_app.test_client().post("/v1/chat/completions", json={"model": "gauss-38b", "messages": MESSAGES, "user": "u" * 300_000})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["param"] == "user" and "{user.id}" in error["message"] and "User-Id" in error["message"]
    assert not corp_backend.requests


def test_a_header_value_too_long_names_the_request_header_it_came_from(headers_app, corp_backend):
    response = headers_app.test_client().post(
        "/v1/chat/completions", json={"model": "gauss-38b", "messages": MESSAGES}, headers={"X-OpenWebUI-User-Name": "n" * 2000}
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "X-OpenWebUI-User-Name"
    assert not corp_backend.requests


def test_names_hosts_and_ports_stay_readable_in_errors(headers_app):
    error = headers_app.test_client().post("/v1/chat/completions", json={"model": "down-38b", "messages": MESSAGES}).get_json()["error"]
    assert "Backend 'down' refused the connection at http://127.0.0.1:" in error["message"]
    assert "[redacted]" not in error["message"]


def _base64_forms(secret: str) -> list:
    raw = secret.encode()
    standard, urlsafe = base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()
    return [standard, standard.rstrip("="), urlsafe, urlsafe.rstrip("=")]


@pytest.mark.parametrize("form", [HEADER_SECRET, "tok%2541bc-Zq9", json.dumps(HEADER_SECRET)[1:-1], *_base64_forms(HEADER_SECRET)])
def test_a_secret_echoed_back_in_any_form_is_redacted(headers_app, corp_backend, form):
    corp_backend.respond_with(lambda ex: ex.send_json(400, {"error": {"message": f"bad auth {form} for model gauss-38b"}}))
    error = headers_app.test_client().post("/v1/chat/completions", json={"model": "gauss-38b", "messages": MESSAGES}).get_json()["error"]
    assert form not in error["message"] and "[redacted]" in error["message"]
    assert "gauss-38b" in error["message"] and "Backend 'gauss'" in error["message"]


# --- 16. a client leaving a stream: false request closes the backend request -----------------------------


def test_a_client_leaving_a_non_streaming_request_closes_the_backend_request(gateway, corp_backend):
    from tests.backends import wait_until

    corp_backend.respond_with(lambda exchange: exchange.wait_for_client_close(timeout=30))  # a backend still thinking
    body = json.dumps({"model": "corp-plain", "stream": False, "messages": MESSAGES}).encode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        wait_until(lambda: corp_backend.requests, message="the request to reach the backend")
    # The client is gone; before, the backend kept computing until read_timeout (300 s here).
    wait_until(lambda: corp_backend.client_closes, timeout=10, message="the backend connection to close")
    line = wait_until(lambda: next((json.loads(l) for l in gateway.log().splitlines() if l.startswith("{") and '"client_gone"' in l and '"stream":false' in l), None),
                      message="the access-log line")
    assert line["model"] == "corp-plain"


# --- 5, 12: graceful stop and stalled clients -------------------------------------------------------------


@pytest.fixture
def ending(openai_backend, tmp_path):
    config = gateway_toml(
        gateway={"heartbeat_seconds": 0.3, "stalled_client_seconds": 1},
        backends={"openai": backend(openai_backend.url, streaming=True)},
        models=[model("relay", "openai")],
    )
    server = GatewayServer(config, tmp_path, env={"GATEWAY_GRACEFUL_TIMEOUT": "3"}).wait_ready()
    yield server
    server.stop()


def test_streams_still_open_at_the_graceful_deadline_end_with_an_error_event_and_done(ending, openai_backend):
    import signal
    import threading

    from tests.backends import wait_until
    from tests.sse_client import data_payloads, read_events

    openai_backend.respond_with(lambda exchange: exchange.paced_reply(["x"] * 200, 0.1))  # 20 s: longer than the grace
    result = {}

    def stream():
        body = {"model": "relay", "stream": True, "messages": MESSAGES}
        with requests.post(ending.url + "/v1/chat/completions", json=body, stream=True, timeout=30) as response:
            result["request_id"] = response.headers["X-Request-Id"]
            result["payloads"] = data_payloads(read_events(response))

    reader = threading.Thread(target=stream)
    reader.start()
    wait_until(lambda: openai_backend.requests, message="the stream to start")
    ending.process.send_signal(signal.SIGTERM)
    reader.join(timeout=20)
    payloads = result["payloads"]
    assert payloads[-1] == "[DONE]"
    assert "shutting down" in payloads[-2]["error"]["message"] and payloads[-2]["error"]["code"] == "gateway_shutting_down"
    assert any(p.get("choices") for p in payloads[:-2])  # it was cut mid-answer
    assert ending.wait_exit(timeout=20) == 0
    line = next(json.loads(l) for l in ending.log().splitlines() if l.startswith("{") and result["request_id"] in l)
    assert line["outcome"] == "shutting_down"


def test_a_client_that_stops_reading_is_dropped_with_one_warning_line(ending, openai_backend):
    from tests.backends import chunk_json, wait_until

    sent = []

    def flood(exchange):  # streams until the gateway closes the connection
        exchange.start_sse()
        try:
            for _ in range(20000):
                exchange.event(chunk_json(delta={"content": "y" * 4000}))
                sent.append(1)
        except OSError:
            exchange.backend.note_close(time.monotonic())

    openai_backend.respond_with(flood)
    body = json.dumps({"model": "relay", "stream": True, "messages": MESSAGES}).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", ending.port))
    try:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        # Never read: the gateway's writes stall, then the backend's.
        wait_until(lambda: openai_backend.client_closes, timeout=20, message="the backend request to be closed")
        warnings = [line for line in ending.log().splitlines() if "accepted no bytes" in line]
        assert len(warnings) == 1 and "stalled_client_seconds" in warnings[0]
        assert "Traceback" not in ending.log() and "Socket error" not in ending.log()
        assert len(sent) < 20000
    finally:
        sock.close()
