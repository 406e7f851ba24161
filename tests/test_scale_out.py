"""Several instances, one Redis: limits that hold across every worker of every instance.

Two gateway instances with two gevent workers each (real gunicorn, this gunicorn.conf.py) share a
real redis-server (Debian's, on a free loopback port, persistence off, with a password written
into redis_url). They prove: global_max_concurrency holds exactly across instances, and a request
refused for want of a slot does not count against its user; per-user request and token limits
hold across instances; Redis killed mid-run gives the configured behaviour ("open": served with
per-worker limits, "closed": 503), and restarting it restores shared limits within 10 s without a
restart of the gateway; a worker killed with SIGKILL mid-stream gives its slot back when its lease
expires, while a running stream keeps its lease alive past the lease time.
"""

import os
import re
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from gateway.limits import scripts
from gateway.limits.admission import user_key
from tests.backends import TestBackend, chunk_json, default_behavior, wait_until
from tests.configs import backend, gateway_toml, model
from tests.conftest import REDIS_PASSWORD, TICKET
from tests.gunicorn_server import GatewayServer
from tests.redis_server import RedisServer
from tests.sse_client import data_payloads, iter_events, read_events

MESSAGES = [{"role": "user", "content": "hi there"}]
LEASE_SECONDS = 3  # GATEWAY_LEASE_SECONDS for the SIGKILL test (30 in production); renewed every second


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:12]}"


def chat(server, model_id, user, stream=False, timeout=30, **extra):
    """One chat request as `user`; a stream is read to its end. Returns the response."""
    body = {"model": model_id, "messages": MESSAGES, "stream": stream, **extra}
    response = requests.post(server.url + "/v1/chat/completions", json=body, headers={"X-OpenWebUI-User-Id": user}, timeout=timeout)
    return response


def status(server) -> dict:
    for attempt in range(3):
        try:
            response = requests.get(server.url + "/status.json", timeout=10)
            break
        except requests.ConnectionError:
            # A connection the kernel handed to a worker a test has just killed is reset: the
            # next one goes to a live worker. (Not what any test here is about.)
            if attempt == 2:
                raise
    assert response.status_code == 200, f"/status.json answered {response.status_code}: {response.text}\n{server.log()}"
    return response.json()


def backend_status(server, name) -> dict:
    return next(b for b in status(server)["backends"] if b["name"] == name)


def refused(server) -> dict:
    return status(server)["limits"]["refused"]


def redis_keys_of(user: str) -> tuple:
    return scripts.user_keys(user_key({"user.id": user}, None, None))


def log_lines(server, pattern) -> list:
    """(pid, line) of each gateway log line matching `pattern`."""
    return [(int(m.group(1)), line) for line in server.log().splitlines()
            if pattern in line and (m := re.search(r"\] \[(\d+)\] \[", line))]


def gateway_config(redis_url, held_url, corp_url, openai_url, failure="open") -> str:
    return gateway_toml(
        gateway={"heartbeat_seconds": 1, "redis_url": redis_url, "redis_failure": failure},
        # Streams of "held" and "stream-model" report no usage (the gateway may not ask for it:
        # drop_params), so only request limits are in play; "usage-stream-model" reports it.
        backends={
            "held": backend(held_url, streaming=True, max_concurrency=64, global_max_concurrency=3, drop_params=["stream_options"]),
            "corp": backend(corp_url, headers={"x-dep-ticket": "${CORP_TICKET}"}),  # answers report total_tokens 10
            "openai": backend(openai_url, streaming=True, drop_params=["stream_options"]),
            "openai_usage": backend(openai_url, streaming=True),
        },
        models=[model("held", "held"), model("corp-model", "corp"), model("stream-model", "openai"), model("usage-stream-model", "openai_usage")],
        limits={"per_user_requests_per_minute": 4, "per_user_tokens_per_minute": 25},
    )


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"), password=REDIS_PASSWORD)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def held_backend():
    backend = TestBackend(streaming=True)
    yield backend
    backend.stop()


@pytest.fixture
def gate(held_backend):
    """The held backend answers only once the gate opens (opened at the end of the test anyway)."""
    gate = threading.Event()

    def behavior(exchange):
        gate.wait(30)
        default_behavior(exchange)

    held_backend.respond_with(behavior)
    yield gate
    gate.set()
    held_backend.reset()


