"""Replicas through real gunicorn + gevent, real loopback backends: routing strategies, active
health checks with one prober per instance, and two instances that agree through Redis.
(The strategy objects alone, and every config error, are in test_strategies.py.)"""

import json
import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.backends import TestBackend, default_behavior, first_event_then_hold, wait_until
from tests.configs import backend, gateway_toml
from tests.gunicorn_server import GatewayServer
from tests.redis_server import RedisServer
from tests.sse_client import content_of, data_payloads, read_events

PROBE = {"health_interval_seconds": 0.2, "health_timeout_seconds": 1, "healthy_after": 2}
NO_BREAKER = {"failure_threshold": 1_000_000}


def servers(count):
    started = [TestBackend(streaming=True) for _ in range(count)]
    return started


def health_url(server: TestBackend) -> str:
    return server.url.replace("/v1/chat/completions", "/health")


def models(*entries) -> list:
    return [{"id": model_id, "backends": list(names), "strategy": strategy} for model_id, strategy, names in entries]


def chat(server, model_id, chat_id=None, messages=None, stream=False, **headers):
    if chat_id:
        headers["X-OpenWebUI-Chat-Id"] = chat_id
    body = {"model": model_id, "messages": messages or [{"role": "user", "content": "hi"}], "stream": stream}
    response = requests.post(server.url + "/v1/chat/completions", json=body, headers=headers, stream=stream, timeout=30)
    assert response.status_code == 200, response.text
    return response


def answered_by(server, model_id, **kwargs) -> str:
    response = chat(server, model_id, **kwargs)
    if kwargs.get("stream"):
        content_of(data_payloads(read_events(response)))
    return response.headers["X-Gateway-Backend"]


def status(server) -> dict:
    return requests.get(server.url + "/status.json", timeout=10).json()


def backend_status(server, name) -> dict:
    return next(b for b in status(server)["backends"] if b["name"] == name)


@pytest.fixture(scope="module")
def replicas():
    """Three loopback backends standing for three GPU replicas of one model."""
    started = servers(3)
    yield started
    for server in started:
        server.stop()


@pytest.fixture(autouse=True)
def _reset(request):
    yield
    for name in ("replicas", "probed_servers", "pair_servers"):
        if name in request.fixturenames:
            for server in request.getfixturevalue(name):
                server.reset()


@pytest.fixture(scope="module")
def routed(replicas, tmp_path_factory):
    """One worker (least_busy and round_robin count per worker), every strategy."""
    a, b, c = replicas
    config = gateway_toml(
        gateway={"heartbeat_seconds": 1},
        backends={
            "gpu1": backend(a.url, streaming=True, **NO_BREAKER),
            "gpu2": backend(b.url, streaming=True, **NO_BREAKER),
            "gpu3": backend(c.url, streaming=True, **NO_BREAKER),
            # the same three, weighted 3:2:1
            "big": backend(a.url, streaming=True, weight=3, **NO_BREAKER),
            "mid": backend(b.url, streaming=True, weight=2, **NO_BREAKER),
            "small": backend(c.url, streaming=True, weight=1, **NO_BREAKER),
        },
        models=models(
            ("rr", "round_robin", ("gpu1", "gpu2", "gpu3")),
            ("rr-weighted", "round_robin", ("big", "mid", "small")),
            ("busy", "least_busy", ("gpu1", "gpu2")),
            ("sticky", "affinity", ("gpu1", "gpu2", "gpu3")),
            ("sticky-weighted", "affinity", ("big", "mid", "small")),
            ("ordered", "ordered", ("gpu1", "gpu2", "gpu3")),
        ),
    )
    server = GatewayServer(config, tmp_path_factory.mktemp("routed"), workers=1)
    try:
        yield server.wait_ready()
    finally:
        server.stop(signal.SIGINT)  # quick: no stream of this module outlives its test


# --- strategies ---------------------------------------------------------------------------------


def spread(server, model_id, count, **kwargs) -> Counter:
    """Which backend answered each of `count` requests, sent six at a time."""
    with ThreadPoolExecutor(6) as pool:
        return Counter(pool.map(lambda n: answered_by(server, model_id, **{k: v(n) for k, v in kwargs.items()}), range(count)))


