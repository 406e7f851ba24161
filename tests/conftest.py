"""Shared fixtures: two real test backends and a real gunicorn+gevent gateway in front of them."""

import json
from pathlib import Path

import openai
import pytest
import requests

from tests.backends import TestBackend, closed_port
from tests.gunicorn_server import GatewayServer

FIXTURES = Path(__file__).parent / "fixtures" / "openwebui"
TICKET = "tkt-7f3a9c2e5b1d-SECRET"  # the corporate backend's ticket: must never leave the gateway
WRONG_TICKET = "not-the-ticket-9e8d"  # a literal ticket in a config file: just as secret
INBOUND_KEY = "sk-inbound-4e1f0b7a9d3c"  # the key clients present to the hardened gateway
# Every value the suite configures as a secret; test_secrets.py checks none ever came back out.
SECRETS = (TICKET, WRONG_TICKET, INBOUND_KEY, "tkt-secret-1234", "sk-inbound-5678")
HEARTBEAT = 2

# --- every response body the suite reads through requests is searched for SECRETS ---------------
LEAKS = []  # (url, secret) for each response that carried a secret
_read_body = requests.models.Response.iter_content


def _iter_content_watching_for_secrets(self, *args, **kwargs):
    seen = [str(self.headers).encode()]
    for chunk in _read_body(self, *args, **kwargs):
        seen.append(chunk if isinstance(chunk, bytes) else chunk.encode())
        yield chunk
    whole = b"".join(seen)
    LEAKS.extend((self.url, s) for s in SECRETS if s.encode() in whole)


requests.models.Response.iter_content = _iter_content_watching_for_secrets


def pytest_collection_modifyitems(items):
    """Tests marked `last` run after all others (they check what the whole suite produced)."""
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)


def fixture_body(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def main_config(openai_url: str, corp_url: str) -> str:
    return f"""
[gateway]
heartbeat_seconds = {HEARTBEAT}

[backends.openai]
url = "{openai_url}"
streaming = true
read_timeout = 20

[backends.openai_nostream]  # the same OpenAI-compatible server, called without streaming
url = "{openai_url}"
streaming = false

[backends.corp]
url = "{corp_url}"
streaming = false
drop_params = ["x_drop_me"]

[backends.corp.headers]
x-dep-ticket = "${{CORP_TICKET}}"
Send-System-Name = "D0aKG"
User-Id = "{{user.email|anonymous}}"
User-Name = "{{user.name}}"
User-Type = "AD_ID"
Prompt-Msg-Id = "{{uuid}}"
Completion-Msg-Id = "{{uuid}}"
Chat-Id = "{{chat_id}}"

[backends.corp_wrong_ticket]
url = "{corp_url}"

[backends.corp_wrong_ticket.headers]
x-dep-ticket = "{WRONG_TICKET}"

[backends.nowhere]
url = "http://127.0.0.1:{closed_port()}/v1/chat/completions"

[[models]]
id = "gpt-stream"
backend = "openai"
upstream = "upstream-stream-model"

[[models]]
id = "openai-nostream"
backend = "openai_nostream"

[[models]]
id = "Gauss2-37b-instruct-v1.0"
backend = "corp"
name = "Gauss2 37B"
system_prompt = "아는 것에 대해서만 대답해주세요."

[[models]]
id = "corp-plain"
backend = "corp"
upstream = "Gauss2-37b-instruct-v1.0"

[[models]]
id = "corp-wrong-ticket"
backend = "corp_wrong_ticket"

[[models]]
id = "nowhere"
backend = "nowhere"
"""


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


@pytest.fixture
def client(gateway):
    """The real openai SDK, pointed at the gateway."""
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=30)
