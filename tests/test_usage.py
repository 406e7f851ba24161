"""Named keys, budgets and the usage ledger, in-process (issue #25): the config, model allow-lists,
a key's requests_per_minute, the budgets' refusals and reset times, the ledger's rows and its
database's batches, and the admin pages' access rules and numbers. What depends on the server
(workers, flushes at exit, PostgreSQL, the browser) is in test_usage_servers.py and
test_usage_postgres.py.
"""

import base64
import calendar
import datetime
import sqlite3
import time

import pytest

from app import create_app
from gateway.config import ConfigError, parse_config
from gateway.usage import periods, report
from gateway.usage.budgets import Budget, applicable, refusal
from gateway.usage.ledger import Ledger, user_of
from gateway.usage.storage import Storage, StorageDown
from tests.backends import wait_until
from tests.configs import backend, gateway_toml, model
from tests.conftest import SecretWatchingClient

ADMIN_KEY = "adm-key-71c3e9a0f2"
TEAM_KEY = "sk-team-2b8d4f6e1a"
LAB_KEY = "sk-lab-9f0e3c5d7b"
ANON_KEY = "sk-anon-4a6c8e0b2d"
HI = [{"role": "user", "content": "hi"}]
SECRETS = (ADMIN_KEY, TEAM_KEY, LAB_KEY, ANON_KEY)


def usage_config(backend_url, data_dir, **extra) -> str:
    settings = {
        "gateway": {"api_keys": [ANON_KEY], "admin_keys": [ADMIN_KEY], "data_dir": str(data_dir)},
        "backends": {"openai": backend(backend_url, streaming=True)},
        "models": [model("chat-a", "openai"), model("chat-b", "openai")],
        "keys": {
            "team": {"key": TEAM_KEY, "models": ["chat-a"], "requests_per_minute": 2},
            "lab": {"key": LAB_KEY, "tokens_per_month": 15},
        },
    }
    settings.update(extra)
    return gateway_toml(**settings)


@pytest.fixture
def usage_app(openai_backend, tmp_path):
    config = parse_config(usage_config(openai_backend.url, tmp_path), "usage test config", {})
    app = create_app(config)
    app.test_client_class = SecretWatchingClient
    yield app
    app.extensions["ledger"].close(timeout=2)


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def chat(client, key, model_id="chat-a", **body):
    """One chat request; the response is closed, as a server closes it (the record, and the ledger, see it end)."""
    answer = client.post("/v1/chat/completions", json={"model": model_id, "messages": HI, **body}, headers=bearer(key))
    answer.get_data()
    answer.close()
    return answer


# --- the config ----------------------------------------------------------------------------------


def test_named_keys_are_read_and_their_values_are_secrets(openai_backend, tmp_path):
    config = parse_config(usage_config(openai_backend.url, tmp_path), "gw.toml", {})
    team, lab = config.keys["team"], config.keys["lab"]
    assert (team.models, team.requests_per_minute, team.tokens_per_day) == (("chat-a",), 2, 0)
    assert (lab.models, lab.tokens_per_month) == (None, 15)
    assert team.allows("chat-a") and not team.allows("chat-b") and lab.allows("chat-b")
    assert {TEAM_KEY, LAB_KEY, ADMIN_KEY, ANON_KEY} <= config.secrets and config.budgets_on


@pytest.mark.parametrize("change, message", [
    ({"keys": {"a": {"key": TEAM_KEY}, "b": {"key": TEAM_KEY}}}, "keys.b.key: is the same key as keys.a.key"),
    ({"keys": {"a": {"key": ANON_KEY}}}, "keys.a.key: is the same key as gateway.api_keys.0"),
    ({"keys": {"a": {"key": TEAM_KEY, "models": ["nope"]}}}, "keys.a.models.0: names model 'nope', which is not defined"),
    ({"keys": {"a": {"key": TEAM_KEY, "tokens_per_dya": 5}}}, "keys.a.tokens_per_dya: unknown key (did you mean `tokens_per_day`?)"),
    ({"keys": {"a": {"models": ["chat-a"]}}}, "keys.a.key: is required"),
    ({"limits": {"users": {"lee@corp.example": {"tokens_per_dy": 0}}}}, 'limits.users.lee@corp.example.tokens_per_dy: unknown key (did you mean `tokens_per_day`?)'),
    ({"limits": {"per_user_tokens_per_day": -1}}, "limits.per_user_tokens_per_day: must be at least 0 (got -1)"),
    ({"gateway": {"database_url": "mysql://db/usage"}}, "gateway.database_url: must be a postgresql:// URL"),
])
def test_config_errors_name_the_key_and_never_the_secret(openai_backend, tmp_path, change, message):
    with pytest.raises(ConfigError) as raised:
        parse_config(usage_config(openai_backend.url, tmp_path, **change), "gw.toml", {})
    assert message in str(raised.value)
    assert not any(secret in str(raised.value) for secret in SECRETS)