def test_round_robin_spreads_300_requests_evenly_and_by_weight(routed):
    """300 over three equal backends, then 120 over weights 3:2:1."""
    even = spread(routed, "rr", 300, stream=lambda n: n % 2 == 0)
    assert set(even) == {"gpu1", "gpu2", "gpu3"} and all(90 <= count <= 110 for count in even.values()), even
    weighted = spread(routed, "rr-weighted", 120)
    for name, expected in (("big", 60), ("mid", 40), ("small", 20)):
        assert abs(weighted[name] - expected) <= 0.1 * expected, weighted


def test_ordered_keeps_the_config_order(routed):
    assert {answered_by(routed, "ordered") for _ in range(10)} == {"gpu1"}


def test_least_busy_steers_new_requests_away_from_a_backend_holding_slow_streams(routed, replicas):
    slow, fast = replicas[0], replicas[1]
    slow.respond_with(first_event_then_hold("thinking..."))
    held = []
    try:
        while not held:  # until a stream lands on the slow one (a tie at first: round robin)
            response = chat(routed, "busy", stream=True)
            if response.headers["X-Gateway-Backend"] == "gpu1":
                held.append(response)
            else:
                content_of(data_payloads(read_events(response)))
        later = [answered_by(routed, "busy", stream=n % 2 == 0) for n in range(20)]
        assert later == ["gpu2"] * 20  # one in flight on gpu1, none on gpu2: every new one goes to gpu2
        assert not any(r.method == "POST" for r in slow.requests[1:])
        assert len([r for r in fast.requests if r.method == "POST"]) >= 20
    finally:
        for response in held:
            response.close()
    wait_until(lambda: len(slow.client_closes) == 1, timeout=5, message="the held stream to end")
    slow.respond_with(default_behavior)
    assert Counter(answered_by(routed, "busy") for _ in range(10)) == {"gpu1": 5, "gpu2": 5}  # idle again: ties, round robin


def conversation(turns):
    """A growing chat: a system message, then user and assistant turns."""
    messages = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "question 0"}]
    for turn in range(turns):
        yield list(messages)
        messages += [{"role": "assistant", "content": f"answer {turn}"}, {"role": "user", "content": f"question {turn + 1}"}]


def test_affinity_keeps_20_turns_of_a_chat_on_one_backend(routed):
    by_chat_id = {answered_by(routed, "sticky", chat_id="chat-7f3a", messages=m, stream=True) for m in conversation(20)}
    by_user = {answered_by(routed, "sticky", messages=m, **{"X-OpenWebUI-User-Id": "u-42"}) for m in conversation(20)}
    by_start = {answered_by(routed, "sticky", messages=m) for m in conversation(20)}  # no chat id, no user: its start
    assert len(by_chat_id) == len(by_user) == len(by_start) == 1

    response = chat(routed, "sticky", chat_id="chat-secret-id-123")
    line = wait_until(lambda: routed.access_line(response.headers["X-Request-Id"]), message="the access-log line")
    assert (line["route"], line["affinity_key"], line["order"][0]) == ("affinity", "chat", response.headers["X-Gateway-Backend"])
    assert sorted(line["order"]) == ["gpu1", "gpu2", "gpu3"] and "chat-secret-id-123" not in json.dumps(line)


def test_affinity_spreads_100_chats_over_three_backends_by_weight(routed):
    even = spread(routed, "sticky", 100, chat_id=lambda n: f"chat-{n}")
    weighted = spread(routed, "sticky-weighted", 100, chat_id=lambda n: f"chat-{n}")
    assert set(even) == {"gpu1", "gpu2", "gpu3"} and all(20 <= count <= 47 for count in even.values()), even
    assert weighted["big"] > weighted["mid"] > weighted["small"] > 5, weighted
    assert abs(weighted["big"] - 50) <= 15 and abs(weighted["small"] - 17) <= 12, weighted


def test_the_status_page_shows_each_models_strategy_weights_and_share(routed):
    for _ in range(30):
        answered_by(routed, "rr")

    def shares():
        models = {m["id"]: m for m in status(routed)["models"]}
        return models if sum(models["rr"]["share_5m"].values()) > 0.99 else None

    models = wait_until(shares, message="the calls in the history")  # the history is up to a second behind
    assert models["rr"]["strategy"] == "round_robin" and models["rr-weighted"]["weights"] == {"big": 3, "mid": 2, "small": 1}
    assert models["ordered"]["strategy"] == "ordered"
    page = requests.get(routed.url + "/", timeout=10).text
    assert "round robin:" in page and "big (weight 3)" in page and "affinity:" in page


