"""How a stream's payloads, its end and its failure become bytes on the wire: a *framing*.

`ChatStream` (chat_stream.py) does everything else (keep-alives, failover before the first
event, cancellation, the stalled-client watchdog, the graceful-shutdown interruption, reading in
place, usage noting) the same for every framing. A framing has three methods:

- `encode(payloads)`: the bytes for one or more payloads (chat.completion.chunk JSON) that go out
  in one write;
- `end()`: the bytes that close a stream whose backend finished;
- `error(error, secrets)`: the bytes that close a stream that failed after its first byte.

`CHAT` is the Chat Completions framing: each payload as `data: ...`, `data: [DONE]` at the end,
an error event (`{"error": {...}}`, redacted) then `[DONE]`. It adds nothing to the relay's
per-event work. The Responses API's framing is gateway/responses/events.py.
"""

from ..errors import error_json
from ..sse import DONE, encode_event


class ChatFraming:
    __slots__ = ()

    @staticmethod
    def encode(payloads) -> bytes:
        return encode_event(payloads[0]) if len(payloads) == 1 else b"".join(map(encode_event, payloads))

    @staticmethod
    def end() -> bytes:
        return DONE

    @staticmethod
    def error(error, secrets=()) -> bytes:
        return encode_event(error_json(error, secrets)) + DONE


CHAT = ChatFraming()
