"""jsonio: large documents read and written in pieces give exactly what one `json` call gives,
errors included; and no piece is one long C call (issue #21: a 30 MB embeddings answer stalled
every stream of its worker for over a second)."""

import json
import math
import types

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import jsonio

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5), max_leaves=15)
tops = st.dictionaries(st.text(), st.lists(documents, max_size=20) | documents, max_size=4) | st.lists(documents, max_size=20)


# The fixture only sets module constants, the same for every generated example.
fixed_setup = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)


@pytest.fixture
def always_in_pieces(monkeypatch):
    """Every document takes the large path, however small."""
    monkeypatch.setattr(jsonio, "LARGE", -1)
    monkeypatch.setattr(jsonio, "_LONG", 0)
    monkeypatch.setattr(jsonio, "_SLICE", 7)  # decoded a few bytes at a time: multi-byte UTF-8 split too
    monkeypatch.setattr(jsonio, "_PIECE", 5)


@fixed_setup
@given(document=tops, spaced=st.booleans())
def test_reading_in_pieces_gives_what_json_gives(always_in_pieces, document, spaced):
    text = json.dumps(document, indent=1 if spaced else None, ensure_ascii=False)
    raw = text.encode("utf-8")
    assert jsonio.loads(raw) == json.loads(text)
    # as it comes off the wire: chunks that cut values, keys and multi-byte characters anywhere
    assert jsonio.loads([raw[start:start + 3] for start in range(0, len(raw), 3)]) == json.loads(text)


# Lists of like elements, built to mislead a run's end: nested elements that begin as the top
# ones do (`{"k":`, `[`), and strings that hold `,{"k":` or `],[`.
tricky_text = st.sampled_from(['x', ',{"k":', '],[', '"', '\\', ', ', '}', '\u2028']) | st.text(max_size=3)
like = st.recursive(
    st.integers() | tricky_text | st.none(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.just("k") | st.text(max_size=2), inner, min_size=1, max_size=3).map(lambda d: {"k": 1, **d}),
    max_leaves=10,
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=150)
@given(elements=st.lists(like, max_size=30), indent=st.sampled_from([None, 1]), run=st.integers(8, 200), window=st.integers(5, 300))
def test_runs_of_like_elements_are_read_as_json_reads_them(monkeypatch, elements, indent, run, window):
    monkeypatch.setattr(jsonio, "LARGE", -1)
    monkeypatch.setattr(jsonio, "_RUN", run)
    monkeypatch.setattr(jsonio, "_SLICE", window)
    text = json.dumps({"data": elements}, indent=indent)
    assert jsonio.loads(text.encode()) == json.loads(text)
    parts = [json.dumps(element, indent=indent) for element in elements]
    missing_comma = '{"data": [' + ", ".join(parts[:-1]) + " " + parts[-1] + "]}" if len(parts) > 1 else text + "x"
    with pytest.raises(ValueError):
        jsonio.loads(missing_comma.encode())


@fixed_setup
@given(document=tops)
def test_writing_in_pieces_gives_what_one_call_gives(always_in_pieces, document):
    """Byte for byte, in pieces or in one call: orjson's bytes (which may spell a float otherwise
    than json: 0.00001 for 1e-05); a document orjson does not write (an integer beyond 64 bits, a
    lone surrogate) is json's, all of it, ASCII with escapes if it holds a lone surrogate."""
    written = jsonio.dumps(document)
    assert b"".join(jsonio.dumps_in_pieces(document)) == written
    try:
        expected = orjson.dumps(document)
    except TypeError:
        try:
            expected = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            expected = json.dumps(document, separators=(",", ":")).encode("ascii")
    assert written == expected


@fixed_setup
@given(document=tops)
def test_writing_in_one_call_gives_the_same_values_as_json(document):
    """The one-call path writes with orjson: compact UTF-8 whose values are json's (a float may be
    spelt otherwise, 0.00001 for 1e-05, and is the same number)."""
    written = jsonio.dumps(document)
    assert isinstance(written, bytes) and json.loads(written) == document


@pytest.mark.parametrize("document, expected", [
    ({"seed": 2 ** 70}, b'{"seed":1180591620717411303424}'),  # beyond 64 bits: orjson refuses, json writes it
    ({"text": "a\ud800b"}, b'{"text":"a\\ud800b"}'),  # a lone surrogate: escaped, as json writes it
    ({1: "x"}, b'{"1":"x"}'),  # a key that is not a string
    ({"text": "\ub300\ud654"}, "{\"text\":\"\ub300\ud654\"}".encode()),  # Korean as UTF-8, not escapes
])
def test_what_orjson_does_not_write_is_written_as_json_writes_it(document, expected):
    assert jsonio.dumps(document) == expected


def test_what_orjson_does_not_write_is_written_as_json_writes_it_in_pieces_too(always_in_pieces):
    assert jsonio.dumps({"data": ["ok", "\ud800"]}) == b'{"data":["ok","\\ud800"]}'
    assert jsonio.dumps({"data": [0.5, 2 ** 70], "more": ["\ub300"]}) == '{"data":[0.5,1180591620717411303424],"more":["\ub300"]}'.encode()


@pytest.mark.parametrize("text", [
    '{"data": [1, 2,]}', '{"data": [1 2]}', '{"data": [1, 2}', '{"a": 1,}', '{"a" 1}', '{1: 2}',
    '[1, 2] x', '{"data": [NaN]}', '', '   ', '{"data": [1e999]}', '[', '{"a": [', '"\\ud800" "x"',
    '{"data": [,1]}', '{"data": [ , 2]}', '{"data": [1,,2]}', '{"data": [1, tru, 2]}', '[1, 2 3, 4]',
])
def test_bad_documents_are_refused_in_pieces_as_in_one_call(always_in_pieces, text):
    def strict(parse):
        return parse(text, parse_constant=reject, parse_float=finite)

    def reject(constant):
        raise ValueError(constant)

    def finite(number):
        value = float(number)
        if math.isinf(value):
            raise ValueError(number)
        return value

    with pytest.raises(ValueError):
        strict(json.loads)
    with pytest.raises(ValueError):
        strict(jsonio.loads)