# --- active health checks ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def probed_servers():
    started = servers(5)
    yield started
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def probed(probed_servers, tmp_path_factory):
    """Two workers, one prober: h1 and h2 for the health checks, s1..s3 for affinity's losses."""
    h1, h2, s1, s2, s3 = probed_servers
    config = gateway_toml(
        backends={
            "h1": backend(h1.url, streaming=True, health_url=health_url(h1), **PROBE, **NO_BREAKER),
            "h2": backend(h2.url, streaming=True, health_url=health_url(h2), **PROBE, **NO_BREAKER),
            **{name: backend(s.url, streaming=True, health_url=health_url(s), **PROBE, **NO_BREAKER)
               for name, s in (("s1", s1), ("s2", s2), ("s3", s3))},
        },
        models=models(("probed", "round_robin", ("h1", "h2")), ("sticky", "affinity", ("s1", "s2", "s3"))),
    )
    server = GatewayServer(config, tmp_path_factory.mktemp("probed"), workers=2)
    try:
        server.wait_ready()
        wait_until(lambda: len(server.worker_pids()) == 2, message="both workers")
        wait_until(lambda: all(b["health_check"]["last_probe"] for b in status(server)["backends"]), message="the first probes")
        yield server
    finally:
        server.stop(signal.SIGINT)  # quick: no stream of this module outlives its test


def every_worker_sees(server, backend_name, health) -> set:
    """Asks /readyz (this worker's own view) on fresh connections until each worker has said
    `backend_name`'s health is `health`; returns the pids that said it."""
    workers, seen = server.worker_pids(), set()

    def all_said():
        ready = requests.get(server.url + "/readyz", timeout=5, headers={"Connection": "close"}).json()
        if ready["backends"][backend_name]["health"] == health:
            seen.add(ready["worker_pid"])
        return seen >= workers

    wait_until(all_said, timeout=15, message=f"every worker to see {backend_name} {health}")
    return seen


def health_gauge(server, name) -> float:
    for family in text_string_to_metric_families(requests.get(server.url + "/metrics", timeout=5).text):
        for sample in family.samples:
            if sample.name == "llm_gateway_backend_health" and sample.labels == {"backend": name}:
                return sample.value
    return None


def test_a_backend_whose_health_check_fails_gets_no_request_until_it_recovers(probed, probed_servers):
    h1 = probed_servers[0]
    h1.healthy = False  # its chat endpoint still works: users are kept off before any of them fails
    every_worker_sees(probed, "h1", "failing")
    posts = len([r for r in h1.requests if r.method == "POST"])
    assert {answered_by(probed, "probed", stream=n % 2 == 0) for n in range(20)} == {"h2"}
    assert len([r for r in h1.requests if r.method == "POST"]) == posts
    shown = backend_status(probed, "h1")
    assert (shown["health"], shown["state"], shown["cooldown_left"]) == ("failing", "cooling_down", None)
    assert "HTTP 503" in shown["health_check"]["last_error"] and health_gauge(probed, "h1") == 0

    h1.healthy = True
    every_worker_sees(probed, "h1", "ok")
    back = Counter(answered_by(probed, "probed") for _ in range(20))
    assert abs(back["h1"] - back["h2"]) <= 2, back  # round robin in each of the two workers
    assert backend_status(probed, "h1")["health"] == "ok" and health_gauge(probed, "h1") == 1
    log = probed.log()  # the prober says so, once for the instance
    assert log.count("backend 'h1' is cooling down: answered its health check with HTTP 503") == 1
    assert log.count("backend 'h1' is healthy again: 2 health checks in a row passed") == 1


def test_affinity_moves_only_a_lost_backends_chats_and_brings_them_back(probed, probed_servers):
    chats = [f"chat-{n}" for n in range(30)]
    before = {c: answered_by(probed, "sticky", chat_id=c) for c in chats}
    assert set(before.values()) == {"s1", "s2", "s3"}
    lost = probed_servers[4]
    port = lost.port
    lost.stop()  # s3 dies: its probes are refused
    every_worker_sees(probed, "s3", "failing")
    during = {c: answered_by(probed, "sticky", chat_id=c) for c in chats}
    assert {c for c in chats if during[c] != before[c]} == {c for c in chats if before[c] == "s3"}
    assert "s3" not in during.values()
    assert "refused the connection" in backend_status(probed, "s3")["health_check"]["last_error"]

    probed_servers[4] = TestBackend(streaming=True, port=port)  # it comes back where it was
    every_worker_sees(probed, "s3", "ok")
    assert {c: answered_by(probed, "sticky", chat_id=c) for c in chats} == before


