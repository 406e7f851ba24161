"""Server-sent events framing: a byte-level decoder for backend streams, and the encoder for ours.

Lines are split on bytes (CR, LF or CRLF) before anything is decoded, so a multi-byte UTF-8
character or a JSON string holding U+2028 can never break an event apart. The decoder keeps only
what an OpenAI-style stream uses: the `data` of each event. Comments, `event:`, `id:` and
`retry:` lines are read and dropped. This module imports nothing of ours.
"""

KEEPALIVE = b": keep-alive\n\n"
MAX_LINE = 16 * 1024 * 1024  # one SSE line (one event's JSON) larger than this is not an answer


class SSEError(ValueError):
    """The bytes are not an event stream we can read (a line over MAX_LINE)."""
DONE_PAYLOAD = b"[DONE]"
DONE = b"data: [DONE]\n\n"


def encode_event(payload: bytes) -> bytes:
    """One SSE event carrying `payload` (a single line: JSON has no raw newlines) as its data."""
    return b"data: " + payload + b"\n\n"


class SSEDecoder:
    """Feeds on raw bytes as they arrive and returns the data of every event they complete."""

    __slots__ = ("_buffer", "_data", "_pending_cr")

    def __init__(self):
        self._buffer = bytearray()  # an unfinished line: grows by appending, never rescanned
        self._data = []  # data lines of the event being read
        self._pending_cr = False  # the last chunk ended in CR: a following LF belongs to it

    def feed(self, chunk: bytes) -> list:
        if not (self._buffer or self._data or self._pending_cr) and chunk.endswith(b"\n\n") and b"\r" not in chunk:
            # The common case, a read of whole one-line events ("data: {...}" and a blank line):
            # split at once instead of line by line. Anything else takes the general way below.
            events = []
            for block in chunk[:-2].split(b"\n\n"):
                if not block.startswith(b"data: ") or b"\n" in block:
                    break
                events.append(block[6:])
            else:
                return events
        if self._pending_cr:
            self._pending_cr = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        if self._buffer:
            if b"\n" not in chunk and b"\r" not in chunk:  # still inside one long line
                self._buffer += chunk
                if len(self._buffer) > MAX_LINE:
                    raise SSEError(f"an event stream line longer than {MAX_LINE} bytes")
                return []
            chunk = bytes(self._buffer) + chunk
            self._buffer.clear()
        events = []
        start = 0
        length = len(chunk)
        while start < length:
            lf = chunk.find(b"\n", start)
            cr = chunk.find(b"\r", start, lf if lf >= 0 else length)
            if cr >= 0:
                end, next_start = cr, cr + 1
                if next_start < length:
                    if chunk[next_start] == 0x0A:  # CRLF
                        next_start += 1
                else:
                    self._pending_cr = True
            elif lf >= 0:
                end, next_start = lf, lf + 1
            else:
                break
            self._line(chunk[start:end], events)
            start = next_start
        self._buffer += chunk[start:]
        if len(self._buffer) > MAX_LINE:
            raise SSEError(f"an event stream line longer than {MAX_LINE} bytes")
        return events

    def close(self) -> list:
        """The stream ended: an event still open (no blank line after it) is finished here."""
        events = []
        if self._buffer:
            self._line(bytes(self._buffer), events)
            self._buffer.clear()
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list) -> None:
        if not line:  # a blank line dispatches the event
            if self._data:
                events.append(b"\n".join(self._data))
                self._data = []
            return
        if line.startswith(b"data"):
            value = line[4:]
            if not value:
                self._data.append(b"")
            elif value[0] == 0x3A:  # ':'
                self._data.append(value[2:] if value[1:2] == b" " else value[1:])
            # "dataX: ..." is some other field name: ignored like every unknown field
        # comments (":"), event:, id:, retry: and unknown fields carry nothing we relay
