"""The limits' rules piece by piece: the Lua scripts against a real redis-server, the per-worker
windows, whom a user limit counts, the config, and one gateway in this process (without Redis,
and with a Redis that is not there). Across instances: test_scale_out.py."""

import logging
import socket
import time
import uuid

import pytest

from app import create_app
from gateway.config import ConfigError, LimitsSettings, limits_warnings, parse_config
from gateway.errors import GlobalBusy
from gateway.limits import scripts
from gateway.limits.admission import user_key
from gateway.limits.leases import GlobalSlots, LeaseKeeper
from gateway.limits.local import LocalWindows
from gateway.limits.store import RedisStore
from gateway.startup import setup_gateway_log
from tests.backends import closed_port, wait_until
from tests.configs import backend, gateway_toml, model
from tests.conftest import REDIS_PASSWORD, TICKET, SecretWatchingClient
from tests.redis_server import RedisServer

MESSAGES = [{"role": "user", "content": "hi"}]


def unique() -> str:
    return uuid.uuid4().hex


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"), password=REDIS_PASSWORD)
    yield server
    server.stop()


@pytest.fixture
def store(redis_server):
    store = RedisStore(redis_server.url, "open")  # no watcher: these tests drive it themselves
    yield store
    store.close()


# --- the scripts ------------------------------------------------------------------------------


def admit(store, user, request_limit=0, token_limit=0, window_ms=60_000):
    keys = [*scripts.user_keys(user), scripts.user_keys(user)[0]]  # no named key: its window is not read
    admitted, wait_ms, which, leased, _budget = store.script("ADMIT", keys, [request_limit, token_limit, unique(), window_ms, 0, 0])
    assert leased == 0  # no backend named: no lease
    return bool(admitted), wait_ms, which.decode()


def count_tokens(store, user, tokens, window_ms=60_000):
    _requests, entries, total = scripts.user_keys(user)
    return store.script("COUNT_TOKENS", [entries, total], [f"{unique()}:{tokens}", tokens, window_ms])


def test_requests_window_counts_admitted_requests_only(store, redis_server):
    user = unique()
    assert [admit(store, user, request_limit=3)[0] for _ in range(3)] == [True, True, True]
    admitted, wait_ms, which = admit(store, user, request_limit=3)
    assert (admitted, which) == (False, "requests")
    assert 59_000 <= wait_ms <= 60_000  # until the oldest of the three leaves the 60 s window
    with redis_server.client() as client:
        requests_key = scripts.user_keys(user)[0]
        assert client.zcard(requests_key) == 3  # the refused request did not count
        assert 0 < client.pttl(requests_key) <= 61_000  # gone by itself after the window


def test_requests_window_frees_when_it_said(store):
    user = unique()
    assert admit(store, user, request_limit=2, window_ms=400)[0] and admit(store, user, request_limit=2, window_ms=400)[0]
    admitted, wait_ms, _ = admit(store, user, request_limit=2, window_ms=400)
    refused_at = time.monotonic()
    assert not admitted and 0 < wait_ms <= 400
    wait_until(lambda: admit(store, user, request_limit=2, window_ms=400)[0], timeout=3, message="the window to free")
    # not before the time it gave (1 ms of Redis clock resolution), and not much after it
    assert wait_ms / 1000 - 0.005 <= time.monotonic() - refused_at <= wait_ms / 1000 + 1.0


def test_tokens_window_sums_reported_tokens(store, redis_server):
    user = unique()
    _requests, entries, total = scripts.user_keys(user)
    assert count_tokens(store, user, 10) == 10
    assert admit(store, user, token_limit=25)[0]
    assert count_tokens(store, user, 10) == 20
    assert admit(store, user, token_limit=25)[0]  # 20 < 25: still admitted
    assert count_tokens(store, user, 10) == 30
    admitted, wait_ms, which = admit(store, user, token_limit=25)
    assert (admitted, which) == (False, "tokens") and 59_000 <= wait_ms <= 60_000
    with redis_server.client() as client:
        client.delete(total)  # a lost running sum is rebuilt from the entries
        assert admit(store, user, token_limit=25)[:1] == (False,)
        assert client.get(total) == "30"
        assert 0 < client.pttl(total) <= client.pttl(entries) + 5  # the sum never outlives its entries


