"""What the usage ledger and the token budgets add (section `usage`): p50 with them minus p50 without.

Four gateways of its own, started together (so none has served more than another), each the
bench config with one thing changed, all far from refusing:
- `ledger`: the bench config as it is: every request noted in the ledger, written to SQLite every
  second; the baseline of the two budget figures;
- `no ledger`: GATEWAY_USAGE_LEDGER=off (gateway/usage/web.py), the baseline of the ledger's figure;
- `budgets`: per-user token budgets per day and per month, checked against the ledger's counts;
- `budgets + Redis`: the same with redis_url (a throwaway redis-server, persistence off): both
  budgets checked in one round trip, the tokens counted in Redis after each answer. Skipped when
  redis-server is not installed.
Concurrency 1, every target taking turns request by request; a figure is the p50 of one minus the
p50 of its baseline. The run fails when the ledger wrote no row or Redis holds no budget counter
afterwards (the figures would mean nothing).
"""

import json
import sqlite3
import statistics

from bench.harness.client import PLAIN, Target
from bench.harness.load import latencies_c1
from bench.harness.paths import LOGS
from bench.harness.servers import free_port, gunicorn, redis_server, wait_listening
from bench.harness.stats import ms, percentile
from bench.harness.table import row, spread, verdict_at_most

SECTION = "usage"
BUDGETS = "\n[limits]\nper_user_tokens_per_day = 1000000000000\nper_user_tokens_per_month = 1000000000000\n"


def run(rig):
    workdir, servers = rig.workdir, rig.servers
    targets = []
    started = {}

    def gateway(name, config_text, env=None):
        path = workdir / f"usage-{name}.toml"
        path.write_text(config_text)
        port = free_port()
        process = servers.add(gunicorn("wsgi:app", port, {"GATEWAY_CONFIG": str(path), **(env or {})}, workdir, LOGS / f"gateway-usage-{name}.log"))
        started[name] = (port, process)
        targets.append(Target(name, port, "/v1/chat/completions"))

    print("usage: the ledger and budgets, concurrency 1 ...", flush=True)
    gateway("ledger", rig.config)
    gateway("no_ledger", rig.config, {"GATEWAY_USAGE_LEDGER": "off"})
    gateway("budgets", rig.config + BUDGETS)
    redis = redis_server(free_port_for(started, "redis"), workdir, LOGS / "redis-usage.log")
    if redis is None:
        print("  redis-server is not installed: the budget check with Redis is skipped", flush=True)
    else:
        servers.add(redis)
        wait_listening(started["redis"][0], redis, "redis-server")
        with_redis = rig.config.replace("[gateway]\n", f'[gateway]\nredis_url = "redis://127.0.0.1:{started["redis"][0]}/0"\n', 1)
        gateway("budgets_redis", with_redis + BUDGETS)
    for name, (port, process) in started.items():
        if name != "redis":
            wait_listening(port, process, f"gateway ({name})")
    results = measure(rig.cfg, targets)
    check_it_counted(workdir, started)
    return results


def free_port_for(started: dict, name: str) -> int:
    port = free_port()
    started[name] = (port, None)
    return port


def check_it_counted(workdir, started) -> None:
    with sqlite3.connect(workdir / "var" / "usage.sqlite3") as db:
        if not db.execute("SELECT SUM(requests) FROM usage_ledger").fetchone()[0]:
            raise SystemExit("the ledger wrote no row: the usage figures would be wrong")
    if "budgets_redis" in started:
        import redis as redis_client  # only here: the rest of the bench never needs it

        with redis_client.Redis(port=started["redis"][0]) as check:
            if not check.keys("llm-gateway:budget:*"):
                raise SystemExit("the gateway with Redis kept no budget counter: the figure would be wrong")


def measure(cfg, targets) -> dict:
    body = json.dumps(PLAIN).encode()
    runs = []
    for repeat in range(cfg["repeats"]):
        lat = latencies_c1(targets, body, cfg["c1_requests"])
        p50 = {name: ms(percentile(values, 50)) for name, values in lat.items()}
        run = {"p50": p50, "ledger_ms": p50["ledger"] - p50["no_ledger"], "budgets_ms": p50["budgets"] - p50["ledger"]}
        if "budgets_redis" in p50:
            run["budgets_redis_ms"] = p50["budgets_redis"] - p50["ledger"]
        runs.append(run)
        print(f"  repeat {repeat + 1}: p50 without the ledger {p50['no_ledger']:.2f} ms, with it {p50['ledger']:.2f} ms, "
              f"with budgets {p50['budgets']:.2f} ms" + (f", with budgets in Redis {p50['budgets_redis']:.2f} ms" if "budgets_redis" in p50 else ""), flush=True)
    return {"runs": runs}


def rows(section: dict, cfg: dict) -> list:
    med = statistics.median
    runs = section["runs"]
    ms_text = lambda v: f"{v:.2f}"  # noqa: E731
    ledger = [x["ledger_ms"] for x in runs]
    budgets = [x["budgets_ms"] for x in runs]
    found = [
        row("usage ledger (each request noted, written every second): added p50, concurrency 1", f"{med(ledger):.2f} ms", spread(ledger, ms_text),
            f"same gateway without it: p50 {med(x['p50']['no_ledger'] for x in runs):.2f} ms", "<= 0.3 ms", verdict_at_most(med(ledger), 0.3, lambda v: f"{v:.2f} ms")),
        row("budget check without Redis (per-user day and month, the ledger's counts): added p50", f"{med(budgets):.2f} ms", spread(budgets, ms_text),
            f"same gateway without budgets: p50 {med(x['p50']['ledger'] for x in runs):.2f} ms", "<= 0.3 ms", verdict_at_most(med(budgets), 0.3, lambda v: f"{v:.2f} ms")),
    ]
    if all("budgets_redis_ms" in x for x in runs):
        redis = [x["budgets_redis_ms"] for x in runs]
        found.append(row("budget check with Redis (per-user day and month, one round trip): added p50", f"{med(redis):.2f} ms", spread(redis, ms_text),
                         f"same gateway without budgets: p50 {med(x['p50']['ledger'] for x in runs):.2f} ms", "<= 1 ms",
                         verdict_at_most(med(redis), 1.0, lambda v: f"{v:.2f} ms")))
    return found