def test_an_admin_key_may_not_also_be_an_api_key(openai_backend, tmp_path):
    text = usage_config(openai_backend.url, tmp_path, gateway={"api_keys": [ANON_KEY], "admin_keys": [ANON_KEY]})
    with pytest.raises(ConfigError, match="gateway.admin_keys.0: is the same key as gateway.api_keys.0"):
        parse_config(text, "gw.toml", {})


def test_a_per_user_exception_may_name_its_settings_as_limits_does(openai_backend, tmp_path):
    """The contract's comment: "any of the per_user_* keys"; its example: `tokens_per_day`. Both work."""
    users = {"lee@corp.example": {"per_user_tokens_per_day": 0, "requests_per_minute": 3}}
    config = parse_config(usage_config(openai_backend.url, tmp_path, limits={"per_user_tokens_per_day": 100, "users": users}), "gw.toml", {})
    assert config.limits.users["lee@corp.example"] == {"tokens_per_day": 0, "requests_per_minute": 3}
    both = {"lee@corp.example": {"per_user_tokens_per_day": 0, "tokens_per_day": 5}}
    with pytest.raises(ConfigError, match=r"limits\.users\.lee@corp\.example\.per_user_tokens_per_day: is also set as 'tokens_per_day'"):
        parse_config(usage_config(openai_backend.url, tmp_path, limits={"users": both}), "gw.toml", {})
    wrong = {"lee@corp.example": {"per_user_tokens_per_day": "x"}}
    with pytest.raises(ConfigError, match=r"limits\.users\.lee@corp\.example\.per_user_tokens_per_day: must be an integer"):
        parse_config(usage_config(openai_backend.url, tmp_path, limits={"users": wrong}), "gw.toml", {})


def test_per_user_exceptions_override_only_what_they_name(openai_backend, tmp_path):
    limits = {"per_user_tokens_per_day": 100, "per_user_tokens_per_month": 1000, "users": {"lee@corp.example": {"tokens_per_day": 0}}}
    config = parse_config(usage_config(openai_backend.url, tmp_path, limits=limits), "gw.toml", {})
    assert config.limits.for_user(("lee@corp.example",))["tokens_per_day"] == 0  # unlimited
    assert config.limits.for_user(("u-1", "lee@corp.example"))["tokens_per_month"] == 1000  # the default still
    assert config.limits.for_user(("kim@corp.example",))["tokens_per_day"] == 100
    now = 1_780_000_000.0
    budgets = applicable(config, config.keys["lab"], "lee@corp.example", ("lee@corp.example",), now)
    assert [(b.whose, b.period, b.limit) for b in budgets] == [("key", "month", 15), ("user", "month", 1000)]


# --- periods and refusals --------------------------------------------------------------------------


def at(text: str) -> float:
    return calendar.timegm(datetime.datetime.fromisoformat(text).timetuple())


@pytest.mark.parametrize("now, period, seconds", [
    ("2026-12-06T23:59:30", "day", 30),
    ("2026-12-06T00:00:00", "day", 86400),
    ("2026-12-31T23:00:00", "month", 3600),  # December ends at the new year
    ("2027-02-28T12:00:00", "month", 12 * 3600),  # February of a common year
    ("2028-02-28T12:00:00", "month", 36 * 3600),  # ... and of a leap year
])
def test_budgets_reset_at_the_next_utc_day_or_month(now, period, seconds):
    assert periods.seconds_until_reset(period, at(now)) == seconds