def test_tokens_window_frees_once_enough_tokens_left(store):
    user = unique()
    count_tokens(store, user, 20, window_ms=300)
    count_tokens(store, user, 10, window_ms=300)
    admitted, wait_ms, which = admit(store, user, token_limit=25, window_ms=300)
    refused_at = time.monotonic()
    assert (admitted, which) == (False, "tokens") and 0 < wait_ms <= 300
    wait_until(lambda: admit(store, user, token_limit=25, window_ms=300)[0], timeout=3, message="tokens to leave the window")
    assert time.monotonic() - refused_at >= wait_ms / 1000 - 0.005


def test_a_lease_is_taken_only_under_the_limit_and_expires_unless_renewed(store, redis_server):
    key = scripts.lease_key(unique())

    def take(lease_id, lease_ms=60_000):
        return store.script("TAKE_LEASE", [key], [2, lease_id, lease_ms])

    assert (take("a"), take("b"), take("c")) == (1, 1, 0)
    store.command("ZREM", key, "a")  # released
    assert take("c") == 1
    with redis_server.client() as client:
        assert set(client.zrange(key, 0, -1)) == {"b", "c"}
        client.delete(key)
    assert (take("x", 300), take("y", 300), take("z", 300)) == (1, 1, 0)
    wait_until(lambda: take("z", 300) == 1, timeout=3, message="expired leases to make room")


def test_admission_takes_the_first_backends_slot_in_the_same_round_trip(store, redis_server):
    user, leases = unique(), scripts.lease_key(unique())

    def admit_with_lease(lease_id, request_limit=2):
        keys = [*scripts.user_keys(user), scripts.user_keys(user)[0], leases]
        return store.script("ADMIT", keys, [request_limit, 0, unique(), 60_000, 0, 0, 1, lease_id, 60_000])

    assert admit_with_lease("first") == [1, 0, b"", 1, 0]  # admitted, and the backend's one slot taken
    assert admit_with_lease("second") == [1, 0, b"", 0, 0]  # admitted; no slot free (acquire will ask, and refuse)
    assert admit_with_lease("third")[:1] == [0]  # over the user's limit: refused, and no slot taken either
    with redis_server.client() as client:
        assert client.zrange(leases, 0, -1) == ["first"]


def test_the_keeper_renews_running_leases_and_a_stopped_one_expires(store):
    keeper = LeaseKeeper(store, lease_seconds=0.3)
    slots = GlobalSlots(keeper, unique(), limit=1)
    lease = slots.take()
    renewed_until = time.monotonic() + 1.0  # more than three lease times
    while time.monotonic() < renewed_until:
        keeper.renew()
        with pytest.raises(GlobalBusy) as refused:
            slots.take()
        time.sleep(0.1)  # the renewal period under test (a third of the lease)
    assert refused.value.status == 429 and refused.value.code == "gateway_concurrency_limit"
    assert refused.value.headers == {"Retry-After": "1"} and "global_max_concurrency" in refused.value.message
    assert keeper.held() == 1
    # no more renewals (as when the worker holding it was killed): the slot comes back by itself
    wait_until(lambda: _takes(slots), timeout=3, message="the unrenewed lease to expire")
    lease.release()
    assert keeper.held() == 1  # the lease the wait took; the first one is gone


def _takes(slots) -> bool:
    try:
        slots.take()
        return True
    except GlobalBusy:
        return False


# --- the same rules in one worker ---------------------------------------------------------------


def test_local_windows_follow_the_same_rules():
    now = [1000.0]
    windows = LocalWindows(LimitsSettings(per_user_requests_per_minute=3, per_user_tokens_per_minute=25), clock=lambda: now[0])
    assert [windows.admit("u", str(i)) for i in range(3)] == [(None, 0)] * 3
    assert windows.admit("u", "4") == ("requests", 60)
    assert windows.admit("v", "1") == (None, 0)  # another user
    now[0] += 30
    assert windows.admit("u", "4") == ("requests", 30)
    windows.cancel("u", "2")  # refused after all (no backend slot): it does not count
    assert windows.admit("u", "5") == (None, 0)
    now[0] += 30  # the first two (at 1000) leave the window at 1060
    windows.count_tokens("u", 20)
    now[0] += 1
    windows.count_tokens("u", 10)
    assert windows.admit("u", "6") == ("tokens", 59)  # 30 >= 25 until the 20 leaves, 59 s from now
    now[0] += 59
    assert windows.admit("u", "7") == (None, 0)


