"""`python -m gateway check [CONFIG]` (`make check`), as an operator runs it: a subprocess, for the
command itself (its exit status, its output streams); the rest runs the command's code in this
process, with the working directory and environment the command would have (a subprocess costs
0.4 s of CPU, mostly imports).

A good config: exit 0, each model → backend → upstream name, and each backend's headers as a
sample request sends them (`${VAR}` as `***`, the secret itself never printed). A bad one: exit 1
and the very line start-up prints, also for what only a worker finds (a CA file OpenSSL rejects).
"""

import contextlib
import io
import os
import re
import subprocess
import sys
from unittest import mock

import pytest

from gateway import check
from tests.configs import backend, gateway_toml, model
from tests.gunicorn_server import PROXY_VARIABLES, ROOT, GatewayServer

SECRET = "tkt-check-{uuid}-9f8e7d"  # braces too: a ${VAR} value is literal text, never a placeholder
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


def operators_environment(env=None) -> dict:
    """This machine's environment without its own gateway or proxy settings, and `env`."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_") and k.lower() not in PROXY_VARIABLES}
    return {**environ, **(env or {})}


def run_check_command(cwd, *args, env=None):
    return subprocess.run([sys.executable, "-m", "gateway", "check", *args], cwd=cwd,
                          env={**operators_environment(env), "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)


def run_check(cwd, *args, env=None):
    """What `python -m gateway check ARGS` prints and returns, from the command's code run here."""
    out, err = io.StringIO(), io.StringIO()
    with mock.patch.dict(os.environ, operators_environment(env), clear=True), contextlib.chdir(cwd):
        status = check.run(*args, out=out, err=err)
    return subprocess.CompletedProcess(args, status, out.getvalue(), err.getvalue())


CORP = backend("https://llm.corp.example/ask", streaming=False, headers={
    "x-dep-ticket": "${CORP_TICKET}",
    "Authorization": "Bearer ${CORP_TICKET}",
    "Send-System-Name": "D0aKG",
    "User-Id": "{user.email|anonymous}",
    "User-Name": "{user.name}",
    "Owner": "{user.id}",
    "Prompt-Msg-Id": "{uuid}",
    "Model-Name": "{model}",
    "Optional": "${OPTIONAL}",
})
GOOD = gateway_toml(
    gateway={"api_keys": ["${GATEWAY_API_KEY}"]},
    backends={"corp": CORP, "echo": backend("demo://echo"), "corp-dr": backend("http://127.0.0.1:9/v1")},
    models=[
        model("Gauss2-37b-instruct-v1.0", "corp", upstream="gauss2-37b"),
        model("corp-plain", "corp"),
        model("demo-echo", "echo"),
        {"id": "gauss-ha", "backends": ["corp", "corp-dr"], "upstream": {"corp-dr": "gauss-dr"}},
    ],
)
GOOD_ENV = {"CORP_TICKET": SECRET, "GATEWAY_API_KEY": "sk-check-inbound-1234", "OPTIONAL": ""}


@pytest.fixture(scope="module")
def good_check(tmp_path_factory):
    directory = tmp_path_factory.mktemp("check")
    (directory / "corp.toml").write_text(GOOD, encoding="utf-8")
    return run_check_command(directory, "corp.toml", env=GOOD_ENV)


