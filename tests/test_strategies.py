"""Routing strategies, in-process: each model's strategy object as the registry builds it from a
real config, asked for the order of one request at a time (backends/strategies.py). What the
strategies do through a real server is in test_replicas.py."""

from collections import Counter

import pytest

from gateway.backends.strategies import affinity_key, conversation_start
from gateway.config import ConfigError, parse_config
from gateway.limits.admission import Limits
from gateway.registry import ModelRegistry
from gateway.upstream.identity import Asker
from tests.configs import backend, gateway_toml
from tests.redis_server import RedisServer

NAMES = ("gpu1", "gpu2", "gpu3")


def registry_for(strategy: str, weights=(1, 1, 1), **backend_settings) -> ModelRegistry:
    config = gateway_toml(
        backends={name: backend("demo://echo", weight=w, **backend_settings) for name, w in zip(NAMES, weights)},
        models=[{"id": "m", "backends": list(NAMES), "strategy": strategy}],
    )
    return ModelRegistry(parse_config(config, "test", {}))


def first_choices(registry, count, asker=None, body=None) -> Counter:
    model = registry.model("m")
    return Counter(registry.route(model, asker or {}, body or {})[0][0].name for _ in range(count))


def order(registry, asker=None, body=None) -> list:
    return [b.name for b in registry.route(registry.model("m"), asker or {}, body or {})[0]]


def chat(chat_id: str) -> Asker:
    asker = Asker()
    asker.put("chat_id", chat_id, "X-OpenWebUI-Chat-Id")
    return asker


def test_ordered_is_the_config_order_every_time():
    registry = registry_for("ordered")
    assert {tuple(order(registry)) for _ in range(10)} == {NAMES}


@pytest.mark.parametrize("weights", [(1, 1, 1), (3, 2, 1), (0.5, 1, 1.5)])
def test_round_robin_gives_each_backend_its_weights_share(weights):
    registry = registry_for("round_robin", weights)
    counts = first_choices(registry, 300)
    for name, weight in zip(NAMES, weights):
        expected = 300 * weight / sum(weights)
        assert abs(counts[name] - expected) <= 0.1 * expected, counts


def test_round_robin_interleaves_and_fails_over_in_the_config_order():
    registry = registry_for("round_robin", (2, 1, 1))
    orders = [order(registry) for _ in range(8)]
    assert [o[0] for o in orders] == ["gpu1", "gpu2", "gpu3", "gpu1"] * 2  # smooth: never a a b c
    assert orders[1] == ["gpu2", "gpu3", "gpu1"]  # after the choice, the rest from there on


def test_round_robin_shares_out_a_skipped_backends_part():
    registry = registry_for("round_robin")
    registry.backends["gpu2"].breaker.probe_failed("answered its health check with HTTP 503")
    counts = first_choices(registry, 300)
    assert counts["gpu2"] == 0 and counts["gpu1"] == counts["gpu3"] == 150
    registry.backends["gpu2"].breaker.probe_passed()
    assert first_choices(registry, 300)["gpu2"] == 100


def test_when_every_backend_is_skipped_the_order_still_names_all():
    registry = registry_for("round_robin")
    for name in NAMES:
        registry.backends[name].breaker.probe_failed("refused the connection")
    assert sorted(order(registry)) == sorted(NAMES)  # Attempts then says why each was skipped


def test_least_busy_takes_the_backend_with_the_smallest_part_of_its_capacity_in_use():
    registry = registry_for("least_busy", max_concurrency=10)
    backends = registry.backends
    held = [backends["gpu1"].acquire() for _ in range(3)] + [backends["gpu2"].acquire()]
    assert first_choices(registry, 5) == {"gpu3": 5}  # nothing in flight there (and each request ends at once)
    held.append(backends["gpu3"].acquire())
    assert first_choices(registry, 6) == {"gpu2": 3, "gpu3": 3}  # a tie: round robin between the two
    for slot in held:
        slot.release()
    assert first_choices(registry, 30) == {name: 10 for name in NAMES}


