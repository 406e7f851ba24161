"""Runs last: no configured secret appeared in any response or any gateway log of the whole suite."""

import pytest

from tests.conftest import LEAKS, SECRETS
from tests.gunicorn_server import LOGS


@pytest.mark.last
def test_no_secret_in_any_response():
    assert LEAKS == []


@pytest.mark.last
def test_no_secret_in_any_gateway_log():
    if not LOGS:
        pytest.skip("run with the whole suite: no gateway ran in this session")
    for path in LOGS:
        text = path.read_bytes()
        assert text, f"{path} is empty: the check would prove nothing"
        for secret in SECRETS:
            assert secret.encode() not in text, f"{secret!r} leaked into {path}"