def test_whom_a_user_limit_counts():
    alice = user_key({"user.id": "alice", "user.email": "a@corp.example"}, "Bearer sk-1", "10.0.0.1")
    assert alice == user_key({"user.id": "alice"}, "Bearer sk-2", "10.0.0.2")  # the id, whatever else
    by_email = user_key({"user.email": "a@corp.example"}, "Bearer sk-1", "10.0.0.1")
    assert by_email == user_key({"user.email": "a@corp.example"}, None, None) != alice
    assert user_key({"user.id": "a@corp.example"}, None, None) != by_email  # an id is not an email
    by_key = user_key({}, "Bearer sk-1", "10.0.0.1")
    assert by_key == user_key({}, "Bearer sk-1", "10.0.0.9") != user_key({}, "Bearer sk-2", "10.0.0.1")
    assert user_key({}, None, "10.0.0.1") != user_key({}, None, "10.0.0.2")
    for key in (alice, by_email, by_key):  # a hash: nothing of the user or the key in it
        assert len(key) == 32 and all(c in "0123456789abcdef" for c in key)


# --- the config ----------------------------------------------------------------------------------


def config_text(gateway=None, limits=None, **backend_settings):
    return gateway_toml(
        gateway=gateway,
        backends={"corp": backend("http://127.0.0.1:9/v1/chat/completions", **backend_settings)},
        models=[model("m", "corp")],
        limits=limits,
    )


def test_global_max_concurrency_needs_redis_url():
    with pytest.raises(ConfigError) as error:
        parse_config(config_text(global_max_concurrency=4), "gw.toml", {})
    assert str(error.value) == "gw.toml: backends.corp.global_max_concurrency: needs [gateway] redis_url (the Redis every instance shares)"


def test_limits_without_redis_hold_per_worker_and_say_so():
    config = parse_config(config_text(limits={"per_user_requests_per_minute": 5}), "gw.toml", {})
    assert config.limits.per_user_requests_per_minute == 5 and config.limits.per_user_tokens_per_minute == 0
    assert "per worker" in limits_warnings(config)[0]
    shared = parse_config(config_text(gateway={"redis_url": "redis://127.0.0.1:6379/0"}, limits={"per_user_requests_per_minute": 5}), "gw.toml", {})
    assert limits_warnings(shared) == [] and shared.gateway.redis_failure == "open"


@pytest.mark.parametrize(
    "settings, names",
    [
        ({"gateway": {"redis_url": "http://127.0.0.1:6379"}}, "gateway.redis_url: must be a redis://, rediss:// or unix:// URL"),
        ({"gateway": {"redis_url": "redis://127.0.0.1:6379", "redis_failure": "half"}}, "gateway.redis_failure: must be one of: open, closed"),
        ({"limits": {"per_user_requests_per_minute": -1}}, "limits.per_user_requests_per_minute: must be at least 0"),
        ({"limits": {"per_user_tokens_per_minute": "100"}}, "limits.per_user_tokens_per_minute: must be an integer"),
        ({"limits": {"per_user_request_per_minute": 5}}, "limits.per_user_request_per_minute: unknown key"),
        ({"gateway": {"redis_url": "redis://127.0.0.1:6379"}, "global_max_concurrency": 0}, "backends.corp.global_max_concurrency: must be at least 1"),
    ],
)
def test_bad_limit_settings_name_the_key(settings, names):
    with pytest.raises(ConfigError) as error:
        parse_config(config_text(**settings), "gw.toml", {})
    assert names in str(error.value)


def test_the_redis_password_is_a_secret_and_its_host_is_not():
    url = "redis://gateway:p%40ss-9f3e1c@redis.internal:6380/2"
    config = parse_config(config_text(gateway={"redis_url": url}), "gw.toml", {})
    assert {"p@ss-9f3e1c", "p%40ss-9f3e1c"} <= config.secrets
    assert not any("redis.internal" in secret or "gateway" == secret for secret in config.secrets)