def test_least_busy_weighs_capacity_and_weight():
    registry = registry_for("least_busy", weights=(2, 1, 1), max_concurrency=10)
    backends = registry.backends
    held = [backends["gpu1"].acquire(), backends["gpu1"].acquire(), backends["gpu2"].acquire(), backends["gpu3"].acquire()]
    assert first_choices(registry, 4) == {"gpu1": 2, "gpu2": 1, "gpu3": 1}  # 2/(10*2) = 1/10 each: weighted round robin
    assert first_choices(registry, 400) == {"gpu1": 200, "gpu2": 100, "gpu3": 100}  # idle: by weight
    for slot in held:
        slot.release()


def test_least_busy_counts_every_instance_when_redis_counts_them(tmp_path):
    redis = RedisServer(tmp_path)
    try:
        config = parse_config(gateway_toml(
            gateway={"redis_url": redis.url},
            backends={name: backend("demo://echo", global_max_concurrency=4) for name in NAMES},
            models=[{"id": "m", "backends": list(NAMES), "strategy": "least_busy"}],
        ), "test", {})
        registry, here, elsewhere = ModelRegistry(config), Limits(config), Limits(config)  # two instances' limits, one Redis
        for name, b in registry.backends.items():  # as limits/web.py's init_app does
            b.global_slots = slots = here.slots[name]
            slots.in_flight_here = lambda b=b: b.in_flight
        other_instance = [elsewhere.slots["gpu1"].take(), elsewhere.slots["gpu1"].take(), elsewhere.slots["gpu3"].take()]
        assert first_choices(registry, 6) == {name: 2 for name in NAMES}  # not counted yet: this worker's own figures
        here.counter.count()  # what the background count does every 0.5 s: one round trip
        assert [registry.backends[name].global_slots.counted for name in NAMES] == [2, 0, 1]
        assert first_choices(registry, 3) == {"gpu2": 3}
        held = registry.backends["gpu2"].acquire()  # this worker's own request counts at once, before the next count
        assert first_choices(registry, 4) == {"gpu2": 2, "gpu3": 2}  # 1 of 4 each: a tie, round robin
        here.counter.count()
        assert registry.backends["gpu2"].global_slots.counted == 1 and first_choices(registry, 4) == {"gpu2": 2, "gpu3": 2}
        held.release()
        for lease in other_instance:
            lease.release()
        here.counter.count()
        assert first_choices(registry, 30) == {name: 10 for name in NAMES}
        redis.kill()
        here.counter.count()  # Redis away: not counted, this worker's own figures meanwhile
        assert all(registry.backends[name].global_slots.counted is None for name in NAMES)
        assert first_choices(registry, 30) == {name: 10 for name in NAMES}
    finally:
        redis.stop()


def test_affinity_keeps_a_conversation_on_one_backend_turn_after_turn():
    registry = registry_for("affinity")
    messages = [{"role": "system", "content": "Answer in Korean."}, {"role": "user", "content": "hello"}]
    for asker in (chat("chat-1"), {"user.id": "u-7"}, {}):  # by chat id, by user, by the conversation's start
        seen = set()
        turns = list(messages)
        for turn in range(20):
            seen.add(order(registry, asker, {"messages": turns})[0])
            turns = turns + [{"role": "assistant", "content": f"answer {turn}"}, {"role": "user", "content": f"question {turn}"}]
        assert len(seen) == 1, asker


@pytest.mark.parametrize("weights", [(1, 1, 1), (2, 1, 1)])
def test_affinity_spreads_conversations_by_weight(weights):
    registry = registry_for("affinity", weights)
    counts = Counter(order(registry, chat(f"chat-{n}"))[0] for n in range(100))
    assert set(counts) == set(NAMES)
    for name, weight in zip(NAMES, weights):
        expected = 100 * weight / sum(weights)
        assert abs(counts[name] - expected) <= 15, counts  # roughly: 100 chats, a hash
    many = Counter(order(registry, chat(f"chat-{n}"))[0] for n in range(3000))
    for name, weight in zip(NAMES, weights):
        assert abs(many[name] / 3000 - weight / sum(weights)) < 0.03, many


