"""The JSON access log: every line starts with `ts` (when the request started, ISO-8601 UTC with Z),
and GATEWAY_ACCESS_LOG sends the lines to a file instead of stderr.

The file under real gunicorn workers (opened once per worker, each line written at once) is in test_hosting.py.
"""

import json
import logging
import os
import time
from types import SimpleNamespace

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import ConfigError
from gateway.telemetry.record import LINE_LIMIT, NAMES_LIMIT, PATH_LIMIT, AccessLog, RequestRecord, access_log, timestamp
from tests import hypothesis_profile  # noqa: F401 - how many examples @given tries
from tests.backends import wait_until


@pytest.mark.parametrize("wall_time, expected", [
    (0, "1970-01-01T00:00:00.000Z"),
    (1795688512.123456, "2026-11-26T10:21:52.123Z"),
    (1795688512.9999, "2026-11-26T10:21:52.999Z"),
])
def test_timestamp_is_iso_8601_utc_with_milliseconds_and_z(wall_time, expected):
    assert timestamp(wall_time) == expected


def test_timestamps_of_other_seconds_are_their_own_whatever_was_written_before():
    moments = [1795688512.123456, 1795688512.9999, 1795688513.0, 1795688511.5, 1795688512.5, 0.25]
    for wall_time in moments + moments[::-1]:
        seconds, millis = divmod(int(wall_time * 1000), 1000)
        assert timestamp(wall_time) == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def test_a_line_with_letters_beyond_ascii_or_values_orjson_does_not_write_is_written_as_json_writes_it(monkeypatch):
    lines = []
    monkeypatch.setattr(access_log, "write", lines.append)
    record = RequestRecord("r1", "POST", "/v1/chat/completions")
    record.status, record.model = 400, "모델-\u2028"
    assert record.finish()
    assert lines[0].isascii() and b"\\ubaa8" in lines[0] and b"\\u2028" in lines[0] and b"\n" not in lines[0]
    assert json.loads(lines[0])["model"] == "모델-\u2028"
    # DEL, which json escapes and orjson writes raw (a client's path may hold it): escaped.
    record = RequestRecord("r0", "GET", "/v1/a\x7fb")
    record.status = 404
    assert record.finish()
    assert b"\x7f" not in lines[-1] and b"\\u007f" in lines[-1]
    lines.pop()
    # What orjson does not write: a backend's token count beyond 64 bits, a name with a lone surrogate.
    record = RequestRecord("r2", "POST", "/v1/responses")
    record.status, record.usage, record.dropped_tools = 200, {"total_tokens": 2 ** 70}, ("web_search\ud800",)
    assert record.finish()
    assert json.loads(lines[1])["total_tokens"] == 2 ** 70 and json.loads(lines[1])["dropped_tools"] == ["web_search\ud800"]


def test_access_log_line_starts_with_ts_of_when_the_request_started(monkeypatch):
    lines = []
    monkeypatch.setattr(access_log, "write", lines.append)
    clock = [1795688512.123456]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    record = RequestRecord("r1", "GET", "/healthz")
    clock[0] += 95  # the request takes a while: ts still says when it started
    record.status = 200
    assert record.finish()
    line = json.loads(lines[0])
    assert list(line)[0] == "ts"
    assert line["ts"] == "2026-11-26T10:21:52.123Z"


def test_access_log_destination_dash_is_stderr(capfd):
    log = AccessLog()
    log.open("-")
    log.write(b'{"ts":"x"}')
    assert capfd.readouterr().err == '{"ts":"x"}\n'


def test_access_log_file_is_appended_to_and_each_line_is_on_disk_at_once(tmp_path):
    path = tmp_path / "access.log"
    path.write_text('{"earlier":"line"}\n')
    log = AccessLog()
    log.open(str(path))
    try:
        log.write(b'{"ts":"x"}')
        assert path.read_text() == '{"earlier":"line"}\n{"ts":"x"}\n'  # read while still open
    finally:
        os.close(log.fd)


def test_an_access_log_that_cannot_be_written_says_so_once_and_fails_no_request(tmp_path):
    errors = logging.Handler()
    errors.emit = lambda record: said.append(record.getMessage())
    said, gateway_log = [], logging.getLogger("gateway")
    log = AccessLog()
    log.fd = os.open(tmp_path, os.O_RDONLY)  # a directory: every write fails (EBADF)
    gateway_log.addHandler(errors)
    try:
        log.write(b'{"ts":"x"}')
        log.write(b'{"ts":"y"}')
    finally:
        gateway_log.removeHandler(errors)
        os.close(log.fd)
    assert said == ["the access log cannot be written (Bad file descriptor): lines are lost until it can"]


def test_an_access_log_path_that_cannot_be_opened_is_a_start_up_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^GATEWAY_ACCESS_LOG: cannot open .*/no/such/dir/a\.log for appending"):
        AccessLog().open(str(tmp_path / "no" / "such" / "dir" / "a.log"))


