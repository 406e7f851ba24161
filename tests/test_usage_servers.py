"""The usage ledger and the budgets under real gunicorn + gevent workers (issue #25):

- SQLite shared by two workers: 1,000 requests through the openai SDK (streams with and without
  usage, and plain answers), then a SIGTERM at once: every request, token and unknown count is
  in the database, exactly as the test backend reported them (the last batch written at exit);
- budgets per key and per user, with a per-user exception, bind on every worker within 3 s
  without Redis, and at once with Redis (its counters hold no name in clear); the refusal's
  Retry-After is the time to the next UTC day;
- the admin page in Chromium: the chart is drawn, nothing overflows at 1300 and 390 px.
"""

import json
import re
import signal
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from gateway.usage import periods
from tests.backends import default_behavior, wait_until
from tests.configs import backend, gateway_toml, model
from tests.gunicorn_server import GatewayServer
from tests.redis_server import RedisServer
from tests.sdk import openai  # the SDK itself is imported at first use
from tests.test_observability import OUTPUT, browser  # noqa: F401 - browser is a fixture
from tests.test_status_truth import overflowing

ADMIN_KEY = "adm-key-5e0d2c9b41"
TEAM_KEY = "sk-team-8c1f7e3a90"
CAPPED_KEY = "sk-capped-3d9b6f1e27"
ANON_KEY = "sk-anon-0f4e8a2c6d"
HI = [{"role": "user", "content": "hi"}]
REQUESTS = 1000


def sdk(server, key):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=30)


def rows_of(database) -> dict:
    """(user, key) -> [requests, total tokens, unknown usage, errors], from the SQLite file itself."""
    with sqlite3.connect(database) as db:
        found = db.execute("SELECT user_name, key_name, SUM(requests), SUM(total_tokens), SUM(unknown_usage), SUM(errors) "
                           "FROM usage_ledger GROUP BY user_name, key_name").fetchall()
    return {(user, key): list(numbers) for user, key, *numbers in found}


def test_workers_sharing_sqlite_lose_and_double_no_count_and_sigterm_loses_nothing(openai_backend, tmp_path):
    config = gateway_toml(
        gateway={"api_keys": [ANON_KEY]},
        backends={
            "openai": backend(openai_backend.url, streaming=True),
            "blind": backend(openai_backend.url, streaming=True, drop_params=["stream_options"]),  # never asked for usage
        },
        models=[model("m", "openai"), model("m-blind", "blind")],
        keys={"team": {"key": TEAM_KEY}},
    )
    server = GatewayServer(config, tmp_path / "gw", workers=2).wait_ready()
    clients = {"team": sdk(server, TEAM_KEY), "": sdk(server, ANON_KEY)}
    expected = {}

    def one(n: int):
        key, user = ("team", "")[n % 2], f"user-{n % 5}"
        client = clients[key]
        kind = n % 4
        if kind == 0:  # a stream whose client asked for usage
            chunks = list(client.chat.completions.create(model="m", messages=HI, user=user, stream=True, stream_options={"include_usage": True}))
            tokens = chunks[-1].usage.total_tokens
        elif kind == 1:  # a stream whose client did not: the gateway asked the backend, and the client sees none
            chunks = list(client.chat.completions.create(model="m", messages=HI, user=user, stream=True))
            assert all(chunk.usage is None for chunk in chunks)
            words = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices).split(" ")
            tokens = 7 + len(words)  # what the test backend reports: 7 prompt tokens and a word each (tests/backends.py)
        elif kind == 2:  # a stream whose backend reports none: unknown, never zero
            chunks = list(client.chat.completions.create(model="m-blind", messages=HI, user=user, stream=True))
            assert all(chunk.usage is None for chunk in chunks)
            tokens = None
        else:
            tokens = client.chat.completions.create(model="m", messages=HI, user=user).usage.total_tokens
        return (user, key), tokens

    try:
        with ThreadPoolExecutor(8) as pool:
            for row, tokens in pool.map(one, range(REQUESTS)):
                counts = expected.setdefault(row, [0, 0, 0, 0])
                counts[0] += 1
                counts[1] += tokens or 0
                counts[2] += tokens is None
    finally:
        for client in clients.values():
            client.close()
        server.stop()  # SIGTERM at once: what the workers hold is written at their exit
    assert server.process.returncode == 0
    chats = [line for line in map(json.loads, re.findall(r"^\{.*\}$", server.log_path.read_text(), re.M)) if line["path"] == "/v1/chat/completions"]
    assert len({line["pid"] for line in chats}) == 2, "one worker served every request: nothing proves the sharing"
    assert sum(line.get("key") == "team" for line in chats) == REQUESTS // 2  # the access log names the key, never the key itself
    assert rows_of(tmp_path / "gw" / "var" / "usage.sqlite3") == expected
    assert sum(counts[0] for counts in expected.values()) == REQUESTS and sum(counts[2] for counts in expected.values()) == REQUESTS // 4


