"""The JSON access log: every line starts with `ts` (when the request started, ISO-8601 UTC with Z),
and GATEWAY_ACCESS_LOG sends the lines to a file instead of stderr.

The file under real gunicorn workers (opened once per worker, each line written at once) is in test_hosting.py.
"""

import json
import logging
import os
import time

import pytest

from gateway.config import ConfigError
from gateway.telemetry.record import AccessLog, RequestRecord, access_log, timestamp


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