def test_long_runs_of_flat_elements_are_read_a_window_at_a_time_and_an_error_in_one_costs_no_more():
    """Flat elements (numbers, literals, plain strings) are read a window (`_RUN` characters) per
    call; a run that does not decode is read element by element to its error, never decoded again
    from each element on (which would cost a window's decode per element)."""
    calls = []
    decode = json.JSONDecoder.decode

    def counting(self, text):
        calls.append(len(text))
        return decode(self, text)

    flat = '[1, -2.5e3, "plain", true, null, "with \\"escape\\"", ' + "7," * 300_000 + "8]"
    expected = json.loads(flat)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(json.JSONDecoder, "decode", counting)
        assert jsonio.loads(flat.encode()) == expected
        assert len(calls) <= len(flat) // jsonio._RUN + 3
        calls.clear()
        broken = '[1, "with \\"escape\\"", ' + "7," * 10_000 + "7 7," + "7," * 300_000 + "8]"  # an error mid-run
        with pytest.raises(json.JSONDecodeError) as refused:
            jsonio.loads(broken.encode())
    assert len(calls) <= 2
    with pytest.raises(json.JSONDecodeError) as in_one_call:
        json.loads(broken)
    assert refused.value.msg == in_one_call.value.msg


def test_long_lists_of_like_objects_and_of_sentences_are_read_a_window_per_call():
    """400,000 embeddings read element by element cost a second of Python over json's own call;
    sentences hold commas that are not the list's."""
    read_in_runs = []
    decode = json.JSONDecoder.decode

    def counting(self, text):
        values = decode(self, text)
        read_in_runs.append(len(values))
        return values

    answer = {"object": "list", "data": [{"object": "embedding", "index": i, "embedding": [0.25, -0.5]} for i in range(20_000)]}
    # Commas inside the strings: in one window (22 KB), the last comma is the last string's own.
    sentences = {"input": [f"Paris, France, {i}" for i in range(1_000)]}
    for document, indent in ((answer, None), (answer, 2), (sentences, None)):
        text = json.dumps(document, indent=indent)
        read_in_runs.clear()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(json.JSONDecoder, "decode", counting)
            patch.setattr(jsonio, "LARGE", 0)  # in pieces, however small
            assert jsonio.loads(text.encode()) == document
        elements = len(next(iter(value for value in document.values() if isinstance(value, list))))
        # A list's first runs look less far ahead (four times what it read so far): a few more calls.
        assert sum(read_in_runs) > 0.95 * elements and len(read_in_runs) <= len(text) // jsonio._RUN + 8


@pytest.mark.parametrize("text", [
    "[" + ",".join('{"k%d":1}' % i for i in range(20_000)) + "]",  # no element begins as the one before
    "[" + ",".join('{"k%d":1},{"k%d":1}' % (i, i) for i in range(10_000)) + "]",  # each only as the one before
    "{" + ",".join('"k%d":[{"x":1}]' % i for i in range(20_000)) + "}",  # many short lists, each like the next
])
def test_lists_that_form_few_runs_are_looked_through_about_once(monkeypatch, text):
    """Where runs do not form, the search for one must not look through the window ahead again
    for each element or each list: found by a review, up to 14 us per element (a 20 MB body of
    such elements, some 27 s of a worker's CPU)."""
    looked = []
    opening = jsonio._OPENING

    class Measured:
        @staticmethod
        def match(string, pos, endpos):
            looked.append(endpos - pos)
            return opening.match(string, pos, endpos)

    monkeypatch.setattr(jsonio, "_OPENING", Measured)
    monkeypatch.setattr(jsonio, "LARGE", 0)
    assert jsonio.loads(text.encode()) == json.loads(text)
    assert sum(looked) <= 5 * len(text)


def test_not_utf8_is_refused():
    with pytest.raises(UnicodeDecodeError):
        jsonio.loads(b'{"input": ["\xff"]}' + b" " * jsonio.LARGE)


def test_a_large_write_sizes_its_calls_to_what_the_elements_hold(monkeypatch):
    """Batches grow while their C calls are short and shrink when one runs long."""
    sizes = []

    def dumps(value):
        sizes.append(len(value) if isinstance(value, list) else 0)
        return orjson.dumps(value)

    monkeypatch.setattr(jsonio, "orjson", types.SimpleNamespace(dumps=dumps))
    small = {"data": [1] * 100_000}
    assert jsonio.dumps(small) == orjson.dumps(small)
    assert max(sizes) > 1000  # tiny elements: thousands per call
    sizes.clear()
    heavy = {"data": [[0.123456789] * 300_000 for _ in range(12)]}  # several ms of orjson each
    assert jsonio.dumps(heavy) == orjson.dumps(heavy)
    assert max(sizes) <= 2  # each element alone is a long call: one or two at a time


def test_what_is_written_holds_no_more_memory_than_its_size():
    """A stream keeps some written documents for its whole life (its backend body, its chunks'
    head): orjson's own result would hold a 4 KiB buffer for a 70-byte chunk."""
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [jsonio.dumps({"model": "x", "messages": [{"role": "user", "content": f"hello {i}"}]}) for i in range(100)]
        per_document = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert per_document < 2 * max(map(len, kept)) + 100, per_document