# --- budgets -------------------------------------------------------------------------------------


def budget_config(backend_url, redis_url=None) -> str:
    gateway = {"api_keys": [ANON_KEY], "admin_keys": [ADMIN_KEY]}
    if redis_url:
        gateway["redis_url"] = redis_url
    return gateway_toml(
        gateway=gateway,
        backends={"openai": backend(backend_url, streaming=True)},
        models=[model("m", "openai"), model("other-model-with-a-long-name-for-the-page", "openai")],
        keys={"capped": {"key": CAPPED_KEY, "tokens_per_day": 30}, "team": {"key": TEAM_KEY, "tokens_per_month": 1_000_000}},
        limits={"per_user_tokens_per_day": 20, "users": {"vip@corp.example": {"tokens_per_day": 0}}},
    )


def ask(server, key, user, model_id="m"):
    """One request as `user` with `key`, on a new connection (so the workers take turns)."""
    return requests.post(server.url + "/v1/chat/completions", json={"model": model_id, "messages": HI}, timeout=30,
                         headers={"Authorization": f"Bearer {key}", "X-OpenWebUI-User-Email": user, "Connection": "close"})


def refusals_by_worker(server, kind, since_ts: str) -> set:
    """The pids of the workers that refused a request with error `kind` that started at or after
    `since_ts` (the access log's ISO-8601 `ts`, which sorts in time order)."""
    lines = map(json.loads, re.findall(r"^\{.*\}$", server.log_path.read_text(), re.M))
    return {line["pid"] for line in lines if line.get("error") == kind and line["ts"] >= since_ts}


def used_up_everywhere(server, key, users, code, kind, bind_seconds):
    """The budget was used up just now: sends batches of 6 requests at once (so both workers take
    some) until each worker has refused one that started `bind_seconds` later; every request that
    started by then must be refused with `code`. Returns a refusal."""
    bound_at = time.time() + bind_seconds
    bound_ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(bound_at)) + f".{int(bound_at % 1 * 1000):03d}Z"
    deadline = time.monotonic() + bind_seconds + 15
    workers = set(server.worker_pids())
    with ThreadPoolExecutor(6) as pool:
        while True:
            started = time.time()
            answers = list(pool.map(lambda _: ask(server, key, next(users)), range(6)))
            for answer in answers:
                if answer.status_code == 429:
                    assert answer.json()["error"]["code"] == code
                    refusal = answer
                else:
                    assert answer.status_code == 200
                    assert started < bound_at, f"admitted {started - bound_at + bind_seconds:.1f} s after the budget was used up ({code})"
            if started >= bound_at and refusals_by_worker(server, kind, bound_ts) == workers:
                return refusal
            assert time.monotonic() < deadline, f"a worker took no request after the budget was used up ({code})"
            # The pace: a batch every 0.3 s until bound_at (an answer then may be either), then
            # every 0.05 s, so each worker's first refusal after bound_at is seen soon.
            time.sleep(0.3 if time.time() < bound_at else 0.05)


def names(prefix):
    n = 0
    while True:
        n += 1
        yield f"{prefix}-{n}@corp.example"


def check_budgets(server, bind_seconds):
    # The key's budget: 30 tokens a day; every answer is 10 (the test backend's usage), each for
    # another user (whose own budget, 20, is then not what refuses).
    for user in ("a@corp.example", "b@corp.example", "c@corp.example"):
        assert ask(server, CAPPED_KEY, user).status_code == 200
    refusal = used_up_everywhere(server, CAPPED_KEY, names("k"), "key_budget_exceeded", "key_budget", bind_seconds)
    assert abs(int(refusal.headers["Retry-After"]) - periods.seconds_until_reset("day", time.time())) <= 2
    assert "resets at " in refusal.json()["error"]["message"] and " UTC (in " in refusal.json()["error"]["message"]
    assert ask(server, TEAM_KEY, "d@corp.example").status_code == 200  # another key is not held back
    # The user's budget: 20 a day, whichever key; the exception "vip" has none.
    for _ in range(2):
        assert ask(server, ANON_KEY, "kim@corp.example").status_code == 200
    used_up_everywhere(server, TEAM_KEY, iter(lambda: "kim@corp.example", None), "user_budget_exceeded", "user_budget", bind_seconds)
    assert all(ask(server, ANON_KEY, "vip@corp.example").status_code == 200 for _ in range(4))


def test_budgets_bind_on_every_worker_within_3_s_without_redis(openai_backend, tmp_path):
    server = GatewayServer(budget_config(openai_backend.url), tmp_path, workers=2).wait_ready()
    try:
        check_budgets(server, bind_seconds=3.0)
        budgets = requests.get(server.url + "/admin/usage.json?group_by=key", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10).json()
        capped = next(row for row in budgets["rows"] if row["key"] == "capped")
        assert capped["total_tokens"] >= 30 and capped["errors"] == 0  # a refused request is not usage
    finally:
        server.stop()