@pytest.fixture(scope="module")
def pair(redis_server, held_backend, corp_backend, openai_backend, tmp_path_factory):
    """Two instances, two workers each, one config file's text, one Redis."""
    config = gateway_config(redis_server.url, held_backend.url, corp_backend.url, openai_backend.url)
    servers = [GatewayServer(config, tmp_path_factory.mktemp(f"instance{i}"), env={"CORP_TICKET": TICKET}, workers=2) for i in (1, 2)]
    try:
        yield [server.wait_ready() for server in servers]
    finally:
        for server in servers:
            server.stop()


def test_the_global_limit_holds_exactly_across_instances(pair, held_backend, redis_server, gate):
    a, b = pair
    bob = unique("bob")
    requests_key = redis_keys_of(bob)[0]
    before = {server.url: refused(server) for server in pair}
    with ThreadPoolExecutor(3) as pool, redis_server.client() as redis:
        held = []
        for server in (a, a, b):  # three slots, taken from both instances (streams: no usage, no tokens)
            held.append(pool.submit(chat, server, "held", bob, stream=True))
            wait_until(lambda: len(held_backend.requests) == len(held), message="the backend to hold the request")
        for server in pair:
            assert backend_status(server, "held")["global_in_flight"] == 3
        lease_pids = {int(lease.split("-")[0]) for lease in redis.zrange(scripts.lease_key("held"), 0, -1)}
        assert len(lease_pids) >= 2 and lease_pids & a.worker_pids() and lease_pids & b.worker_pids()

        for server in (a, b, a, b):
            answer = chat(server, "held", bob)
            assert answer.status_code == 429 and answer.headers["Retry-After"] == "1"
            error = answer.json()["error"]
            assert error["code"] == "gateway_concurrency_limit" and "global_max_concurrency" in error["message"]
            # counted for bob while it was checked, then taken back: a refused request does not count
            wait_until(lambda: redis.zcard(requests_key) == 3, message="the refused request to be taken back")
        assert len(held_backend.requests) == 3

        gate.set()
        assert [future.result().status_code for future in held] == [200, 200, 200]
    for server in pair:
        wait_until(lambda: backend_status(server, "held")["global_in_flight"] == 0, message="the slots to be released")

    assert chat(b, "held", bob, stream=True).status_code == 200  # bob's 4th request: the four refused ones did not count
    over = chat(a, "held", bob, stream=True)
    assert over.status_code == 429 and over.json()["error"]["code"] == "user_rate_limit"
    after = {server.url: refused(server) for server in pair}
    for server in pair:
        assert after[server.url]["global_concurrency"] - before[server.url]["global_concurrency"] == 2
    assert after[a.url]["user_requests"] - before[a.url]["user_requests"] == 1
    metrics = requests.get(a.url + "/metrics", timeout=10).text
    assert re.search(r'^llm_gateway_limit_refusals_total\{limit="global_concurrency"\} \d', metrics, re.M)


def test_a_client_that_leaves_mid_stream_gives_its_global_slot_back_at_once(pair, held_backend, gate):
    a, _ = pair
    with requests.post(a.url + "/v1/chat/completions", headers={"X-OpenWebUI-User-Id": unique("lou")}, stream=True, timeout=30,
                       json={"model": "held", "messages": MESSAGES, "stream": True}) as response:
        assert response.status_code == 200  # the first keep-alive went out: the backend is holding
        wait_until(lambda: backend_status(a, "held")["global_in_flight"] == 1, message="the lease to show")
    # the client hung up: the slot is back long before its 30 s lease would have run out
    wait_until(lambda: backend_status(a, "held")["global_in_flight"] == 0, timeout=5, message="the slot to be released")
    wait_until(lambda: held_backend.client_closes or len(held_backend.requests) == 1, message="the backend request")


def test_per_user_requests_hold_across_instances(pair, redis_server):
    a, b = pair
    alice = unique("alice")
    # streams without usage: only the request limit is in play
    assert [chat(server, "stream-model", alice, stream=True).status_code for server in (a, b, a, b)] == [200] * 4
    for server in (a, b):
        answer = chat(server, "stream-model", alice, stream=True)
        assert answer.status_code == 429 and answer.json()["error"]["code"] == "user_rate_limit"
        assert 50 <= int(answer.headers["Retry-After"]) <= 60  # whole seconds until the first leaves the window
    assert chat(b, "stream-model", unique("carl"), stream=True).status_code == 200  # another user
    with redis_server.client() as redis:
        assert redis.zcard(redis_keys_of(alice)[0]) == 4