def section(output: str, title: str) -> list:
    """The indented lines under the line that starts with `title`."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    body = []
    for line in lines[start + 1:]:
        if not line.startswith(" "):
            break
        body.append(line.strip())
    return body


def test_a_good_config_passes_and_lists_each_model_its_backend_and_upstream_name(good_check):
    assert good_check.returncode == 0, good_check.stderr
    assert good_check.stderr == ""
    assert good_check.stdout.startswith("corp.toml: OK")
    assert section(good_check.stdout, "models") == [
        "Gauss2-37b-instruct-v1.0 → corp → gauss2-37b",
        "corp-plain → corp → corp-plain",
        "demo-echo → echo → demo-echo",
        "gauss-ha → corp → gauss-ha",  # failover: each backend in the order tried, with its own name
        "gauss-ha → corp-dr → gauss-dr (failover 2)",
    ]


def headers_of(output: str, backend_name: str) -> dict:
    """The sample headers `make check` shows for a backend."""
    lines = section(output, f"backend {backend_name}:")
    start = next(i for i, line in enumerate(lines) if line.startswith("headers sent"))
    return dict(line.split(": ", 1) for line in lines[start + 1:])


def test_headers_show_literals_as_written_secrets_as_stars_and_the_sample_user_as_sent(good_check):
    headers = headers_of(good_check.stdout, "corp")
    assert headers["x-dep-ticket"] == "***"
    assert headers["Authorization"] == "Bearer ***"
    assert headers["Send-System-Name"] == "D0aKG"
    assert headers["User-Id"] == "kim@example.com"
    assert headers["Owner"] == "u-123"
    assert headers["User-Name"] == "%EA%B9%80%EB%AF%BC%EC%88%98"  # 김민수, percent-encoded as sent
    assert re.fullmatch(UUID, headers["Prompt-Msg-Id"])
    assert headers["Model-Name"] == "Gauss2-37b-instruct-v1.0"  # {model}: the first model using it
    assert headers["Optional"] == "(renders empty: not sent)"  # ${OPTIONAL} is set, but empty


def test_every_effective_setting_is_shown(tmp_path):
    config = gateway_toml(
        gateway={"api_keys": ["${GATEWAY_API_KEY}"], "cors_origins": ["https://chat.example.com"], "redis_url": "redis://:pw-9c1f2e@10.0.0.5:6380/0"},
        limits={"per_user_requests_per_minute": 30},
        backends={"lab": backend("http://gpu-01.lab:8000/v1/chat/completions?key=k-5e1d0c2b", streaming=True, discover_models=True,
                                 model_prefix="lab/", embeddings_url="http://gpu-01.lab:8001/v1/embeddings", global_max_concurrency=20,
                                 drop_params=["seed"], proxy="http://proxy.corp:3128")},
        models=[model("m", "lab"), model("e", "lab", kind="embeddings")],
    )
    (tmp_path / "gateway.toml").write_text(config, encoding="utf-8")
    result = run_check(tmp_path, env={"GATEWAY_API_KEY": "sk-check-inbound-1234"})
    assert result.returncode == 0, result.stderr
    gateway = section(result.stdout, "gateway:")
    assert "inbound auth: on (1 key)" in gateway and "CORS origins: https://chat.example.com" in gateway
    assert "redis: redis://10.0.0.5:6380 (shared limits; unreachable: serve with per-worker limits)" in gateway
    assert "limits per user per minute: 30 requests" in gateway
    lab = section(result.stdout, "backend lab:")
    assert "concurrency: 64 in flight per worker, 20 across all instances" in lab
    assert "circuit breaker: 5 failures in a row → skipped for 30 s" in lab
    assert "body: tools pass, content parts, dropped fields: seed" in lab and "proxy: http://proxy.corp:3128" in lab
    assert "embeddings: http://gpu-01.lab:8001 (for e)" in lab
    assert 'discovers its models: http://gpu-01.lab:8000 at start-up and every 5 minutes, ids prefixed "lab/"' in lab
    for secret in ("pw-9c1f2e", "k-5e1d0c2b", "sk-check-inbound-1234"):
        assert secret not in result.stdout


def test_an_open_gateway_says_so(tmp_path):
    (tmp_path / "gateway.toml").write_text(gateway_toml(backends={"b": backend("demo://echo")}, models=[model("m", "b")]), encoding="utf-8")
    gateway = section(run_check(tmp_path).stdout, "gateway:")
    assert gateway[0].startswith("inbound auth: OFF") and "redis: none (concurrency and [limits] hold per worker)" in gateway


def test_the_secret_is_never_printed(good_check):
    for secret in (SECRET, GOOD_ENV["GATEWAY_API_KEY"], "tkt-check"):
        assert secret not in good_check.stdout + good_check.stderr


def test_uuid_is_fresh_for_every_occurrence(tmp_path):
    (tmp_path / "gateway.toml").write_text(gateway_toml(
        backends={"corp": backend("http://127.0.0.1:9/v1", headers={"A": "{uuid}", "B": "{uuid}"})},
        models=[model("m", "corp")]), encoding="utf-8")
    result = run_check(tmp_path)
    headers = headers_of(result.stdout, "corp")
    assert re.fullmatch(UUID, headers["A"]) and re.fullmatch(UUID, headers["B"]) and headers["A"] != headers["B"]


def test_the_start_up_warnings_are_shown(tmp_path):
    (tmp_path / "gateway.toml").write_text(gateway_toml(
        backends={"corp": backend("https://127.0.0.1:9/v1", verify=False)}, models=[model("o3-mini", "corp")]), encoding="utf-8")
    result = run_check(tmp_path)
    assert result.returncode == 0
    warnings = section(result.stdout, "warnings")
    assert len(warnings) == 3
    assert "o3-mini look like OpenAI reasoning models" in warnings[0]
    assert "verify = false" in warnings[1] and "inbound authentication is off" in warnings[2]


def test_default_config_is_found_as_make_run_finds_it(tmp_path):
    assert run_check(tmp_path).stdout.startswith("built-in demo config: OK")  # nothing: the demo
    (tmp_path / "gateway.toml").write_text(gateway_toml(backends={"b": backend("demo://echo")}, models=[model("local", "b")]), encoding="utf-8")
    assert run_check(tmp_path).stdout.startswith("gateway.toml: OK")  # gateway.toml in the working directory
    (tmp_path / "other.toml").write_text(gateway_toml(backends={"b": backend("demo://echo")}, models=[model("named", "b")]), encoding="utf-8")
    named = run_check(tmp_path, env={"GATEWAY_CONFIG": "other.toml"})  # GATEWAY_CONFIG wins over gateway.toml
    assert named.stdout.startswith("other.toml: OK") and "named → b → named" in named.stdout
    assert run_check(tmp_path, "gateway.toml", env={"GATEWAY_CONFIG": "other.toml"}).stdout.startswith("gateway.toml: OK")


def startup_error(tmp_path, config_text, env) -> str:
    """The error line the real server (gunicorn with gunicorn.conf.py) prints for this config."""
    server = GatewayServer(config_text, tmp_path / "server", env=env)
    try:
        assert server.wait_exit() != 0
        log = server.log()
    finally:
        server.stop()
    return next(line for line in log.splitlines() if line.startswith("Error: "))


def test_a_bad_config_fails_with_the_line_start_up_prints(tmp_path):
    bad = gateway_toml(backends={"corp": {**CORP, "colour": "blue"}}, models=[model("m", "corp")])
    (tmp_path / "gateway.toml").write_text(bad, encoding="utf-8")
    env = {"CORP_TICKET": SECRET, "OPTIONAL": ""}
    result = run_check_command(tmp_path, "gateway.toml", env=env)
    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    line = result.stderr.strip()
    assert line.startswith("Error: llm-gateway cannot start: gateway.toml: ")
    assert line.endswith("backends.corp.colour: unknown key")
    assert line == startup_error(tmp_path, bad, env).replace(str(tmp_path / "server" / "gateway.toml"), "gateway.toml")


def test_an_unset_variable_is_named_and_no_value_is_printed(tmp_path):
    (tmp_path / "corp.toml").write_text(GOOD, encoding="utf-8")
    result = run_check(tmp_path, "corp.toml", env={"GATEWAY_API_KEY": "sk-check-inbound-1234", "OPTIONAL": ""})
    assert result.returncode == 1
    assert "backends.corp.headers.x-dep-ticket: environment variable CORP_TICKET is not set" in result.stderr
    assert "sk-check-inbound-1234" not in result.stderr + result.stdout


def test_what_only_a_worker_finds_fails_the_check_with_the_workers_line(tmp_path):
    # A PEM marker around garbage passes the master's structural check; OpenSSL rejects it.
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    config = gateway_toml(backends={"tls": backend("https://127.0.0.1:9/v1", ca_bundle=str(tmp_path / "ca.pem"))},
                          models=[model("m", "tls")])
    (tmp_path / "gateway.toml").write_text(config, encoding="utf-8")
    result = run_check(tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: llm-gateway cannot start: backends.tls.ca_bundle: not a usable CA bundle")
    assert result.stderr.strip() == startup_error(tmp_path, config, {})


def test_a_missing_file_is_an_error(tmp_path):
    result = run_check(tmp_path, "nope.toml")
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: llm-gateway cannot start: nope.toml: cannot read the config file: No such file or directory"


def test_without_a_command_it_shows_usage():
    result = subprocess.run([sys.executable, "-m", "gateway"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "usage: python -m gateway" in result.stderr and "check" in result.stderr


def test_pinned_parameters_are_shown(tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[backends.b]\nurl = "http://127.0.0.1:9/v1/chat/completions"\n'
        '[[models]]\nid = "m"\nbackend = "b"\ndefaults = { temperature = 0.4 }\noverrides = { top_p = 0.9 }\n',
        encoding="utf-8",
    )
    result = run_check(ROOT, str(config))
    assert result.returncode == 0, result.stderr
    assert "defaults temperature=0.4; overrides top_p=0.9" in result.stdout


def test_it_says_where_stored_responses_are_kept(tmp_path):
    def stored(gateway, env=None):
        (tmp_path / "gateway.toml").write_text(gateway_toml(gateway=gateway, backends={"b": backend("demo://echo")}, models=[model("m", "b")]))
        result = run_check(tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        return section(result.stdout, "stored Responses API answers")

    assert stored({"heartbeat_seconds": 5}) == [f"kept 3600 s, in SQLite under {tmp_path / 'var'} (data_dir), shared by this instance's workers"]
    assert stored({"heartbeat_seconds": 5}, env={"GATEWAY_DATA_DIR": "/var/lib/llm-gateway"})[0].startswith("kept 3600 s, in SQLite under /var/lib/llm-gateway ")
    assert stored({"data_dir": "state", "response_store_seconds": 600}, env={"GATEWAY_DATA_DIR": "/elsewhere"})[0].startswith(
        f"kept 600 s, in SQLite under {tmp_path / 'state'} ")  # the file's own data_dir wins
    assert stored({"redis_url": "redis://:pw-9c2e4f@cache.corp:6380/0"}) == ["kept 3600 s, in Redis at cache.corp:6380, shared by every instance"]
    assert stored({"response_store_seconds": 0}) == ["not stored (response_store_seconds = 0)"]


def test_replicas_show_their_strategy_weights_and_health_checks(tmp_path):
    gpu = "http://gpu{}.lab:8000/v1/chat/completions"
    config = gateway_toml(
        backends={
            "gpu1": backend(gpu.format(1), weight=2, health_url="http://gpu1.lab:8000/health?token=hk-77a1c9e0", health_interval_seconds=5),
            "gpu2": backend(gpu.format(2), health_url="http://gpu2.lab:8000/health"),
            "gpu3": backend(gpu.format(3)),
        },
        models=[{"id": "m", "backends": ["gpu1", "gpu2", "gpu3"], "strategy": "affinity"},
                {"id": "n", "backends": ["gpu2", "gpu3"], "strategy": "least_busy"}],
    )
    (tmp_path / "gateway.toml").write_text(config, encoding="utf-8")
    result = run_check(tmp_path)
    assert result.returncode == 0, result.stderr
    models = section(result.stdout, "models")
    assert models[:4] == ["m → gpu1 → m", "m → gpu2 → m", "m → gpu3 → m",
                          "strategy affinity: a conversation stays on one backend (chat id, else user, else its start), by weight; weights gpu1=2, gpu2=1, gpu3=1"]
    assert "strategy least_busy: the backend with the fewest requests in flight for its capacity and weight (in flight per worker); weights gpu2=1, gpu3=1" in models
    gpu1, gpu3 = section(result.stdout, "backend gpu1:"), section(result.stdout, "backend gpu3:")
    assert ("health check: GET http://gpu1.lab:8000/health every 5 s (±10 %), timeout 2 s; failing → skipped at once, "
            "back after 2 passes in a row") in gpu1 and "weight: 2" in gpu1
    assert not any(line.startswith(("health check", "weight")) for line in gpu3)
    assert "hk-77a1c9e0" not in result.stdout


def test_it_shows_keys_budgets_and_where_usage_is_stored_never_a_key(tmp_path):
    text = gateway_toml(
        gateway={"api_keys": ["${GATEWAY_API_KEY}"], "admin_keys": ["${ADMIN_KEY}"], "database_url": "postgresql://gw:${PGPASS}@db.corp:5433/usage"},
        backends={"b": backend("demo://echo")},
        models=[model("m", "b"), model("n", "b")],
        keys={"data-team": {"key": "${TEAM_KEY}", "models": ["m"], "tokens_per_day": 2_000_000, "requests_per_minute": 600}},
        limits={"per_user_tokens_per_month": 50_000, "users": {"lee@corp.example": {"tokens_per_month": 0}}},
    )
    (tmp_path / "gateway.toml").write_text(text, encoding="utf-8")
    env = {"GATEWAY_API_KEY": "sk-chk-anon-5555", "ADMIN_KEY": "adm-chk-6666", "PGPASS": "pg-chk-7777", "TEAM_KEY": "sk-chk-team-8888"}
    result = run_check(tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert section(result.stdout, "usage, keys and budgets") == [
        "ledger: PostgreSQL at db.corp:5433/usage, shared by every instance",
        "/admin/usage: 1 admin key",
        "key data-team: m; tokens per day 2,000,000, per month no budget; 600 requests per minute",
        "per user: tokens per day no budget, per month 50,000",
        "lee@corp.example: tokens per month unlimited",
        "budgets are checked against the ledger's counts: a used-up budget binds on every worker within 3 s",
    ]
    assert "inbound auth: on (1 key, 1 named key)" in result.stdout
    assert "[keys.*] requests_per_minute hold per worker" in result.stdout  # a warning: no Redis
    assert not any(secret in result.stdout + result.stderr for secret in env.values())