def test_affinity_moves_only_a_lost_backends_conversations_and_brings_them_back():
    registry = registry_for("affinity")
    before = {n: order(registry, chat(f"chat-{n}")) for n in range(300)}
    lost = registry.backends["gpu2"].breaker
    lost.probe_failed("refused the connection")
    during = {n: order(registry, chat(f"chat-{n}")) for n in range(300)}
    moved = {n for n in before if during[n][0] != before[n][0]}
    assert moved == {n for n in before if before[n][0] == "gpu2"} and moved
    assert all(during[n][0] == before[n][1] for n in moved)  # to its second choice
    assert all(during[n][-1] == "gpu2" for n in moved)  # still last, for failover's message
    lost.probe_passed()
    assert {n: order(registry, chat(f"chat-{n}")) for n in range(300)} == before


def test_affinity_without_any_key_goes_round_robin():
    registry = registry_for("affinity")
    assert first_choices(registry, 30, {}, {"input": "a text to embed"}) == {name: 10 for name in NAMES}


def test_the_affinity_key_is_the_chat_then_the_user_then_the_conversation_start():
    body = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": [{"type": "text", "text": "Q"}]},
                         {"role": "assistant", "content": "A"}, {"role": "user", "content": "Q2"}]}
    asker = Asker()
    assert affinity_key(asker, body) == (b"conversation\0S\x1eQ", "conversation")
    asker.put("user.id", "from-the-body", "user")
    assert affinity_key(asker, body) == (b"user\0from-the-body", "user")
    asker.put("user.email", "kim@example.com", "X-OpenWebUI-User-Email")
    assert affinity_key(asker, body) == (b"user\0kim@example.com", "user")  # the email before the body's user
    asker.put("user.id", "u-1", "X-OpenWebUI-User-Id")
    assert affinity_key(asker, body) == (b"user\0u-1", "user")
    asker.put("chat_id", "c-9", "X-OpenWebUI-Chat-Id")
    assert affinity_key(asker, body) == (b"chat\0c-9", "chat")
    assert conversation_start([{"role": "assistant", "content": "hi"}]) == ""


def test_the_registry_hands_out_orders_without_building_lists_for_round_robin():
    registry = registry_for("round_robin")
    first, second = order(registry), order(registry)
    again = [registry.route(registry.model("m"), {}, {})[0] for _ in range(3)]
    assert first != second and again[0] is registry.routes["m"].rotations[2]  # one of the prebuilt rotations


@pytest.mark.parametrize("settings, problem", [
    ({"strategy": "fastest"}, 'models."m".strategy: must be one of: ordered, round_robin, least_busy, affinity (got "fastest", a string)'),
    ({"weight": 0}, "backends.gpu1.weight: must be greater than 0"),
    ({"weight": "2"}, 'backends.gpu1.weight: must be a number (got "2", a string)'),
    ({"healthy_after": 3}, "backends.gpu1.healthy_after: is set without health_url"),
    ({"health_interval_seconds": 5}, "backends.gpu1.health_interval_seconds: is set without health_url"),
    ({"health_url": "ftp://gpu1/health"}, "backends.gpu1.health_url: must be an http:// or https:// URL with a host"),
    ({"health_url": "http://gpu1/health", "url": "demo://echo"}, "backends.gpu1.health_url: the built-in demo backend has no health endpoint to probe"),
])
def test_replica_settings_are_checked_at_start_up(settings, problem):
    settings = dict(settings)
    strategy = settings.pop("strategy", "round_robin")
    gpu1 = backend(settings.pop("url", "http://127.0.0.1:9/v1/chat/completions"), **settings)
    config = gateway_toml(backends={"gpu1": gpu1, "gpu2": backend("http://127.0.0.1:9/v1/chat/completions")},
                          models=[{"id": "m", "backends": ["gpu1", "gpu2"], "strategy": strategy}])
    with pytest.raises(ConfigError) as error:
        parse_config(config, "gateway.toml", {})
    assert problem in str(error.value)