def test_per_user_tokens_hold_across_instances(pair, redis_server):
    a, b = pair
    tina = unique("tina")
    token_sum = redis_keys_of(tina)[2]
    with redis_server.client() as redis:
        for count, server in enumerate((a, b, a), start=1):
            assert chat(server, "corp-model", tina).status_code == 200  # 10 tokens each, counted as the answer ends
            wait_until(lambda: redis.get(token_sum) == str(10 * count), message=f"{10 * count} tokens counted")
        answer = chat(b, "corp-model", tina)  # 30 >= 25
        assert answer.status_code == 429
        error = answer.json()["error"]
        assert error["code"] == "user_rate_limit" and "per_user_tokens_per_minute" in error["message"]
        assert 50 <= int(answer.headers["Retry-After"]) <= 60

        # a stream counts what its backend reported in its usage chunk
        sam = unique("sam")
        response = requests.post(b.url + "/v1/chat/completions", headers={"X-OpenWebUI-User-Id": sam}, stream=True, timeout=30,
                                 json={"model": "usage-stream-model", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}})
        payloads = data_payloads(read_events(response))
        usage = [p["usage"] for p in payloads if isinstance(p, dict) and p.get("usage")]
        assert len(usage) == 1 and usage[0]["total_tokens"] > 0
        wait_until(lambda: redis.get(redis_keys_of(sam)[2]) == str(usage[0]["total_tokens"]), message="the stream's tokens counted")
        # and so does one whose client did not ask (Open WebUI without the usage capability): the
        # gateway asked the backend, and the client gets no usage chunk
        sue = unique("sue")
        payloads = data_payloads(read_events(chat(a, "usage-stream-model", sue, stream=True)))
        assert not any(isinstance(p, dict) and "usage" in p for p in payloads) and payloads[-1] == "[DONE]"
        wait_until(lambda: redis.get(redis_keys_of(sue)[2]) == str(usage[0]["total_tokens"]), message="the unasked stream's tokens counted")


@pytest.fixture
def own_redis(tmp_path):
    server = RedisServer(tmp_path / "redis", password=REDIS_PASSWORD)
    yield server
    server.stop()


@pytest.fixture
def own_held_backend():
    """For a test with its own Redis and gateway: sharing no server of the module's, it may run in
    another pytest-xdist process than the module's other tests, at the same time."""
    backend = TestBackend(streaming=True)
    yield backend
    backend.stop()


def test_a_worker_killed_mid_stream_gives_its_slot_back_when_the_lease_expires(own_redis, own_held_backend, corp_backend, openai_backend, tmp_path):
    release = threading.Event()

    def first_event_then_hold(exchange):
        exchange.start_sse()
        exchange.event(chunk_json(delta={"role": "assistant", "content": "thinking"}))
        release.wait(30)
        exchange.event(chunk_json(delta={}, finish_reason="stop"))
        exchange.event("[DONE]")
        exchange.end_sse()

    own_held_backend.respond_with(first_event_then_hold)
    config = gateway_config(own_redis.url, own_held_backend.url, corp_backend.url, openai_backend.url).replace(
        "global_max_concurrency = 3", "global_max_concurrency = 1")
    server = GatewayServer(config, tmp_path / "gateway", env={"CORP_TICKET": TICKET, "GATEWAY_LEASE_SECONDS": str(LEASE_SECONDS)}, workers=2)
    stream = None
    try:
        server.wait_ready()
        stream = requests.post(server.url + "/v1/chat/completions", headers={"X-OpenWebUI-User-Id": "kim"}, stream=True, timeout=30,
                               json={"model": "held", "messages": MESSAGES, "stream": True})
        events = iter_events(stream)  # kept open: the client stays
        assert stream.status_code == 200 and "thinking" in next(p for kind, p in events if kind == "data")
        wait_until(lambda: backend_status(server, "held")["global_in_flight"] == 1, message="the lease to show")

        # A running stream renews its lease: twice the lease time later it still holds the slot.
        until = time.monotonic() + 2 * LEASE_SECONDS
        while time.monotonic() < until:
            assert backend_status(server, "held")["global_in_flight"] == 1
            refused_answer = chat(server, "held", unique("other"))
            assert refused_answer.status_code == 429 and "global_max_concurrency" in refused_answer.json()["error"]["message"]
            time.sleep(0.5)  # the passing of time is what is under test here

        with own_redis.client() as redis:
            (lease, expires_ms), = redis.zrange(scripts.lease_key("held"), 0, -1, withscores=True)
            pid = int(lease.split("-")[0])
            assert pid in server.worker_pids()
            os.kill(pid, signal.SIGKILL)  # no cleanup runs: only the lease's expiry can free the slot
            killed_at = time.monotonic()
            seconds, micros = redis.time()
            left = expires_ms / 1000 - (seconds + micros / 1e6)
            assert 0 < left <= LEASE_SECONDS
        assert backend_status(server, "held")["global_in_flight"] == 1  # not released: nothing could
        wait_until(lambda: backend_status(server, "held")["global_in_flight"] == 0, timeout=LEASE_SECONDS + 5, interval=0.1,
                   message="the dead worker's lease to expire")
        assert time.monotonic() - killed_at <= left + 1.5
        release.set()
        assert chat(server, "held", unique("lee"), stream=True).status_code == 200  # the slot is usable again
    finally:
        release.set()
        if stream is not None:
            stream.close()
        server.stop()


