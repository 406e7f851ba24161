"""Leaks planted on purpose, for tests/test_secrets.py only: it runs this file in a pytest of its
own (the name is not test_*.py, so the suite never collects it). Each test passes, having read or
started something that carries one of the suite's secrets, or an empty gateway log; the
end-of-run scan must then fail that run and name each one, whichever process saw it."""

import flask
import requests

from tests import secret_scan
from tests.backends import TestBackend
from tests.conftest import INBOUND_KEY, REDIS_PASSWORD, TICKET, SecretWatchingClient


def test_an_answer_read_through_requests_carries_a_secret():
    backend = TestBackend(streaming=False)
    backend.respond_with(lambda exchange: exchange.send_json(200, {"echo": TICKET}))
    try:
        assert requests.post(backend.url, json={}, timeout=10).json() == {"echo": TICKET}
    finally:
        backend.stop()


def test_an_in_process_answer_carries_a_secret():
    app = flask.Flask("planted")
    app.test_client_class = SecretWatchingClient
    app.add_url_rule("/status.json", view_func=lambda: {"key": INBOUND_KEY})
    assert app.test_client().get("/status.json").json == {"key": INBOUND_KEY}


def test_a_gateway_log_carries_a_secret(tmp_path):
    """A log registered as every test gateway's is (tests/gunicorn_server.py registers each real
    gateway's stderr this very way; the suite's own run shows how many it searched)."""
    log = tmp_path / "gateway.stderr"
    log.write_text(f"[WARNING] Redis at redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0 is unreachable\n", encoding="utf-8")
    secret_scan.watch_log(log)


def test_a_gateway_log_is_empty(tmp_path):
    log = tmp_path / "gateway.stderr"
    log.touch()
    secret_scan.watch_log(log)
