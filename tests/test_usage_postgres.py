"""The usage ledger on PostgreSQL (Debian's `postgresql`, a throwaway cluster started by the
tests: tests/postgres_server.py), shared by two gateway instances (issue #25):

- both instances create the schema at start-up (at the same moment) and add to the same rows;
- the database is stopped as a crash would (immediate mode) in the middle of the load and started
  again: no request fails or waits for it, each instance says in one line that it went and one
  that it is back, and after both instances are stopped (SIGTERM) the totals in the database are
  exactly the sum of what the test backend reported;
- either instance's /admin/usage.json shows both instances' usage; the password in
  database_url is never in a log or an answer.
"""

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
import requests

from gateway.usage.storage import Storage
from tests.backends import wait_until
from tests.configs import backend, gateway_toml, model
from tests.gunicorn_server import GatewayServer
from tests.postgres_server import PASSWORD, PostgresServer

ADMIN_KEY = "adm-key-0c7a5e3b19"
HI = [{"role": "user", "content": "hi"}]
PER_PHASE = 60  # requests before the outage, during it, and after it


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer()
    yield server
    server.remove()


def ask(server, n: int):
    body = {"model": "m", "messages": HI, "user": f"user-{n % 3}", "stream": n % 2 == 0, "stream_options": {"include_usage": True}}
    answer = requests.post(server.url + "/v1/chat/completions", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    if body["stream"]:
        events = [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: {")]
        return events[-1]["usage"]["total_tokens"]
    return answer.json()["usage"]["total_tokens"]


def lines_with(server, text) -> int:
    return sum(text in line for line in server.log_path.read_text(errors="replace").splitlines())


def test_two_instances_share_postgresql_through_an_outage_losing_no_count(postgres, openai_backend, tmp_path):
    config = gateway_toml(
        gateway={"database_url": postgres.url, "admin_keys": [ADMIN_KEY]},
        backends={"openai": backend(openai_backend.url, streaming=True)},
        models=[model("m", "openai")],
    )
    instances = [GatewayServer(config, tmp_path / f"gw{n}", workers=1) for n in (1, 2)]
    tokens, lock = [], threading.Lock()
    try:
        for instance in instances:
            instance.wait_ready()
        wait_until(lambda: "usage_ledger" in postgres.psql("SELECT tablename FROM pg_tables"), message="the schema, made at start-up")

        def phase(start: int):
            with ThreadPoolExecutor(6) as pool:
                found = list(pool.map(lambda n: ask(instances[n % 2], n), range(start, start + PER_PHASE)))
            with lock:
                tokens.extend(found)

        phase(0)
        wait_until(lambda: postgres.psql("SELECT COALESCE(SUM(requests), 0) FROM usage_ledger").strip() != "0", message="a first flush")
        postgres.stop(fast=False)  # as a crash: connections reset, nothing checkpointed
        phase(PER_PHASE)  # served while the database is down: kept in memory
        for instance in instances:
            wait_until(lambda: lines_with(instance, "usage ledger: the database") >= 1, message="the outage noticed")
        postgres.start()
        phase(2 * PER_PHASE)
        for instance in instances:
            wait_until(lambda: lines_with(instance, "works again") == 1, message="the database back")
        totals = requests.get(instances[1].url + "/admin/usage.json?group_by=user", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
        assert totals.status_code == 200 and totals.json()["totals"]["requests"] <= 3 * PER_PHASE
    finally:
        for instance in instances:
            instance.stop()  # SIGTERM: what each worker still holds is written at its exit
    requests_counted, tokens_counted, unknown, errors = map(int, postgres.psql(
        "SELECT SUM(requests), SUM(total_tokens), SUM(unknown_usage), SUM(errors) FROM usage_ledger").strip().split("|"))
    assert (requests_counted, tokens_counted, unknown, errors) == (3 * PER_PHASE, sum(tokens), 0, 0)
    per_user = dict(line.split("|") for line in postgres.psql("SELECT user_name, SUM(requests) FROM usage_ledger GROUP BY user_name").split())
    assert per_user == {"user-0": str(PER_PHASE), "user-1": str(PER_PHASE), "user-2": str(PER_PHASE)}
    assert postgres.psql("SELECT version FROM usage_schema").strip() == "1"
    for instance in instances:
        log = instance.log_path.read_text()
        assert lines_with(instance, "cannot be used") == 1 and lines_with(instance, "works again") == 1
        assert PASSWORD not in log and "127.0.0.1:" + str(postgres.port) in log  # where, never the password
        assert not re.search(r"Traceback", log)


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_both_engines_add_report_and_total_alike(engine, request, tmp_path):
    """The ledger's statements, run on each engine as written: the adding upsert, a batch written
    twice counted once, totals, and a report in its order (largest total first, then by the group's
    names)."""
    url = request.getfixturevalue("postgres").url if engine == "postgresql" else None
    storage = Storage(SimpleNamespace(database_url=url, data_dir=str(tmp_path)))
    day = "2026-11-" + ("01" if engine == "sqlite" else "02")  # each its own rows, on a database the module shares
    rows = [(day, "lee", "team", "m", "openai", 1, 3, 2, 5, 0, 0), (day, "kim", "team", "m", "openai", 1, 3, 2, 5, 0, 0),
            (day, "ann", "", "m", "openai", 1, 0, 0, 0, 1, 1)]
    assert storage.write(f"{engine}-{day}-1", rows, 1.0) is True
    assert storage.write(f"{engine}-{day}-1", rows, 1.0) is False
    assert storage.write(f"{engine}-{day}-2", [(day, "zed", "team", "m", "openai", 2, 6, 4, 10, 0, 0), rows[0]], 2.0) is True
    by_user = storage.report(day, day, ("user",))
    assert [(row["user"], row["total_tokens"], row["requests"]) for row in by_user] == [
        ("lee", 10, 2), ("zed", 10, 2), ("kim", 5, 1), ("ann", 0, 1)]  # a tie: by name
    assert storage.report(day, day, ()) == [{"requests": 6, "prompt_tokens": 15, "completion_tokens": 10, "total_tokens": 25,
                                             "unknown_usage": 1, "errors": 1}]
    totals = storage.totals((day, day[:7]))
    assert totals[(day, "user:lee")] == totals[(day, "user:zed")] == 10 and totals[(day, "key:team")] == 25
    assert (day, "user:ann") not in totals  # no tokens, no total
    storage.close()


def test_a_role_that_may_only_read_and_write_the_tables_an_administrator_made_keeps_the_ledger(postgres):
    """The tables are made only where they are missing: PostgreSQL checks a role's rights before
    IF NOT EXISTS, and a role without CREATE on the schema (PostgreSQL 15's default) or that does not
    own the tables (for their index) would otherwise fail every worker's start, and every flush."""
    postgres.psql("CREATE DATABASE usage_dml")
    admin_url = postgres.url.rsplit("/", 1)[0] + "/usage_dml"
    made = Storage(SimpleNamespace(database_url=admin_url, data_dir="unused"))
    made.prepare()
    made.close()
    postgres.psql("CREATE ROLE gw_dml LOGIN PASSWORD 'gw-dml-pass-5e8a1c'")
    postgres.psql("GRANT SELECT, INSERT, UPDATE, DELETE ON usage_ledger, usage_totals, usage_flushes, usage_schema TO gw_dml", database="usage_dml")
    storage = Storage(SimpleNamespace(database_url=f"postgresql://gw_dml:gw-dml-pass-5e8a1c@127.0.0.1:{postgres.port}/usage_dml", data_dir="unused"))
    storage.prepare()
    row = ("2026-11-03", "kim", "team", "m", "openai", 1, 3, 2, 5, 0, 0)
    assert storage.write("dml-1", [row], 1.0) is True
    assert storage.report("2026-11-03", "2026-11-03", ("user",))[0]["total_tokens"] == 5
    storage.close()