# --- every line fits one write a pipe takes whole --------------------------------------------------


def written(record: RequestRecord) -> bytes:
    lines = []
    original, access_log.write = access_log.write, lines.append
    try:
        assert record.finish()
    finally:
        access_log.write = original
    return lines[0]


def test_a_clients_long_path_and_many_names_are_shortened_so_the_line_fits_one_pipe_write():
    """A pipe takes a write of up to 4 KiB whole; a longer line could be split around another
    worker's. What the client chose is cut, and the line says so."""
    path = "/v1/" + "\u4e00" * 4000  # escaped, six bytes a character: 24 KB as written
    record = RequestRecord("r1", "POST", path)
    record.status, record.outcome = 404, "rejected"
    record.unknown_fields = tuple(f"field_{n}_" + "x" * 100 for n in range(1000))
    record.dropped_tools = ("web_search",) * 3
    data = written(record)
    assert len(data) + 1 <= LINE_LIMIT and data.isascii()
    line = json.loads(data)
    assert line["truncated"] is True
    assert line["path"].endswith("...") and path.startswith(line["path"][:-3]) and len(json.dumps(line["path"])) - 2 <= PATH_LIMIT
    assert len(line["unknown_fields"]) == NAMES_LIMIT and line["unknown_fields"][0].startswith("field_0_x")
    assert line["dropped_tools"] == ["web_search"] * 3  # short names stay whole
    assert (line["request_id"], line["status"], line["outcome"]) == ("r1", 404, "rejected")


def test_a_usual_line_is_written_whole_and_unmarked():
    record = RequestRecord("r1", "POST", "/v1/responses/resp_0123456789abcdef0123456789abcdef")
    record.status, record.unknown_fields = 200, ("prompt_cache_key", "service_tier")
    line = json.loads(written(record))
    assert "truncated" not in line
    assert line["path"] == "/v1/responses/resp_0123456789abcdef0123456789abcdef"
    assert line["unknown_fields"] == ["prompt_cache_key", "service_tier"]


def test_a_line_still_too_long_keeps_its_core_fields_alone():
    """An operator's many long backend names, a backend's 4,000-digit token count: the line goes
    out with what identifies the request and how it ended."""

    record = RequestRecord("r1", "POST", "/v1/chat/completions")
    record.status, record.model, record.stream, record.outcome = 200, "m", True, "completed"
    record.route = ("round_robin", [SimpleNamespace(name=f"backend-{n}-" + "b" * 60) for n in range(100)], None)
    record.usage = {"prompt_tokens": 12, "completion_tokens": 10 ** 4000, "total_tokens": 2 ** 64}
    data = written(record)
    assert len(data) + 1 <= LINE_LIMIT
    line = json.loads(data)
    assert line == {
        "ts": line["ts"], "request_id": "r1", "pid": os.getpid(), "method": "POST", "path": "/v1/chat/completions",
        "model": "m", "upstream_model": None, "backend": None, "status": 200, "stream": True, "ttfb_ms": None,
        "duration_ms": line["duration_ms"], "outcome": "completed", "prompt_tokens": 12, "truncated": True,
    }


texts = st.text(max_size=3000)


@given(path=texts, model=st.none() | texts, key=st.none() | texts, backends=st.lists(texts, max_size=40),
       unknown=st.lists(texts, max_size=200), tools=st.lists(texts, max_size=40), error=st.none() | texts)
def test_every_line_fits_one_pipe_write_and_is_one_json_object_in_printable_ascii(path, model, key, backends, unknown, tools, error):
    record = RequestRecord("r1", "GET", "/" + path)
    record.status, record.model, record.key, record.error = 200, model, key, error
    record.unknown_fields, record.dropped_tools = tuple(unknown), tuple(tools)
    if backends:
        record.route = ("affinity", [SimpleNamespace(name=name) for name in backends], "user")
    data = written(record)
    assert len(data) + 1 <= LINE_LIMIT
    assert all(32 <= byte < 127 for byte in data)
    line = json.loads(data)
    assert line["request_id"] == "r1" and line["status"] == 200
    if "truncated" not in line:
        assert (line["path"], line["model"], line.get("key"), line.get("unknown_fields", [])) == ("/" + path, model, key or None, unknown)


def test_a_real_workers_line_for_a_long_path_fits_one_pipe_write(gateway):
    path = "/v1/" + "%01" * 1300  # within gunicorn's 4,094-byte request line; 7,800 bytes escaped (\u0001) in the log
    response = requests.get(gateway.url + path, timeout=10)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    request_id = response.headers["X-Request-Id"]
    wait_until(lambda: gateway.access_line(request_id), message="the access-log line")
    raw = next(line for line in gateway.log().splitlines() if request_id in line)
    assert len(raw.encode()) + 1 <= LINE_LIMIT
    line = json.loads(raw)
    assert line["truncated"] is True and line["path"].startswith("/v1/\x01\x01") and line["status"] == 404
