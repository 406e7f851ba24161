"""gateway/header_parsing.py reads a backend's response head into the same HTTPMessage as
http.client's email parser: the same headers in the same order, the same defects, the same
payload, whatever the lines hold; and a real backend call goes through it."""

import http.client
import io
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import header_parsing
from tests import hypothesis_profile  # noqa: F401 - how many examples @given tries

EMAIL_PARSERS = header_parsing.HTTP_CLIENTS_OWN


def read(parse, head: bytes):
    message = parse(io.BufferedReader(io.BytesIO(head)))
    return (type(message), message.items(), [type(defect) for defect in message.defects], message.get_payload(),
            message.get_unixfrom())


@pytest.mark.parametrize("head", [
    b"Content-Type: application/json\r\nContent-Length: 345\r\nDate: Sun, 06 Dec 2026 18:00:00 GMT\r\n\r\n",
    b"A:b\r\nA:  c  \r\nX-Empty:\r\nX-Tab:\tv\t\r\n\r\n",  # repeated, no blank, blanks kept at the end
    b"Folded: a\r\n  b\r\n\r\n",  # a continuation line
    b"Bad Name: x\r\n\r\n",  # not a header: the body starts there
    b": no name\r\n\r\n",
    b"Stray: a\rb\r\n\r\n",  # a CR alone ends a line for the email parser
    b"Latin: caf\xe9\r\n\r\n",
    b"LF: only\n\n",
    b"\r\n",
    b"From someone\r\nA: b\r\n\r\n",  # a Unix From line
    b"NoColon\r\nA: b\r\n\r\n",
    b"A: b\r\nEnded: by the connection\r\n",  # no blank line: the end of the stream
])
def test_a_head_reads_as_the_email_parser_reads_it(head):
    assert read(header_parsing.parse_headers, head) == read(EMAIL_PARSERS, head)


_NAME = st.text(st.sampled_from("Aa-_:. \t\x7f\xe9(0"), min_size=0, max_size=6)
_VALUE = st.text(st.sampled_from("ab :\t\r\xe9\x00,;="), max_size=8)
_LINE = st.one_of(
    st.builds(lambda name, value, end: f"{name}:{value}{end}", _NAME, _VALUE, st.sampled_from(["\r\n", "\n"])),
    st.builds(lambda blank, value: f"{blank}{value}\r\n", st.sampled_from([" ", "\t"]), _VALUE),  # a continuation
    st.builds(lambda value: f"{value}\r\n", _VALUE),  # anything
)


@given(st.lists(_LINE, max_size=6), st.sampled_from(["\r\n", "\n", ""]))
def test_any_head_reads_as_the_email_parser_reads_it(lines, end):
    head = "".join(lines).encode("latin-1") + end.encode()
    assert read(header_parsing.parse_headers, head) == read(EMAIL_PARSERS, head)


def test_http_clients_limits_still_hold():
    with pytest.raises(http.client.LineTooLong):
        header_parsing.parse_headers(io.BufferedReader(io.BytesIO(b"A: " + b"x" * 70_000 + b"\r\n\r\n")))
    with pytest.raises(http.client.HTTPException, match="more than 100 headers"):
        header_parsing.parse_headers(io.BufferedReader(io.BytesIO(b"A: b\r\n" * 101 + b"\r\n")))



def test_the_app_installs_it_and_a_backend_call_reads_its_head_through_it(app_client, openai_backend, monkeypatch):
    """main_app's create_app put it where http.client looks for it; the gateway's call to a
    loopback backend then reads that backend's head through it."""
    assert http.client.parse_headers is header_parsing.parse_headers
    heads = []  # the callers that read a head: the backend's server reads the request's too

    def parse_headers(fp, **kwargs):
        heads.append(sys._getframe(1).f_code.co_qualname)
        return header_parsing.parse_headers(fp, **kwargs)

    monkeypatch.setattr(http.client, "parse_headers", parse_headers)
    answer = app_client.post("/v1/chat/completions", json={"model": "gpt-stream", "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200, answer.get_json()
    assert "HTTPResponse.begin" in heads and len(openai_backend.requests) == 1


def test_the_python_running_the_tests_is_one_the_parser_was_checked_against():
    """On another Python http.client keeps its own parser (install does nothing): checked again first."""
    assert sys.version_info[:2] in header_parsing.PYTHON_RELEASES