def test_closed_answers_503_while_redis_is_gone_and_recovers_by_itself(own_redis, own_held_backend, corp_backend, openai_backend, tmp_path):
    config = gateway_config(own_redis.url, own_held_backend.url, corp_backend.url, openai_backend.url, failure="closed")
    server = GatewayServer(config, tmp_path / "gateway", env={"CORP_TICKET": TICKET}, workers=2)
    try:
        server.wait_ready()
        assert chat(server, "stream-model", unique("uma"), stream=True).status_code == 200
        own_redis.kill()
        for _ in range(4):  # whichever worker answers
            started = time.monotonic()
            answer = chat(server, "stream-model", unique("uma"), stream=True)
            assert time.monotonic() - started < 1.0  # at most 0.4 s of it waiting on the dead Redis
            assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
            assert answer.json()["error"]["code"] == "limits_unavailable"
        assert status(server)["redis"] == {"state": "unreachable", "failure": "closed"}

        own_redis.start()
        restarted = time.monotonic()
        gone = {pid for pid, _ in log_lines(server, "is unreachable")}
        assert gone
        wait_until(lambda: {pid for pid, _ in log_lines(server, "is reachable again")} >= gone, timeout=10, message="every worker to reconnect")
        assert time.monotonic() - restarted <= 10
        assert chat(server, "stream-model", unique("uma"), stream=True).status_code == 200
        assert status(server)["redis"] == {"state": "ok", "failure": "closed"}
        for pid in gone:  # one line when it went, one when it came back, per worker
            assert len([1 for p, _ in log_lines(server, "is unreachable") if p == pid]) == 1
            assert len([1 for p, _ in log_lines(server, "is reachable again") if p == pid]) == 1
    finally:
        server.stop()


def test_open_serves_with_per_worker_limits_while_redis_is_gone_then_shares_again(pair, redis_server):
    """Last in this module: it kills the module's Redis (and starts it again)."""
    a, b = pair
    redis_server.kill()
    started = time.monotonic()
    assert chat(a, "stream-model", unique("vic"), stream=True).status_code == 200
    assert time.monotonic() - started < 1.5
    for server in pair:
        body = status(server)
        assert body["redis"] == {"state": "unreachable", "failure": "open"} and body["limits"]["shared"] is False
        ready = requests.get(server.url + "/readyz", timeout=10)
        assert ready.status_code == 200
        assert "Redis is unreachable" in requests.get(server.url + "/", timeout=10).text

    # Meanwhile each worker holds the limit on its own: a user gets 4 per worker, 8 per instance at most.
    walt = unique("walt")
    answers = [chat(a, "stream-model", walt, stream=True) for _ in range(12)]
    admitted = sum(answer.status_code == 200 for answer in answers)
    assert 4 <= admitted <= 8
    assert all(answer.json()["error"]["code"] == "user_rate_limit" for answer in answers if answer.status_code != 200)

    redis_server.start()
    restarted = time.monotonic()
    gone = {pid for server in pair for pid, _ in log_lines(server, "is unreachable")}
    assert gone
    wait_until(lambda: {pid for server in pair for pid, _ in log_lines(server, "is reachable again")} >= gone, timeout=10,
               message="every worker that saw Redis go to see it back")
    assert time.monotonic() - restarted <= 10
    for server in pair:
        assert status(server)["redis"] == {"state": "ok", "failure": "open"}
        for pid in {pid for pid, _ in log_lines(server, "is unreachable")}:
            assert len([1 for p, _ in log_lines(server, "is unreachable") if p == pid]) == 1

    # Shared again: four requests over both instances, the fifth refused, all counted in Redis.
    xena = unique("xena")
    assert [chat(server, "stream-model", xena, stream=True).status_code for server in (a, b, a, b)] == [200] * 4
    assert chat(b, "stream-model", xena, stream=True).json()["error"]["code"] == "user_rate_limit"
    with redis_server.client() as redis:
        assert redis.zcard(redis_keys_of(xena)[0]) == 4