# --- one gateway in this process -------------------------------------------------------------------


@pytest.fixture
def make_app(corp_backend):
    apps = []

    def make(gateway=None, limits=None, **backend_settings):
        text = gateway_toml(
            gateway=gateway,
            backends={"corp": backend(corp_backend.url, headers={"x-dep-ticket": "${CORP_TICKET}"}, **backend_settings)},
            models=[model("corp-model", "corp")],
            limits=limits,
        )
        app = create_app(parse_config(text, "test config", {"CORP_TICKET": TICKET}))
        app.test_client_class = SecretWatchingClient
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["limits"].close()


def chat(client, user=None, **extra):
    headers = {"X-OpenWebUI-User-Id": user} if user else {}
    # buffered: the response is closed at once, so what runs when an answer ends (tokens) has run
    return client.post("/v1/chat/completions", json={"model": "corp-model", "messages": MESSAGES, **extra}, headers=headers, buffered=True)


def refused(client) -> dict:
    return client.get("/status.json").get_json()["limits"]["refused"]


def test_without_redis_the_limits_hold_per_worker(make_app):
    client = make_app(limits={"per_user_requests_per_minute": 2}).test_client()
    before = refused(client)
    assert [chat(client, "alice").status_code for _ in range(2)] == [200, 200]
    third = chat(client, "alice")
    assert third.status_code == 429
    error = third.get_json()["error"]
    assert error["code"] == "user_rate_limit" and error["type"] == "rate_limit_error" and "per_user_requests_per_minute" in error["message"]
    assert 55 <= int(third.headers["Retry-After"]) <= 60
    assert chat(client, "bob").status_code == 200  # another user
    status = client.get("/status.json").get_json()
    assert status["redis"] is None and status["limits"]["shared"] is False
    assert status["limits"]["per_user_requests_per_minute"] == 2
    assert refused(client)["user_requests"] == before["user_requests"] + 1
    assert "hold per worker" in client.get("/").get_data(as_text=True)
    assert client.get("/readyz").get_json()["redis"] is None


def test_tokens_count_after_each_answer(make_app):
    client = make_app(limits={"per_user_tokens_per_minute": 15}).test_client()
    before = refused(client)
    assert chat(client, "carol").status_code == 200  # the test backend reports total_tokens 10
    assert chat(client, "carol").status_code == 200  # 10 < 15: admitted, now 20
    third = chat(client, "carol")
    assert third.status_code == 429 and "per_user_tokens_per_minute" in third.get_json()["error"]["message"]
    assert third.get_json()["error"]["code"] == "user_rate_limit"
    assert refused(client)["user_tokens"] == before["user_tokens"] + 1


def test_a_request_refused_for_want_of_a_slot_does_not_count(make_app):
    app = make_app(limits={"per_user_requests_per_minute": 2}, max_concurrency=1)
    client = app.test_client()
    before = refused(client)
    held = app.extensions["registry"].backends["corp"].acquire()  # the backend's only slot
    busy = [chat(client, "dave") for _ in range(4)]
    assert [(r.status_code, r.get_json()["error"]["code"]) for r in busy] == [(429, "gateway_concurrency_limit")] * 4
    held.release()
    assert [chat(client, "dave").status_code for _ in range(2)] == [200, 200]  # the four did not count
    assert chat(client, "dave").get_json()["error"]["code"] == "user_rate_limit"
    after = refused(client)
    assert after["max_concurrency"] == before["max_concurrency"] + 4 and after["user_requests"] == before["user_requests"] + 1


@pytest.fixture
def limits_log(caplog):
    """The gateway's Redis warnings, as logged."""
    # The app's first build makes the "gateway" logger stop propagating to the root, where caplog
    # listens; pytest also listens on such loggers, but only on those set up before a test phase
    # starts. Set up here, it does not depend on an earlier test in this process having built an app.
    setup_gateway_log()
    caplog.set_level(logging.INFO, logger="gateway.limits")
    return caplog


def unreachable_url(password=REDIS_PASSWORD) -> str:
    return f"redis://:{password}@127.0.0.1:{closed_port()}/0"


