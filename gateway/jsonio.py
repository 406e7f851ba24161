"""JSON in and out: compact UTF-8 bytes out, whatever strings they hold; and large documents read
and written in pieces.

Why pieces: one C-level `json.loads` or `json.dumps` of tens of megabytes (an embeddings answer
for half a million inputs) holds the GIL for its whole run, over a second on a busy machine, and
so stalls every stream of the worker even when it runs in a thread. `loads` and `dumps` of a
large document work through the lists at its top (where a large document's bulk is: `input`,
`messages`, `data`) a run of elements per C call (`loads`: up to 32K characters, about a
millisecond; `dumps`: batches sized to 2 ms), each call short: a thread running them lets go of
the GIL between calls (every 5 ms, `sys.getswitchinterval()`), so the worker's event loop keeps
serving. Small documents take the one-call path: no cost where there is no need.

Writing takes orjson where it can: a request body with Open WebUI's 36 tools (26 KB) is written
in 18 µs instead of the standard library's 220 to 300 µs, on every request. What orjson does not
write (a lone surrogate, an integer beyond 64 bits, a key that is not a string, nesting past 254
levels) goes the standard library's way, as before. Reading stays with the standard library: orjson
would read an integer beyond 64 bits as a float without a word, and the request's numbers must
reach the backend as the client wrote them.
"""

import codecs
import json
import re
import time
from json.decoder import WHITESPACE, scanstring

import orjson

LARGE = 256 * 1024  # bytes from which a document is read and written in pieces
_LONG = 64  # a list longer than this, at the top of a document, is written in pieces
_SLICE = 1 << 20  # bytes decoded per call
_PIECE = 1 << 16  # bytes per piece of a large answer
_DISMANTLE = 2048  # elements freed per C call by `dismantle`
_STEP = 0.002  # seconds one C call of a piecewise write aims at: batches grow and shrink to it


def dumps(obj) -> bytes:
    """Compact UTF-8 JSON. A document with a lone surrogate (legal as a JSON escape, not as UTF-8)
    is written ASCII, with escapes. A document whose top holds long lists is written in pieces
    (see the top)."""
    if _has_long_lists(obj):
        return b"".join(dumps_in_pieces(obj))
    try:
        # Copied into bytes of its own size: orjson's result keeps the buffer it was written in
        # (4 KiB for a 70-byte chunk), and a stream holds some for its whole life (its backend
        # body, its chunks' head): +6 KiB of memory per open stream, measured. The copy costs
        # 0.3 us for a chunk, 0.5 us for a 25 KB body.
        return memoryview(orjson.dumps(obj)).tobytes()
    except TypeError:  # what orjson does not write (see the top)
        pass
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":")).encode("ascii")


def dumps_in_pieces(obj) -> list:
    """What `dumps` writes, as a list of byte strings of about _PIECE bytes each: a large answer
    goes to the client piece by piece, never copied into one buffer (a copy of tens of megabytes
    is one long C call too). Written with orjson where it can, as `dumps` is."""
    if not _has_long_lists(obj):
        return [dumps(obj)]
    try:
        return _coalesced(_pieces(obj, orjson.dumps, top=True))
    except TypeError:  # what orjson does not write (see the top): all of it json's way
        pass
    utf8 = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    try:
        return _coalesced(_pieces(obj, lambda value: utf8(value).encode("utf-8"), top=True))
    except UnicodeEncodeError:
        ascii_ = json.JSONEncoder(separators=(",", ":")).encode
        return _coalesced(_pieces(obj, lambda value: ascii_(value).encode("ascii"), top=True))


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