def test_days_and_months_are_named_right_across_their_ends_whatever_was_asked_before():
    """day_of and month_of keep the day last asked about: a question about another moment, later
    or earlier, across a day's, a month's or a year's end, is answered for that moment."""
    moments = [at(text) + offset for text in ("2026-12-06T00:00:00", "2026-12-31T00:00:00", "2027-01-01T00:00:00", "2028-02-29T00:00:00")
               for offset in (-86400.5, -0.001, 0.0, 0.001, 43200.0, 86399.999, 86400.0)]
    for when in moments + moments[::-1] + moments[::3]:
        assert periods.day_of(when) == time.strftime("%Y-%m-%d", time.gmtime(when))
        assert periods.month_of(when) == time.strftime("%Y-%m", time.gmtime(when))


def test_a_refusal_says_when_the_budget_resets():
    now = at("2026-12-06T18:30:00")
    error = refusal(Budget("key", "lab", "day", "2026-12-06", 2_000_000), now)
    assert (error.status, error.code, error.headers["Retry-After"]) == (429, "key_budget_exceeded", str(5 * 3600 + 1800))
    assert "'lab' has used its 2000000 tokens for today" in error.message and "resets at 2026-12-07 00:00 UTC (in 5 h 30 min)" in error.message
    error = refusal(Budget("user", "lee@corp.example", "month", "2026-12", 100), now)
    assert (error.code, error.headers["Retry-After"]) == ("user_budget_exceeded", str(at("2027-01-01T00:00:00") - now))
    assert "your budget resets at 2027-01-01 00:00 UTC" in error.message


# --- keys on the request path ----------------------------------------------------------------------


def test_a_named_key_sees_and_uses_only_its_models(usage_app):
    client = usage_app.test_client()
    listed = client.get("/v1/models", headers=bearer(TEAM_KEY)).get_json()["data"]
    assert [m["id"] for m in listed] == ["chat-a"]
    assert [m["id"] for m in client.get("/v1/models", headers=bearer(ANON_KEY)).get_json()["data"]] == ["chat-a", "chat-b"]
    assert client.get("/v1/models/chat-b", headers=bearer(TEAM_KEY)).status_code == 404
    refused = chat(client, TEAM_KEY, "chat-b")
    error = refused.get_json()["error"]
    assert (refused.status_code, error["code"], error["param"]) == (403, "model_not_allowed", "model")
    assert "'team' may not use the model 'chat-b'" in error["message"]
    assert chat(client, TEAM_KEY).status_code == 200 and chat(client, ANON_KEY, "chat-b").status_code == 200
    assert chat(client, "sk-wrong").status_code == 401 and chat(client, ADMIN_KEY).status_code == 401  # an admin key is not an API key


def test_a_key_over_its_requests_per_minute_gets_key_rate_limit(usage_app):
    client = usage_app.test_client()
    assert [chat(client, TEAM_KEY).status_code for _ in range(2)] == [200, 200]
    refused = chat(client, TEAM_KEY)
    assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "key_rate_limit"
    assert 55 <= int(refused.headers["Retry-After"]) <= 60
    assert "'team' has sent 2 requests in the last 60 s" in refused.get_json()["error"]["message"]
    assert chat(client, ANON_KEY).status_code == 200  # another key is not held back


def test_a_key_budget_is_refused_once_used_up_until_the_month_ends(usage_app):
    client = usage_app.test_client()
    ledger = usage_app.extensions["ledger"]
    assert chat(client, LAB_KEY).status_code == 200  # 10 tokens (the test backend's usage)
    wait_until(lambda: ledger.tokens_used(periods.month_of(datetime.datetime.now().timestamp()), "key:lab") == 10, message="the answer noted")
    assert chat(client, LAB_KEY).status_code == 200  # 10 < 15: admitted, and it may end above the budget
    refused = chat(client, LAB_KEY)
    assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "key_budget_exceeded"
    now = datetime.datetime.now(datetime.timezone.utc).timestamp()
    assert abs(int(refused.headers["Retry-After"]) - periods.seconds_until_reset("month", now)) <= 2
    assert chat(client, ANON_KEY).status_code == 200  # the key's budget, nobody else's


