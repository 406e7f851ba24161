"""JSON in and out: compact UTF-8 bytes out, whatever strings they hold; and large documents read
and written in pieces.

Why pieces: one C-level `json.loads` or `json.dumps` of tens of megabytes (an embeddings answer
for half a million inputs) holds the GIL for its whole run, over a second on a busy machine, and
so stalls every stream of the worker even when it runs in a thread. `loads` and `dumps` of a
large document work element by element through the lists at its top (where a large document's
bulk is: `input`, `messages`, `data`), each C call short: a thread running them lets go of the
GIL between calls (every 5 ms, `sys.getswitchinterval()`), so the worker's event loop keeps
serving. Small documents take the one-call path: no cost where there is no need.
"""

import codecs
import json
import time
from json.decoder import WHITESPACE, scanstring

LARGE = 256 * 1024  # bytes from which a document is read and written in pieces
_LONG = 64  # a list longer than this, at the top of a document, is written in pieces
_SLICE = 1 << 20  # bytes decoded per call
_PIECE = 1 << 16  # bytes per piece of a large answer
_STEP = 0.002  # seconds one C call of a piecewise write aims at: batches grow and shrink to it


def dumps(obj, *, ascii_only: bool = False) -> bytes:
    """Compact UTF-8 JSON (ASCII with escapes when `ascii_only`). A lone surrogate (legal as a JSON
    escape, not as UTF-8) is sent escaped. A document whose top holds long lists is written in
    pieces (see the top)."""
    if not _has_long_lists(obj):
        if not ascii_only:
            try:
                return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                pass
        return json.dumps(obj, separators=(",", ":")).encode("ascii")
    return b"".join(dumps_in_pieces(obj, ascii_only=ascii_only))


def dumps_in_pieces(obj, *, ascii_only: bool = False) -> list:
    """What `dumps` writes, as a list of byte strings of about _PIECE bytes each: a large answer
    goes to the client piece by piece, never copied into one buffer (a copy of tens of megabytes
    is one long C call too)."""
    if not _has_long_lists(obj):
        return [dumps(obj, ascii_only=ascii_only)]
    if not ascii_only:
        try:
            return _coalesced(piece.encode("utf-8") for piece in _pieces(obj, ensure_ascii=False, top=True))
        except UnicodeEncodeError:
            pass
    return _coalesced(piece.encode("ascii") for piece in _pieces(obj, ensure_ascii=True, top=True))


def _coalesced(pieces) -> list:
    out, pending, size = [], [], 0
    for piece in pieces:
        pending.append(piece)
        size += len(piece)
        if size >= _PIECE:
            out.append(b"".join(pending))
            pending, size = [], 0
    if pending:
        out.append(b"".join(pending))
    return out


def _has_long_lists(obj) -> bool:
    if isinstance(obj, list):
        return len(obj) > _LONG
    return isinstance(obj, dict) and any(isinstance(v, list) and len(v) > _LONG for v in obj.values())


def _pieces(obj, ensure_ascii: bool, top: bool):
    """The compact JSON text of `obj`, in pieces: lists a batch of elements per C call (batches
    sized to take about _STEP each, whatever the elements hold) at the top and one level down;
    everything below in one call each."""
    encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=ensure_ascii).encode
    if isinstance(obj, list):
        yield "["
        start, batch = 0, 1
        while start < len(obj):
            began = time.perf_counter()
            yield ("," if start else "") + encode(obj[start:start + batch])[1:-1]
            start += batch
            took = time.perf_counter() - began
            batch = max(1, batch * 2 if took < _STEP / 2 else batch // 2 if took > _STEP * 2 else batch)
        yield "]"
    elif isinstance(obj, dict) and top:
        yield "{"
        for position, (key, value) in enumerate(obj.items()):
            yield ("," if position else "") + encode({key: None})[1:-5]  # '"key":' 
            yield from _pieces(value, ensure_ascii, top=False)
        yield "}"
    else:
        yield encode(obj)


def _text(data) -> str:
    """UTF-8 bytes as text, a slice per call."""
    if not isinstance(data, (bytes, bytearray)):
        return data
    if len(data) <= _SLICE:
        return data.decode("utf-8")
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(data)
    text = "".join(decoder.decode(view[start:start + _SLICE]) for start in range(0, len(data), _SLICE))
    return text + decoder.decode(b"", final=True)


def loads(data, *, parse_constant=None, parse_float=None):
    """Like `json.loads` (UTF-8 bytes or text), strict options included. A large document is read
    in pieces: its top-level lists, and the lists directly under a top-level object, element by
    element (see the top)."""
    if len(data) <= LARGE:
        return json.loads(data, parse_constant=parse_constant, parse_float=parse_float)
    text = _text(data)
    scan = json.JSONDecoder(parse_constant=parse_constant, parse_float=parse_float).scan_once
    index = _skip(text, 0)
    if text.startswith("{", index):
        value, index = _object(text, index, scan)
    elif text.startswith("[", index):
        value, index = _list(text, index, scan)
    else:
        value, index = _value(text, index, scan)
    index = _skip(text, index)
    if index != len(text):
        raise json.JSONDecodeError("Extra data", text, index)
    return value


_BLANK = " \t\n\r"


def _skip(text: str, index: int) -> int:
    return WHITESPACE.match(text, index).end()


def _value(text: str, index: int, scan):
    try:
        return scan(text, index)
    except StopIteration as stop:
        raise json.JSONDecodeError("Expecting value", text, stop.value) from None


def _expect(text: str, index: int, char: str, what: str) -> int:
    index = _skip(text, index)
    if not text.startswith(char, index):
        raise json.JSONDecodeError(f"Expecting {what}", text, index)
    return index + 1


def _list(text: str, index: int, scan):
    """A list whose elements are each read in one call (`text[index]` is its `[`). Written for
    speed: it runs once per element of the largest lists we read."""
    items = []
    append = items.append
    index = _skip(text, index + 1)
    if text.startswith("]", index):
        return items, index + 1
    end = len(text)
    while True:
        try:
            item, index = scan(text, index)
        except StopIteration as stop:
            raise json.JSONDecodeError("Expecting value", text, stop.value) from None
        append(item)
        char = text[index] if index < end else ""
        if char == ",":
            index += 1
            if index < end and text[index] in _BLANK:
                index = _skip(text, index)
            continue
        if char == "]":
            return items, index + 1
        index = _skip(text, index)
        if text.startswith("]", index):
            return items, index + 1
        index = _skip(text, _expect(text, index, ",", "',' delimiter"))


def _object(text: str, index: int, scan):
    """The top-level object: its list values read by `_list`, anything else in one call."""
    pairs = {}
    index = _skip(text, index + 1)
    if text.startswith("}", index):
        return pairs, index + 1
    while True:
        if not text.startswith('"', index):
            raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, index)
        key, index = scanstring(text, index + 1, True)
        index = _skip(text, _expect(text, index, ":", "':' delimiter"))
        if text.startswith("[", index):
            pairs[key], index = _list(text, index, scan)
        else:
            pairs[key], index = _value(text, index, scan)
        index = _skip(text, index)
        if text.startswith("}", index):
            return pairs, index + 1
        index = _skip(text, _expect(text, index, ",", "',' delimiter"))
