"""The byte-level SSE decoder, fed every way a network can split a stream (ported from the openai SDK's cases)."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.sse import SSEDecoder
from tests import hypothesis_profile  # noqa: F401 - how many examples @given tries

STREAM = (
    b": keep-alive\n\n"
    b'data: {"content":"caf\xc3\xa9 \xe2\x80\xa8 line separator"}\n\n'
    b"event: message\r\nid: 7\r\ndata: first line\r\ndata: second line\r\n\r\n"
    b"data:no-space\r\rdata: [DONE]\n\n"
)
EXPECTED = [
    '{"content":"café \u2028 line separator"}'.encode(),
    b"first line\nsecond line",
    b"no-space",
    b"[DONE]",
]


def decode(chunks):
    decoder = SSEDecoder()
    events = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    return events + decoder.close()


def test_whole_stream():
    assert decode([STREAM]) == EXPECTED


@pytest.mark.parametrize("split", range(1, len(STREAM)))
def test_split_at_every_byte(split):
    assert decode([STREAM[:split], STREAM[split:]]) == EXPECTED


def test_one_byte_at_a_time():
    assert decode([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


def test_json_with_line_separator_stays_one_event():
    payload = json.dumps({"content": "a\u2028b\u2029c\x85d"}, ensure_ascii=False).encode()
    assert decode([b"data: " + payload + b"\n\n"]) == [payload]


def test_event_without_final_blank_line_is_finished_at_close():
    assert decode([b"data: last"]) == [b"last"]


def test_crlf_split_between_chunks_is_one_line_end():
    # "\r" at the end of one chunk and "\n" at the start of the next must not make a blank line
    assert decode([b"data: a\r", b"\ndata: b\r\n\r\n"]) == [b"a\nb"]


def test_comments_and_unknown_fields_carry_nothing():
    assert decode([b": ping\n\nretry: 10\n\ndatax: no\n\n"]) == []


def test_a_line_longer_than_the_limit_is_refused_not_buffered_forever():
    from gateway.sse import MAX_LINE, SSEError

    decoder = SSEDecoder()
    decoder.feed(b"data: ")
    with pytest.raises(SSEError):
        for _ in range(MAX_LINE // 65536 + 2):
            decoder.feed(b"x" * 65536)


LINES = st.sampled_from([
    b'data: {"a":1}', b"data: ", b"data:x", b"data: two\ndata: lines", b": keep-alive", b"event: message", b"id: 7",
    b"retry: 10", b"datax: no", b'data: {"s":"\xe2\x80\xa8"}',
])


@given(
    events=st.lists(st.lists(LINES, min_size=1, max_size=3), max_size=8),
    newline=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
)
def test_any_split_of_any_stream_decodes_as_one_byte_at_a_time(events, newline, cuts):
    # Reads that end at an event's end take a shortcut; every other read the general way. Both
    # must give what feeding the stream one byte at a time gives.
    stream = b"".join(newline.join(lines).replace(b"\n", newline) + newline + newline for lines in events)
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    chunks = [stream[a:b] for a, b in zip(bounds, bounds[1:])]
    assert decode(chunks) == decode([stream[i : i + 1] for i in range(len(stream))])


def test_whole_events_in_one_read_are_split_at_once():
    assert SSEDecoder().feed(b'data: {"a":1}\n\ndata: [DONE]\n\n') == [b'{"a":1}', b"[DONE]"]