def _pieces(obj, encode, top: bool):
    """The compact JSON of `obj` as `encode` writes it (bytes), in pieces: lists a batch of
    elements per C call (batches sized to take about _STEP each, whatever the elements hold) at
    the top and one level down; everything below in one call each."""
    if isinstance(obj, list):
        yield b"["
        start, batch = 0, 1
        while start < len(obj):
            began = time.perf_counter()
            yield (b"," if start else b"") + encode(obj[start:start + batch])[1:-1]
            start += batch
            took = time.perf_counter() - began
            batch = max(1, batch * 2 if took < _STEP / 2 else batch // 2 if took > _STEP * 2 else batch)
        yield b"]"
    elif isinstance(obj, dict) and top:
        yield b"{"
        for position, (key, value) in enumerate(obj.items()):
            yield (b"," if position else b"") + encode({key: None})[1:-5]  # b'"key":'
            yield from _pieces(value, encode, top=False)
        yield b"}"
    else:
        yield encode(obj)


def dismantle(obj) -> None:
    """Frees a large document a slice at a time. Dropping the last reference to half a million
    parsed objects frees them all in one C call (tens of milliseconds, the GIL held throughout);
    here the lists at its top (and one level down) lose their elements _DISMANTLE at a time, so a
    thread doing it lets go of the GIL between slices. The document is empty afterwards."""
    lists = [obj] if isinstance(obj, list) else [v for v in obj.values() if isinstance(v, list)] if isinstance(obj, dict) else []
    for items in lists:
        while items:
            del items[-_DISMANTLE:]
    if isinstance(obj, dict):
        obj.clear()


def loads(data, *, parse_constant=None, parse_float=None):
    """Like `json.loads`, strict options included, for UTF-8 bytes, text, or a list of byte chunks
    as they came off the wire. A large document is read in pieces (see the top): its top-level
    lists, and the lists directly under a top-level object, element by element; and it is decoded
    a slice at a time, never copied into one string of its whole size (on a machine with slow
    memory one copy of 30 MB is a C call of ~40 ms)."""
    if isinstance(data, list):
        if sum(map(len, data)) <= LARGE:
            data = b"".join(data)
    if not isinstance(data, list) and len(data) <= LARGE:
        return json.loads(data, parse_constant=parse_constant, parse_float=parse_float)
    reader = _Reader(data, json.JSONDecoder(parse_constant=parse_constant, parse_float=parse_float))
    reader.skip()
    char = reader.peek()
    if char == "{":
        value = reader.top_object()
    elif char == "[":
        value = reader.list()
    else:
        value = reader.value()
    reader.skip()
    if reader.peek():
        raise reader.error("Extra data")
    return value


# Text that holds no container and no string with an escape: numbers, literals, commas, blanks and
# plain strings, each string whole. Possessive, and one character class for most of it: the
# regular expression engine's cost per repetition is what made an alternation of JSON's value
# forms cost 0.5 us per element (1.1 s for a 9.8 MB list of `1,`).
_FLAT = re.compile(r'(?:[^"\[\]{}\\]++|"[^"\\\x00-\x1f]*+")*+')
# The same text as elements each followed by its comma, strings whole: where flat text holds
# strings, its last comma may stand inside one ("Paris, France").
_FLAT_ELEMENTS = re.compile(r'(?:[^"\[\]{}\\,]*+(?:"[^"\\\x00-\x1f]*+"[^"\[\]{}\\,]*+)*+,)*+')
# How an element that is a container begins: `[`, or `{` and its first key (`{"object":`).
_OPENING = re.compile(r'\[|\{[ \t\n\r]*"[^"\\\x00-\x1f]{0,40}+"[ \t\n\r]*:')
_RUN = 1 << 15  # characters one run reads at most: a C call of about a millisecond
_NUMBER_GOES_ON = re.compile(r"[0-9.eE+-]*")  # what may follow a cut number up to the window's end


def _slices(data):
    """The document as decoded text, a slice at a time."""
    if isinstance(data, str):
        for start in range(0, len(data), _SLICE):
            yield data[start:start + _SLICE]
        return
    decoder = codecs.getincrementaldecoder("utf-8")()
    for chunk in data if isinstance(data, list) else (data,):
        view = memoryview(chunk)
        for start in range(0, len(view), _SLICE):
            yield decoder.decode(view[start:start + _SLICE])
    yield decoder.decode(b"", final=True)


class _Reader:
    """A window on the document's text: what is read is dropped, what comes next is decoded as it
    is needed. Every value is read by the C scanner in one call; one cut off by the end of the
    window (an error, or a number that ends exactly there) is read again with more text."""

    __slots__ = ("text", "pos", "dropped", "_slices", "_more", "_scan", "_decode")

    def __init__(self, data, decoder: json.JSONDecoder):
        self.text, self.pos = "", 0
        self.dropped = 0  # characters of the document before the window's start
        self._slices = _slices(data)
        self._more = True
        self._scan = decoder.scan_once
        self._decode = decoder.decode

    def _extend(self) -> bool:
        """More text after what is left of the window; False at the document's end."""
        while self._more:
            piece = next(self._slices, None)
            if piece is None:
                self._more = False
                return False
            if piece:
                self.dropped += self.pos
                self.text, self.pos = self.text[self.pos:] + piece, 0
                return True
        return False

    def error(self, message: str) -> json.JSONDecodeError:
        return json.JSONDecodeError(message, self.text, self.pos)

    def peek(self) -> str:
        while self.pos >= len(self.text):
            if not self._extend():
                return ""
        return self.text[self.pos]

    def skip(self) -> None:
        while True:
            self.pos = WHITESPACE.match(self.text, self.pos).end()
            if self.pos < len(self.text) or not self._extend():
                return

    def expect(self, char: str, what: str) -> None:
        self.skip()
        if self.peek() != char:
            raise self.error(f"Expecting {what}")
        self.pos += 1

    def value(self):
        tries = 0
        while True:
            try:
                value, end = self._scan(self.text, self.pos)
            except (StopIteration, json.JSONDecodeError):
                if not self._extend():
                    raise self.error("Expecting value") from None
            else:
                # A number that the window's end may have cut ("12" of "12.5e3") is read again.
                if not self._more or not _NUMBER_GOES_ON.fullmatch(self.text, end) or not self._extend():
                    self.pos = end
                    return value
            tries += 1
            if tries == 4:  # one large value (a long string): the rest of the document at once
                while self._extend():
                    pass

    def list(self) -> list:
        """A list whose elements are each read in one call (at its `[`), or many in one (`_run`)."""
        items = []
        append = items.append
        runs_from = 0  # where in the document the next run may be tried: past the text the last one scanned
        more = self._opened("]")
        start = self.dropped + self.pos
        while more:
            # A run of elements is read in one C call: element by element, ten million small ones
            # (a 20 MB body of `1,1,1,...` is what a client may send) would cost seconds, and
            # 400,000 embeddings a second of Python.
            at = self.dropped + self.pos
            if at >= runs_from:
                runs_from = self._run(items, at - start)
            append(self.value())
            if self.pos > _SLICE:  # drop what is read: the window stays about a slice long
                self.dropped += self.pos
                self.text, self.pos = self.text[self.pos:], 0
            more = self._after_element("]")
        return items

    def _run(self, items: list, read: int) -> int:
        """Reads the elements ahead, up to _RUN characters and a comma of the list's own, in one
        call into `items`. Returns where in the document the next run may be tried: past the text
        this one scanned, whether it read most of it, little, or nothing (it did not decode, or no
        end was found). The elements up to there are read one by one (which finds an error where it
        is and says so as one call would): no character is scanned twice, whatever the document.

        Where a run ends: flat text (numbers, literals, plain strings) holds no bracket, so its
        commas outside strings are the list's own. Past it, a comma followed by what began the
        first element (`{"object":`, `{"role":`, `[`), blanks between, most likely is, in a list
        of like elements; that search looks at most four times as far as the list's `read`
        characters so far: a short list (a body of a million `"k": [{...}]`) never pays for
        scanning the text after it. A run is decoded as `[` + run + `]`, which succeeds only when
        the run is whole elements: cut inside an element it leaves a bracket or a string open."""
        text, pos = self.text, self.pos
        limit = min(len(text), pos + _RUN)
        flat = _FLAT.match(text, pos, limit).end()
        if text.find('"', pos, flat) < 0:
            cut = text.rfind(",", pos, flat)
        else:
            elements_end = _FLAT_ELEMENTS.match(text, pos, flat).end()  # just past the last comma outside a string
            cut = elements_end - 1 if elements_end > pos else -1
        scanned_to = flat  # the flat text ends at the list's `]` at the latest
        if flat < limit and read:
            reach = min(limit, flat + 4 * read)
            opening = _OPENING.match(text, flat, reach)
            if opening is not None:
                last = text.rfind(opening.group(), flat + 1, reach)
                if last > 0:
                    cut = max(cut, text.rfind(",", flat, last))  # blanks may stand between the two
            scanned_to = reach
        scanned = self.dropped + max(scanned_to, pos + 1)
        if cut < 0:
            return scanned
        try:
            run = self._decode("[" + text[pos:cut] + "]")
        except json.JSONDecodeError:
            run = None
        if not run:  # not whole elements (or blanks, then the comma: an element is missing)
            return scanned
        items.extend(run)
        self.pos = cut + 1
        self.skip()
        return scanned

    def top_object(self) -> dict:
        """The top-level object: its list values read by `list`, anything else in one call."""
        pairs = {}
        more = self._opened("}")
        while more:
            if self.peek() != '"':
                raise self.error("Expecting property name enclosed in double quotes")
            key = self._key()
            self.expect(":", "':' delimiter")
            self.skip()
            pairs[key] = self.list() if self.peek() == "[" else self.value()
            more = self._after_element("}")
        return pairs

    def _opened(self, closing: str) -> bool:
        """Past the opening bracket (at it now) and blanks; False when `closing` follows at once
        (consumed): the container is empty."""
        self.pos += 1
        self.skip()
        if self.peek() == closing:
            self.pos += 1
            return False
        return True

    def _after_element(self, closing: str) -> bool:
        """After an element: False at `closing` (consumed), True past the comma and blanks."""
        self.skip()
        char = self.peek()
        if char == closing:
            self.pos += 1
            return False
        if char != ",":
            raise self.error("Expecting ',' delimiter")
        self.pos += 1
        self.skip()
        return True

    def _key(self) -> str:
        while True:
            try:
                key, self.pos = scanstring(self.text, self.pos + 1, True)
                return key
            except json.JSONDecodeError:
                if not self._extend():
                    raise
