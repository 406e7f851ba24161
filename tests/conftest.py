"""Shared fixtures: two real test backends and a real gunicorn+gevent gateway in front of them."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import flask
import pytest
import requests
from flask.testing import FlaskClient

from gateway.config import parse_config
from tests import secret_scan, xdist_groups
from tests.backends import TestBackend, closed_port
from tests.configs import backend, gateway_toml, model
from tests.gunicorn_server import GatewayServer

FIXTURES = Path(__file__).parent / "fixtures" / "openwebui"
TICKET = "tkt-7f3a9c2e5b1d-SECRET"  # the corporate backend's ticket: must never leave the gateway
WRONG_TICKET = "not-the-ticket-9e8d"  # a literal ticket in a config file: just as secret
INBOUND_KEY = "sk-inbound-4e1f0b7a9d3c"  # the key clients present to the hardened gateway
REDIS_PASSWORD = "redis-pw-8c2f6a1e93"  # the test Redis's password, written into redis_url (test_scale_out.py)
PG_PASSWORD = "pg-pass-6d2e91b4c7"  # the test PostgreSQL's password, in database_url (tests/postgres_server.py)
# The usage tests' inbound and admin keys (test_usage.py, test_usage_servers.py, test_usage_postgres.py).
USAGE_KEYS = ("adm-key-71c3e9a0f2", "sk-team-2b8d4f6e1a", "sk-lab-9f0e3c5d7b", "sk-anon-4a6c8e0b2d",
              "adm-key-5e0d2c9b41", "sk-team-8c1f7e3a90", "sk-capped-3d9b6f1e27", "sk-anon-0f4e8a2c6d", "adm-key-0c7a5e3b19")
# Every value the suite configures as a secret: none may come back out (the scan at the end of the run).
SECRETS = (TICKET, WRONG_TICKET, INBOUND_KEY, "tkt-secret-1234", "sk-inbound-5678", REDIS_PASSWORD, PG_PASSWORD, *USAGE_KEYS)
HEARTBEAT = 2

# pytest imports this file as `conftest`; test modules import `tests.conftest`. One module, not two
# copies: else requests would be patched twice.
sys.modules.setdefault("tests.conftest", sys.modules[__name__])

# --- every response body the suite reads (through requests, or in-process) is searched for SECRETS
# What each test process finds, and the gateway logs it started, are gathered by tests/secret_scan.py
# from every xdist worker; the controller fails the run at its very end if anything leaked.
_read_body = requests.models.Response.iter_content


def _iter_content_watching_for_secrets(self, *args, **kwargs):
    if flask.has_app_context():  # the in-process gateway reading its backend: not an answer to a client
        yield from _read_body(self, *args, **kwargs)
        return
    seen = [str(self.headers).encode()]
    for chunk in _read_body(self, *args, **kwargs):
        seen.append(chunk if isinstance(chunk, bytes) else chunk.encode())
        yield chunk
    secret_scan.check_answer(self.url, b"".join(seen), SECRETS)


requests.models.Response.iter_content = _iter_content_watching_for_secrets


class SecretWatchingClient(FlaskClient):
    """Flask's test client for the in-process layer; its answers are searched for SECRETS too.
    It reads each answer whole before returning it (in-process streams are for fast backends only)."""

    def open(self, *args, **kwargs):
        response = super().open(*args, **kwargs)
        secret_scan.check_answer(response.request.url, str(response.headers).encode() + response.get_data(), SECRETS)
        return response


# --- the test processes: with pytest-xdist, a controller and its workers -------------------------
SCAN_RESULT = pytest.StashKey[tuple]()


def pytest_configure(config):
    secret_scan.start(config)
    xdist_groups.start(config)


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hooks: absent with -p no:xdist
def pytest_configure_node(node):
    secret_scan.tell_worker(node)
    xdist_groups.tell_worker(node)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    return xdist_groups.make_scheduler(config, log)


def pytest_runtest_logreport(report):
    xdist_groups.record(report)


@pytest.hookimpl(trylast=True)  # after -k and -m deselected theirs
def pytest_collection_modifyitems(config, items):
    xdist_groups.write_groups(config, items)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    """The secrets scan, in the controller only: after every worker finished (xdist's test loop
    ends only then) and every fixture was torn down, so each gateway has stopped and its log is whole."""
    if not secret_scan.is_controller(session.config):
        return
    xdist_groups.finish(session.config)
    problems, logs = secret_scan.scan(SECRETS)
    session.config.stash[SCAN_RESULT] = problems, logs
    secret_scan.finish()
    if problems and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, config):
    if SCAN_RESULT not in config.stash:
        return
    problems, logs = config.stash[SCAN_RESULT]
    if problems:
        terminalreporter.section(f"SECRETS LEAKED: {len(problems)} finding(s) of the end-of-run scan", sep="!", red=True, bold=True)
        for problem in problems:
            terminalreporter.line(problem, red=True)
        # and counted in the closing line: "... passed, 2 secrets leaked in ..."
        terminalreporter.stats.setdefault("secrets leaked", []).extend(SimpleNamespace(finding=p) for p in problems)
    else:
        terminalreporter.line(f"secrets scan: no configured secret in any answer the tests read, nor in the {logs} gateway log(s) they started")


def json_of(response):
    """The JSON body of an answer from either layer: requests' (real server) or Flask's test client."""
    return response.get_json() if hasattr(response, "get_json") else response.json()


def fixture_body(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


CORP_HEADERS = {
    "x-dep-ticket": "${CORP_TICKET}",
    "Send-System-Name": "D0aKG",
    "User-Id": "{user.email|anonymous}",
    "User-Name": "{user.name}",
    "User-Type": "AD_ID",
    "Prompt-Msg-Id": "{uuid}",
    "Completion-Msg-Id": "{uuid}",
    "Chat-Id": "{chat_id}",
}


# The shared backends fail on purpose test after test: their circuit breakers must not open
# (tests/test_failover.py proves the breaker on backends of its own).
NO_BREAKER = {"failure_threshold": 1_000_000}


def main_config(openai_url: str, corp_url: str) -> str:
    return gateway_toml(
        gateway={"heartbeat_seconds": HEARTBEAT},
        backends={
            "openai": backend(openai_url, streaming=True, read_timeout=20, **NO_BREAKER),
            # the same OpenAI-compatible server, called without streaming
            "openai_nostream": backend(openai_url, streaming=False, **NO_BREAKER),
            "corp": backend(corp_url, streaming=False, drop_params=["x_drop_me"], headers=CORP_HEADERS, **NO_BREAKER),
            "corp_wrong_ticket": backend(corp_url, headers={"x-dep-ticket": WRONG_TICKET}, **NO_BREAKER),
            "nowhere": backend(f"http://127.0.0.1:{closed_port()}/v1/chat/completions", **NO_BREAKER),
        },
        models=[
            model("gpt-stream", "openai", upstream="upstream-stream-model"),
            model("openai-nostream", "openai_nostream"),
            model("Gauss2-37b-instruct-v1.0", "corp", name="Gauss2 37B", system_prompt="아는 것에 대해서만 대답해주세요."),
            model("corp-plain", "corp", upstream="Gauss2-37b-instruct-v1.0"),
            model("corp-wrong-ticket", "corp_wrong_ticket"),
            model("nowhere", "nowhere"),
        ],
    )


@pytest.fixture(scope="session")
def openai_backend():
    backend = TestBackend(streaming=True)
    yield backend
    backend.stop()


@pytest.fixture(scope="session")
def corp_backend():
    backend = TestBackend(streaming=False, ticket=TICKET)
    yield backend
    backend.stop()


@pytest.fixture(scope="session")
def gateway(openai_backend, corp_backend, tmp_path_factory):
    server = GatewayServer(
        main_config(openai_backend.url, corp_backend.url),
        tmp_path_factory.mktemp("gateway"),
        env={"CORP_TICKET": TICKET},
        workers=1,
    )
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _fresh_backends(request):
    """Each test starts with empty request logs and default behavior on the shared backends."""
    yield
    for name in ("openai_backend", "corp_backend"):
        if name in request.fixturenames:
            request.getfixturevalue(name).reset()


@pytest.fixture(scope="session")
def main_app(openai_backend, corp_backend):
    """The same gateway as `gateway`, built in this process: for what does not depend on the server."""
    from app import create_app  # here, not at the top: a test process that builds no app starts sooner

    config = parse_config(main_config(openai_backend.url, corp_backend.url), "test config", {"CORP_TICKET": TICKET})
    app = create_app(config)
    app.test_client_class = SecretWatchingClient
    return app


@pytest.fixture
def app_client(main_app):
    """Flask's test client for `main_app`: the in-process layer (schema, upstream call, errors, models)."""
    return main_app.test_client()


@pytest.fixture
def client(gateway):
    """The real openai SDK, pointed at the gateway; closed after the test (an open one makes the
    server's stop wait out its keep-alive connection)."""
    import openai  # here, not at the top: a test process that needs no SDK starts sooner

    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=30) as sdk:
        yield sdk
