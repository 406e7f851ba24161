"""The end-of-run secrets scan finds what any test process saw.

The scan itself (tests/secret_scan.py, wired in by tests/conftest.py) runs in the controlling
process after every test of the run: no configured secret in any answer a test read (through
requests or the in-process client) nor in the log of any gateway a test started, and no such
log empty. Here a pytest of its own runs tests/leak_plants.py, whose passing tests plant one leak
each, on two xdist workers: that run must fail, naming each secret, where it was seen, by which
test and in which worker. (Without xdist the one process is both worker and controller: the same
code, less the handing over.)
"""

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import INBOUND_KEY, REDIS_PASSWORD, TICKET
from tests.gunicorn_server import ROOT

ANSWERS = [
    rf"{re.escape(repr(TICKET))} in the answer from http://127\.0\.0\.1:\d+/v1/chat/completions "
    r"\(read by tests/leak_plants\.py::test_an_answer_read_through_requests_carries_a_secret \(call\), in (\w+)\)",
    rf"{re.escape(repr(INBOUND_KEY))} in the answer from http://localhost/status\.json "
    r"\(read by tests/leak_plants\.py::test_an_in_process_answer_carries_a_secret \(call\), in (\w+)\)",
]
LOGS = [
    rf"{re.escape(repr(REDIS_PASSWORD))} in gateway log \S+/gateway\.stderr "
    r"\(started by tests/leak_plants\.py::test_a_gateway_log_carries_a_secret \(call\), in (\w+)\)",
    r"gateway log \S+/gateway\.stderr is missing or empty: the check would prove nothing "
    r"\(started by tests/leak_plants\.py::test_a_gateway_log_is_empty \(call\), in (\w+)\)",
]


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory) -> tuple[int, str]:
    """tests/leak_plants.py run on two xdist workers: (exit status, output)."""
    # Nothing of this run's own pytest (xdist worker id, PYTEST_ADDOPTS) reaches the inner one, and
    # it leaves out hypothesis's plugin, which its tests do not use (1 s of CPU over its processes).
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "GATEWAY_"))}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", f"--basetemp={tmp_path_factory.mktemp('planted')}",
         "-n", "2", "tests/leak_plants.py"],
        cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120,
    )
    return result.returncode, result.stdout + result.stderr


def reported(output: str, pattern: str) -> str:
    """The worker a finding names; fails if the scan did not report it."""
    match = re.search(pattern, output)
    assert match, f"the scan did not report /{pattern}/:\n{output}"
    return match.group(1)


def test_the_planted_run_is_failed_by_the_controllers_scan_of_what_both_workers_saw(planted_run):
    returncode, output = planted_run
    assert returncode == 1, output
    assert "SECRETS LEAKED: 4 finding(s)" in output, output
    assert re.search(r"=+ 4 passed, 4 secrets leaked in ", output), output  # the planted tests themselves pass
    # Seen by both workers (the controller runs no test), found by the controller's scan.
    assert {reported(output, pattern) for pattern in ANSWERS + LOGS} == {"gw0", "gw1"}


def test_answers_that_carried_a_secret_are_named_with_where_they_came_from_and_who_read_them(planted_run):
    for pattern in ANSWERS:
        reported(planted_run[1], pattern)


def test_gateway_logs_with_a_secret_or_empty_are_named_with_the_test_that_started_them(planted_run):
    for pattern in LOGS:
        reported(planted_run[1], pattern)