def test_one_worker_probes_for_the_instance_and_another_takes_over_when_it_dies(probed):
    workers = probed.worker_pids()
    prober = backend_status(probed, "h1")["health_check"]["prober_pid"]
    assert prober in workers and probed.log().count("health checks: worker") == 1
    killed_at = time.time()
    os.kill(prober, signal.SIGKILL)

    def taken_over():
        check = backend_status(probed, "h1")["health_check"]
        return check["prober_pid"] not in (None, prober) and check["last_probe"] > killed_at

    wait_until(taken_over, timeout=10, message="another worker to probe")
    assert probed.log().count("health checks: worker") == 2


# --- two instances, one Redis -------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair_servers():
    started = servers(2)
    yield started
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def pair(pair_servers, tmp_path_factory):
    """Two instances sharing a Redis: least_busy counts every instance's requests in flight."""
    p, q = pair_servers
    redis = RedisServer(tmp_path_factory.mktemp("redis"))
    config = gateway_toml(
        gateway={"heartbeat_seconds": 1, "redis_url": redis.url},
        backends={
            "p": backend(p.url, streaming=True, global_max_concurrency=10, **NO_BREAKER),
            "q": backend(q.url, streaming=True, global_max_concurrency=10, **NO_BREAKER),
            "hp": backend(p.url, streaming=True, health_url=health_url(p), **PROBE, **NO_BREAKER),
            "hq": backend(q.url, streaming=True, health_url=health_url(q), **PROBE, **NO_BREAKER),
        },
        models=models(("busy", "least_busy", ("p", "q")), ("sticky", "affinity", ("p", "q")), ("probed", "round_robin", ("hp", "hq"))),
    )
    instances = [GatewayServer(config, tmp_path_factory.mktemp(f"instance{i}"), workers=1) for i in (1, 2)]
    try:
        yield [server.wait_ready() for server in instances]
    finally:
        for server in instances:
            server.stop(signal.SIGINT)  # quick: no stream of this module outlives its test
        redis.stop()


def hold_the_first_stream(server: TestBackend):
    """The backend holds its first streamed request open (until the gateway closes it); it answers
    every other request at once."""
    lock, held = threading.Lock(), []

    def behavior(exchange):
        with lock:
            first = bool(exchange.body.get("stream")) and not held
            held.append(exchange)
        (first_event_then_hold("thinking...") if first else default_behavior)(exchange)

    server.respond_with(behavior)


def test_two_instances_agree_on_how_busy_a_backend_is(pair, pair_servers):
    one, two = pair
    hold_the_first_stream(pair_servers[0])
    held = None
    try:
        while held is None:  # on instance one, until a stream is held on p
            response = chat(one, "busy", stream=True)
            if response.headers["X-Gateway-Backend"] == "p":
                held = response
            else:
                content_of(data_payloads(read_events(response)))
        assert backend_status(two, "p")["global_in_flight"] == 1
        # Instance two has nothing in flight itself; within its count's refresh (0.5 s) it sees
        # instance one's stream on p and sends every new request to q (alone, ties would alternate).
        wait_until(lambda: [answered_by(two, "busy") for _ in range(10)] == ["q"] * 10, timeout=10,
                   message="instance two to steer away from p")
    finally:
        if held is not None:
            held.close()


def test_two_instances_send_a_chat_to_the_same_backend(pair):
    one, two = pair
    chats = [f"chat-{n}" for n in range(20)]
    assert {c: answered_by(one, "sticky", chat_id=c) for c in chats} == {c: answered_by(two, "sticky", chat_id=c) for c in chats}


def test_each_instance_probes_and_both_skip_a_failing_backend(pair, pair_servers):
    pair_servers[0].healthy = False
    for server in pair:
        every_worker_sees(server, "hp", "failing")
        assert {answered_by(server, "probed") for _ in range(6)} == {"hq"}
    pair_servers[0].healthy = True
    for server in pair:
        every_worker_sees(server, "hp", "ok")
        assert Counter(answered_by(server, "probed") for _ in range(6)) == {"hp": 3, "hq": 3}
