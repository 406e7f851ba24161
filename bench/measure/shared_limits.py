"""What Redis-shared limits add (section `redis`): the p50 with them minus the p50 without.

A second gateway, the same config plus `redis_url` (a throwaway redis-server on loopback,
persistence off), [limits] on and `global_max_concurrency` on the backend, all far from refusing:
each request then checks its user's window, takes and gives back a global lease, and counts its
tokens in Redis. Concurrency 1, direct, gateway and gateway-with-Redis requests taking turns; the
figure is the p50 with Redis minus the p50 without. The run fails when Redis holds no user window
afterwards (the figure would mean nothing). Skipped when redis-server is not installed.
"""

import json
import statistics

from bench.harness.client import PLAIN, Target
from bench.harness.load import latencies_c1
from bench.harness.paths import LOGS
from bench.harness.servers import gunicorn, redis_server, wait_listening
from bench.harness.stats import ms, percentile
from bench.harness.table import row, spread, verdict_at_most

SECTION = "redis"


def run(rig):
    """The section's results, or None when redis-server is not installed. Its servers join the
    rig's and are stopped with them at the end of the run."""
    ports, workdir = rig.ports, rig.workdir
    redis = redis_server(ports["redis"], workdir, LOGS / "redis.log")
    if redis is None:
        print("shared limits: redis-server is not installed (apt-get install redis-server): skipped", flush=True)
        return None
    print("shared limits: the same gateway with Redis, concurrency 1 ...", flush=True)
    rig.servers.add(redis)
    wait_listening(ports["redis"], redis, "redis-server")
    (workdir / "shared.toml").write_text(shared_limits_config(rig.config, ports["redis"]))
    shared = rig.servers.add(gunicorn("wsgi:app", ports["shared"], {"GATEWAY_CONFIG": str(workdir / "shared.toml")}, workdir, LOGS / "gateway-redis.log"))
    wait_listening(ports["shared"], shared, "gateway with Redis")
    results = measure_redis(rig.cfg, rig.direct, rig.gateway, Target("shared", ports["shared"], "/v1/chat/completions"))
    import redis as redis_client  # only here: the rest of the bench never needs it

    with redis_client.Redis(port=ports["redis"]) as check:  # the figure means nothing unless Redis was used
        if not check.keys("llm-gateway:user:*"):
            raise SystemExit("the gateway with Redis kept nothing in it: the shared-limits figure would be wrong")
    return results


def shared_limits_config(config: str, redis_port: int) -> str:
    """The bench config with Redis-shared limits on, all far from refusing."""
    config = config.replace("[gateway]\n", f'[gateway]\nredis_url = "redis://127.0.0.1:{redis_port}/0"\n', 1)
    config = config.replace("max_concurrency = 4000\nread_timeout", "max_concurrency = 4000\nglobal_max_concurrency = 1000000\nread_timeout", 1)
    return config + "\n[limits]\nper_user_requests_per_minute = 1000000000\nper_user_tokens_per_minute = 1000000000\n"


def measure_redis(cfg, direct, gateway, shared) -> dict:
    body = json.dumps(PLAIN).encode()
    runs = []
    for repeat in range(cfg["repeats"]):
        lat = latencies_c1([direct, gateway, shared], body, cfg["c1_requests"])
        run = {name: ms(percentile(lat[name], 50)) for name in ("direct", "gateway", "shared")}
        run["added_p50_ms"] = run["shared"] - run["gateway"]
        runs.append(run)
        print(f"  repeat {repeat + 1}: p50 gateway {run['gateway']:.2f} ms, with Redis {run['shared']:.2f} ms: +{run['added_p50_ms']:.2f} ms", flush=True)
    return {"runs": runs}


def rows(section: dict, cfg: dict) -> list:
    med = statistics.median
    runs = section["runs"]
    added = [x["added_p50_ms"] for x in runs]
    return [row("Redis-shared limits ([limits] + global_max_concurrency): added p50, concurrency 1", f"{med(added):.2f} ms",
                spread(added, lambda v: f"{v:.2f}"), f"same gateway without Redis: p50 {med(x['gateway'] for x in runs):.2f} ms",
                "<= 1 ms", verdict_at_most(med(added), 1.0, lambda v: f"{v:.2f} ms"))]