def test_closed_answers_503_at_once_while_redis_is_unreachable(make_app, limits_log):
    app = make_app(gateway={"redis_url": unreachable_url(), "redis_failure": "closed"}, limits={"per_user_requests_per_minute": 5})
    client = app.test_client()
    wait_until(lambda: not app.extensions["limits"].shared, timeout=5, message="the watcher to find Redis gone")
    for _ in range(2):
        started = time.monotonic()
        answer = chat(client, "erin")
        assert time.monotonic() - started < 0.5
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
        assert answer.get_json()["error"]["code"] == "limits_unavailable"
        assert "Redis" not in answer.get_json()["error"]["message"]  # end users read it; the operator's log names Redis
    assert client.get("/status.json").get_json()["redis"] == {"state": "unreachable", "failure": "closed"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["redis"]["state"] == "unreachable"
    assert "chat requests get 503 until it is back" in client.get("/").get_data(as_text=True)
    lines = [r.getMessage() for r in limits_log.records if "unreachable" in r.getMessage()]
    assert len(lines) == 1 and "127.0.0.1:" in lines[0] and REDIS_PASSWORD not in limits_log.text


@pytest.fixture
def hung_redis():
    """A port that accepts connections (the kernel's backlog) and never answers: a hung Redis."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"


@pytest.mark.parametrize("failure, status", [("closed", 503), ("open", 200)])
def test_a_hung_redis_costs_a_request_at_most_half_a_second(make_app, hung_redis, failure, status):
    client = make_app(gateway={"redis_url": hung_redis, "redis_failure": failure}, limits={"per_user_requests_per_minute": 5}).test_client()
    started = time.monotonic()
    answer = chat(client, "ivan")  # the first request: Redis not yet known to be away
    assert time.monotonic() - started < 0.5
    assert answer.status_code == status
    assert client.get("/status.json").get_json()["redis"]["state"] == "unreachable"


def test_closed_also_guards_the_global_slots_and_gives_the_local_slot_back(make_app):
    app = make_app(gateway={"redis_url": unreachable_url(), "redis_failure": "closed"}, global_max_concurrency=2)
    client = app.test_client()
    answer = chat(client, "frank")
    assert answer.status_code == 503 and answer.get_json()["error"]["code"] == "limits_unavailable"
    assert app.extensions["registry"].backends["corp"].in_flight == 0


def test_open_serves_without_shared_limits_while_redis_refuses_us(make_app, redis_server, limits_log):
    wrong = "wrong-pw-51d7c0a2"  # a Redis that is there but refuses the password: unusable all the same
    url = f"redis://:{wrong}@127.0.0.1:{redis_server.port}/0"
    app = make_app(gateway={"redis_url": url}, limits={"per_user_requests_per_minute": 1}, global_max_concurrency=1)
    client = app.test_client()
    assert chat(client, "gina").status_code == 200
    assert chat(client, "gina").status_code == 429  # the worker's own window meanwhile
    status = client.get("/status.json").get_json()
    assert status["redis"] == {"state": "unreachable", "failure": "open"} and status["limits"]["shared"] is False
    assert status["backends"][0]["global_max_concurrency"] == 1 and status["backends"][0]["global_in_flight"] is None
    assert "shared limits are off" in client.get("/").get_data(as_text=True)
    assert "AuthenticationError" in limits_log.text and wrong not in limits_log.text


def test_a_slot_taken_ahead_and_never_used_is_given_back(make_app, redis_server):
    app = make_app(gateway={"redis_url": redis_server.url}, limits={"per_user_requests_per_minute": 5},
                   max_concurrency=1, global_max_concurrency=5)
    client = app.test_client()
    limits = app.extensions["limits"]
    held = app.extensions["registry"].backends["corp"].acquire()  # this worker's only local slot
    assert limits.global_in_flight() == {"corp": 1}
    answer = chat(client, "hank")  # its admission takes a global slot ahead; the local one is full
    assert answer.status_code == 429 and "max_concurrency" in answer.get_json()["error"]["message"]
    assert limits.global_in_flight() == {"corp": 1}  # the slot taken ahead went back
    held.release()
    assert limits.global_in_flight() == {"corp": 0}
    assert chat(client, "hank").status_code == 200
    assert limits.global_in_flight() == {"corp": 0} and limits.store.up
