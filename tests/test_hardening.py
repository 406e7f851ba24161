"""Hostile input and routine operations never take a worker down (one test per way it broke)."""

import json
import socket
import time

import jwt
import pytest
import requests

from app import create_app
from gateway.config import parse_config
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
    body = {"model": "corp-plain", "messages": MESSAGES, field: [1] * 4_900_000}  # 9.8 MB
    data = json.dumps(body, separators=(",", ":")).encode()
    assert len(data) > 9_700_000
    # Before the fix this took 15-30 s (one error built per item) and stalled the worker.
    response = requests.post(gateway.url + "/v1/chat/completions", data=data, headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == f"{field}.0"
    assert requests.get(gateway.url + "/healthz", timeout=5).status_code == 200


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
        answer = b""
        sock.setblocking(False)
        while not answer and time.monotonic() - started < 8:  # one byte every 0.2 s: never "silent"
            try:
                sock.sendall(b" ")
            except OSError:
                break
            try:
                answer = sock.recv(65536)
            except BlockingIOError:
                time.sleep(0.2)  # the trickle itself: the scenario, not a wait for a condition
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