def test_a_per_user_exception_changes_that_users_requests_per_minute(openai_backend, tmp_path):
    limits = {"per_user_requests_per_minute": 1, "users": {"lee@corp.example": {"requests_per_minute": 3}}}
    app = create_app(parse_config(usage_config(openai_backend.url, tmp_path, limits=limits), "t", {}))
    client = app.test_client()
    try:
        as_lee = [chat(client, ANON_KEY, "chat-b", user="lee@corp.example").status_code for _ in range(4)]
        as_kim = [chat(client, ANON_KEY, "chat-b", user="kim@corp.example").status_code for _ in range(2)]
    finally:
        app.extensions["ledger"].close(timeout=2)
    assert as_lee == [200, 200, 200, 429] and as_kim == [200, 429]


# --- the ledger -------------------------------------------------------------------------------------


class Attempts:
    def __init__(self, tried):
        self.tried = tried


class Record:
    def __init__(self, usage=None, outcome="completed", tried=(("openai", "ok"),), user="kim", key="team", model="m"):
        self.counted, self.attempts, self.usage, self.outcome = True, Attempts(tried), usage, outcome
        self.user, self.key, self.model, self.backend = user, key, model, "openai"


def test_the_ledger_counts_reported_tokens_unknown_usage_and_errors_apart(tmp_path):
    ledger = Ledger(Storage(parse_config(usage_config("http://127.0.0.1:9/v1/chat/completions", tmp_path), "t", {}).gateway), budgets_on=True)
    ledger.note(Record({"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}))
    ledger.note(Record({"prompt_tokens": 5, "completion_tokens": 4}))  # no total: in + out
    ledger.note(Record(None))  # the backend reported nothing: unknown, never zero tokens
    ledger.note(Record(None, outcome="client_gone"))
    ledger.note(Record(None, outcome="backend_error"))
    ledger.note(Record(None, outcome="rejected", tried=()))  # refused before any backend: not usage
    ledger.note(Record(None, outcome="rejected", tried=(("openai", "concurrency_limit"),)))  # no free slot: no call
    ledger.note(Record(None, outcome="backend_error", tried=(("openai", "cooling_down"),)))  # skipped: no call
    assert ledger.flush()
    rows = ledger.storage.report("2000-01-01", "2999-12-31", ("user", "key", "model"))
    assert rows == [{"user": "kim", "key": "team", "model": "m", "requests": 5, "prompt_tokens": 12, "completion_tokens": 7,
                     "total_tokens": 19, "unknown_usage": 2, "errors": 1}]
    assert ledger.tokens_used(periods.day_of(datetime.datetime.now().timestamp()), "key:team") == 19
    ledger.close(timeout=1)


def test_a_count_no_model_could_report_is_unknown_usage_and_never_stops_the_flushes(tmp_path):
    """2**64 tokens would overflow SQLite's 64-bit integer: every later flush failed, for good."""
    ledger = Ledger(Storage(parse_config(usage_config("http://127.0.0.1:9/v1/chat/completions", tmp_path), "t", {}).gateway))
    ledger.note(Record({"prompt_tokens": 2**64, "completion_tokens": 3, "total_tokens": 2**64 + 3}))
    ledger.note(Record({"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}))
    assert ledger.flush()
    rows = ledger.storage.report("2000-01-01", "2999-12-31", ("user",))
    assert rows == [{"user": "kim", "requests": 2, "prompt_tokens": 7, "completion_tokens": 6, "total_tokens": 10,
                     "unknown_usage": 1, "errors": 0}]
    ledger.close(timeout=1)


def test_a_batch_written_twice_is_counted_once(tmp_path):
    storage = Storage(parse_config(usage_config("http://127.0.0.1:9/v1/chat/completions", tmp_path), "t", {}).gateway)
    row = ("2026-12-06", "kim", "", "m", "openai", 1, 7, 3, 10, 0, 0)
    assert storage.write("batch-1", [row], 0.0) is True
    assert storage.write("batch-1", [row], 0.0) is False  # its commit went through, the answer was lost: not again
    assert storage.write("batch-2", [row, ("2026-12-06", "lee", "", "m", "openai", 2, 0, 0, 0, 2, 0)], 0.0) is True
    assert storage.report("2026-12-06", "2026-12-06", ("user",)) == [
        {"user": "kim", "requests": 2, "prompt_tokens": 14, "completion_tokens": 6, "total_tokens": 20, "unknown_usage": 0, "errors": 0},
        {"user": "lee", "requests": 2, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "unknown_usage": 2, "errors": 0},
    ]
    assert storage.totals(("2026-12-06", "2026-12")) == {("2026-12-06", "user:kim"): 20, ("2026-12", "user:kim"): 20}
    mode = (tmp_path / "usage.sqlite3").stat().st_mode & 0o777
    assert mode == 0o600  # who used what: for the service's user only
    storage.close()


def test_a_database_that_cannot_be_opened_is_storage_down_and_nothing_is_lost(tmp_path):
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    storage = Storage(parse_config(usage_config("http://127.0.0.1:9/v1/chat/completions", blocked), "t", {}).gateway)
    with pytest.raises(StorageDown):
        storage.totals(("2026-12",))
    ledger = Ledger(storage)
    ledger.note(Record({"total_tokens": 4}))
    assert not ledger.flush() and ledger.down and ledger.held() == 1  # kept for the next flush


def test_while_the_database_is_down_the_rows_held_are_bounded(tmp_path, monkeypatch, caplog):
    from gateway.usage import ledger as ledger_module

    monkeypatch.setattr(ledger_module, "MAX_ROWS", 3)
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    dropped = []
    ledger = Ledger(Storage(parse_config(usage_config("http://127.0.0.1:9/v1/chat/completions", blocked), "t", {}).gateway),
                    on_dropped=lambda: dropped.append(1))
    for n in range(5):
        ledger.note(Record({"total_tokens": 4}, user=f"user-{n}"))
    ledger.note(Record({"total_tokens": 4}, user="user-0"))  # a row already held still counts
    assert ledger.held() == 3 and len(dropped) == 2
    assert sum("new rows are dropped" in record.message for record in caplog.records) == 1  # one line, not one per row


def test_whom_the_ledger_counts():
    assert user_of({"user.email": "lee@corp.example", "user.id": "u-1"}, "key:team", "10.0.0.5") == "lee@corp.example"
    assert user_of({"user.id": "u-1"}, "key:team", "10.0.0.5") == "u-1"
    assert user_of({}, "key:team", "10.0.0.5") == "key:team"
    assert user_of({}, None, "10.0.0.5") == "10.0.0.5"


# --- the admin pages ---------------------------------------------------------------------------------


def basic(password, user="admin"):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_admin_pages_need_an_admin_key(usage_app, app_client):
    client = usage_app.test_client()
    for path in ("/admin/usage", "/admin/usage.json", "/admin/usage.csv"):
        answer = client.get(path)
        assert answer.status_code == 401 and answer.headers["WWW-Authenticate"].startswith("Basic ")
        assert client.get(path, headers=bearer("adm-wrong")).status_code == 401
        assert client.get(path, headers=basic("adm-wrong")).status_code == 401
        for key in (TEAM_KEY, ANON_KEY):  # an API key is known, and not an admin's
            answer = client.get(path, headers=bearer(key))
            assert answer.status_code == 403 and answer.get_json()["error"]["type"] == "permission_error"
        assert client.get(path, headers=bearer(ADMIN_KEY)).status_code == 200
        assert client.get(path, headers=basic(ADMIN_KEY, user="anyone")).status_code == 200
    assert app_client.get("/admin/usage").status_code == 404  # no admin_keys configured: not there at all
    assert app_client.get("/admin/usage.json", headers=bearer(ADMIN_KEY)).status_code == 404


def test_usage_json_and_csv_carry_the_same_numbers(usage_app):
    client = usage_app.test_client()
    assert chat(client, TEAM_KEY, user="=cmd|' /C calc'!A0").status_code == 200  # a user name a spreadsheet would run
    assert chat(client, ANON_KEY, "chat-b", user="lee@corp.example").status_code == 200
    body = client.get("/admin/usage.json?group_by=user,key,model", headers=bearer(ADMIN_KEY)).get_json()
    assert body["group_by"] == ["user", "key", "model"] and body["totals"]["requests"] == 2 and body["totals"]["total_tokens"] == 20
    assert sorted((row["user"], row["key"], row["model"]) for row in body["rows"]) == [("=cmd|' /C calc'!A0", "team", "chat-a"), ("lee@corp.example", "", "chat-b")]
    text = client.get("/admin/usage.csv?group_by=user,key,model", headers=bearer(ADMIN_KEY)).get_data(as_text=True)
    lines = text.splitlines()
    assert lines[0] == "user,key,model,requests,prompt_tokens,completion_tokens,total_tokens,unknown_usage,errors"
    assert "'=cmd|' /C calc'!A0,team,chat-a,1,7,3,10,0,0" in lines and "lee@corp.example,,chat-b,1,7,3,10,0,0" in lines
    page = client.get("/admin/usage", headers=bearer(ADMIN_KEY)).get_data(as_text=True)
    assert 'class="usage-chart"' in page and "<rect" in page and 'data-key="team"' in page and "lee@corp.example" in page
    assert not any(secret in page + text for secret in SECRETS)


@pytest.mark.parametrize("query, param", [
    ("from=2026-13-01", "from"), ("to=yesterday", "to"), ("from=2026-12-06&to=2026-12-01", "from"),
    ("from=2024-01-01&to=2026-01-01", "from"), ("group_by=user,team", "group_by"),
])
def test_a_bad_period_or_grouping_is_a_400_naming_it(usage_app, query, param):
    answer = usage_app.test_client().get(f"/admin/usage.json?{query}", headers=bearer(ADMIN_KEY))
    assert answer.status_code == 400 and answer.get_json()["error"]["param"] == param


def test_the_default_period_is_the_last_30_days():
    query = report.parse_query({}, at("2026-12-06T12:00:00"))
    assert (query.first, query.last, query.group_by) == ("2026-11-07", "2026-12-06", ("day", "user", "key", "model", "backend"))


def test_the_chart_stacks_the_largest_models_and_adds_up_the_rest():
    now = at("2026-12-06T12:00:00")
    rows = [{"day": "2026-12-06", "model": f"m{n}", "total_tokens": 100 - n} for n in range(8)] + [{"day": "2026-11-01", "model": "m0", "total_tokens": 5}]
    days, series = report.chart_series(rows, now)
    assert len(days) == 30 and days[-1] == "2026-12-06" and days[0] == "2026-11-07"
    assert [name for name, _ in series] == ["m0", "m1", "m2", "m3", "m4", "m5", "other models"]
    assert series[-1][1][-1] == 94 + 93 and sum(series[0][1]) == 100  # a day before the chart is left out


def test_a_sqlite_transaction_that_cannot_be_rolled_back_closes_its_connection_and_frees_the_lock(tmp_path):
    """A COMMIT that fails and a ROLLBACK that fails too (a disk error, say) would leave the
    worker's connection inside its transaction, holding the write lock every worker of the
    instance waits on: the connection is closed instead, and the next write opens another."""
    from gateway.usage import database

    ledger = database.Database(f"sqlite:///{tmp_path}/usage.sqlite3", "test")
    ledger.prepare()
    real = ledger._connection

    class Failing:  # the real connection, whose COMMIT and ROLLBACK fail
        def __getattr__(self, name):
            return getattr(real, name)

        def execute(self, sql, *args):
            if sql in ("COMMIT", "ROLLBACK"):
                raise sqlite3.OperationalError(f"disk I/O error (at {sql})")
            return real.execute(sql, *args)

    ledger._connection = Failing()
    row = ("2026-11-04", "kim", "", "m", "openai", 1, 3, 2, 5, 0, 0)
    with pytest.raises(sqlite3.OperationalError, match="at COMMIT"):
        ledger.write("b1", [row], 1.0)
    assert ledger._connection is None  # closed, not kept
    other = sqlite3.connect(tmp_path / "usage.sqlite3", timeout=0.1, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the write lock is free
    other.execute("ROLLBACK")
    assert ledger.write("b1", [row], 1.0) is True  # nothing of the failed one was kept
    assert ledger.report("2026-11-04", "2026-11-04", ())[0]["requests"] == 1
    ledger.close()