def test_budgets_bind_at_once_on_every_worker_with_redis(openai_backend, tmp_path):
    redis = RedisServer(tmp_path / "redis")
    server = GatewayServer(budget_config(openai_backend.url, redis.url), tmp_path / "gw", workers=2).wait_ready()
    try:
        check_budgets(server, bind_seconds=0.5)  # counted in Redis as each answer ends
        with redis.client() as client:
            counters = client.keys("llm-gateway:budget:*")
            assert counters and not any("capped" in name or "corp.example" in name for name in counters)
    finally:
        server.stop()
        redis.stop()


def test_a_sigterm_during_an_answer_loses_none_of_its_budget_counts_in_redis(openai_backend, tmp_path):
    """A stopping worker exits once its last connection has ended, and after what its requests left
    running: an answer's budget counts go to Redis in the background as it ends. This Redis closes
    connections idle for 1 s, so after a 2 s answer the counts find their pooled connection closed
    and open another; a worker that did not wait for them lost both counts, with nothing logged,
    in 1 to 4 runs of 10 (`tests/test_retiring.py` proves the wait itself without chance)."""
    redis = RedisServer(tmp_path / "redis")
    with redis.client() as client:
        client.config_set("timeout", 1)
    server = GatewayServer(budget_config(openai_backend.url, redis.url), tmp_path / "gw").wait_ready()

    def after_two_seconds(exchange):
        time.sleep(2)
        default_behavior(exchange)

    openai_backend.respond_with(after_two_seconds)
    try:
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(ask, server, CAPPED_KEY, "a@corp.example")
            wait_until(lambda: len(openai_backend.requests) == 1, message="the answer under way")
            server.process.send_signal(signal.SIGTERM)
            tokens = answer.result(timeout=30).json()["usage"]["total_tokens"]
        assert server.wait_exit(timeout=30) == 0, server.log()
        with redis.client() as client:
            counted = [int(client.get(name)) for name in client.keys("llm-gateway:budget:*")]
        assert counted == [tokens, tokens]  # the user's day and the capped key's day
    finally:
        server.stop()
        redis.stop()


def test_a_redis_restarted_empty_takes_a_used_up_budget_from_the_ledger(openai_backend, tmp_path):
    """Redis needs no persistence for budgets: a counter that is missing starts from the ledger's count."""
    redis = RedisServer(tmp_path / "redis")
    server = GatewayServer(budget_config(openai_backend.url, redis.url), tmp_path / "gw", workers=1).wait_ready()
    try:
        for user in ("a@corp.example", "b@corp.example", "c@corp.example"):
            assert ask(server, CAPPED_KEY, user).status_code == 200
        wait_until(lambda: ask(server, CAPPED_KEY, "d@corp.example").status_code == 429, timeout=3, message="the budget used up")
        redis.kill()
        redis.start()  # on the same port, empty
        with redis.client() as client:
            assert client.keys("llm-gateway:budget:*") == []

        def redis_back():
            return requests.get(server.url + "/status.json", timeout=10).json()["redis"]["state"] == "ok"

        wait_until(redis_back, timeout=15, interval=0.2, message="the gateway to use Redis again")
        refused = ask(server, CAPPED_KEY, "e@corp.example")
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "key_budget_exceeded"
        with redis.client() as client:
            assert client.keys("llm-gateway:budget:*")  # seeded from the ledger's count, not from zero
    finally:
        server.stop()
        redis.stop()


# --- the admin page in a browser ---------------------------------------------------------------------


LONG_USER = "a.very.long.user.name.from.the.directory.service@subsidiary.corp.example"


@pytest.fixture(scope="module")
def admin_page(openai_backend, tmp_path_factory):
    """The admin page's HTML after some traffic: a long user name, a long model id, budgets."""
    server = GatewayServer(budget_config(openai_backend.url), tmp_path_factory.mktemp("admin-page"), workers=1).wait_ready()
    try:
        for user, model_id in ((LONG_USER, "other-model-with-a-long-name-for-the-page"), ("kim@corp.example", "m"), ("vip@corp.example", "m")):
            assert ask(server, TEAM_KEY, user, model_id).status_code == 200
        page = requests.get(server.url + "/admin/usage", auth=("admin", ADMIN_KEY), timeout=10)
    finally:
        server.stop()
    assert page.status_code == 200
    return page.text


@pytest.mark.parametrize("width", [1300, 390])
def test_the_admin_page_draws_its_chart_and_fits_a_screen_and_a_phone(browser, admin_page, tmp_path, width):
    assert admin_page.count("<rect") >= 2 and LONG_USER in admin_page and "1,000,000" in admin_page  # the team key's month budget
    assert overflowing(admin_page, width, tmp_path, screenshot=OUTPUT / f"admin-usage-{width}.png") == []
