"""Stream chunks (`chat.completion.chunk`): the payloads of an SSE answer, as JSON bytes.

Every chunk of one answer shares a head (id, created, model), built in one place: `chunk_head`.
A non-streaming backend's answer becomes the chunks a streaming backend would have sent (role,
reasoning, content, `tool_calls` deltas with `index`, finish, optional usage), at once and
without sleeps: the answer is complete, and holding it back would only make the user wait.
"""

import json
import re
import time
import uuid

from ..jsonio import dumps
from .answers import new_completion_id

# Whether a chunk carries token counts: found by a byte search, so relayed events are not parsed.
HAS_USAGE = re.compile(rb'"usage"\s*:\s*\{')
_MODEL_FIELD = re.compile(rb'"model"\s*:\s*(?:"(?:[^"\\]|\\.)*"|null|true|false|-?[0-9][0-9.eE+-]*)')  # a string, or what a broken backend sends


class ModelRename:
    """Makes each relayed chunk name the model the client asked for, not the backend's own name
    (`"model": "smollm2"` for a request for `lab/smollm2`), as OpenAI and LiteLLM answer.

    A byte replacement, without parsing the event: the field's exact bytes are found in the first
    chunk that has one, and replaced as they are in every later chunk. The same bytes cannot stand
    inside a string value, where JSON escapes the quotes. A chunk with no such field (some
    backends name the model in none, or only in the first) gets one, first in the object."""

    __slots__ = ("_wanted", "_seen")

    def __init__(self, model_id: str):
        self._wanted = b'"model":' + dumps(model_id)
        self._seen = None  # the field as this backend writes it

    def __call__(self, payload: bytes) -> bytes:
        seen = self._seen
        if seen is None or seen not in payload:
            match = _MODEL_FIELD.search(payload)
            if match is None:
                return self._added(payload)
            seen = self._seen = match.group(0)
        return payload if seen == self._wanted else payload.replace(seen, self._wanted)

    def _added(self, payload: bytes) -> bytes:
        """`payload` with the field first, if it is an object (anything else is passed on as it is:
        the client's parser says what is wrong with it)."""
        body = payload.strip()
        if body[:1] != b"{" or body[-1:] != b"}":
            return payload
        inside = body[1:-1].strip()
        return b"{" + self._wanted + (b"," + inside if inside else b"") + b"}"


# An opening chunk is small: a longer one is taken to show something without being parsed.
_OPENING_AT_MOST = 1024


def shows_nothing(payload: bytes) -> bool:
    """Whether a relayed chunk shows the user nothing yet: every choice's delta holds at most a
    role and empty text, with no finish_reason, and the chunk no usage (the first chunk vLLM and
    OpenAI send: `{"role": "assistant", "content": ""}`). Failover may still pass a request on
    after such chunks (backends/failover.py)."""
    data = _object(payload) if len(payload) <= _OPENING_AT_MOST else None
    if data is None or data.get("usage") or not isinstance(data.get("choices"), list):
        return False
    for choice in data["choices"]:
        if not isinstance(choice, dict) or choice.get("finish_reason") is not None or not isinstance(choice.get("delta"), dict):
            return False
        if any(value not in (None, "", []) for key, value in choice["delta"].items() if key != "role"):
            return False
    return True


def chunk_head(model_id: str, id: str | None = None, created: int | None = None) -> dict:
    """The fields every chunk of one answer repeats."""
    return {"id": id or new_completion_id(), "object": "chat.completion.chunk", "created": created or int(time.time()), "model": model_id}


def chunk(head: dict, delta: dict, finish_reason=None, index: int = 0) -> bytes:
    return dumps({**head, "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason}]})


def usage_chunk(head: dict, usage) -> bytes:
    """The final chunk a client that asked for `include_usage` gets: `choices: []` and the usage,
    null when the backend did not report it (we do not make up token counts)."""
    return dumps({**head, "choices": [], "usage": usage if isinstance(usage, dict) else None})


def completion_chunks(data: dict, include_usage: bool):
    """The chunks that stream one complete (checked, enveloped) answer."""
    head = chunk_head(data["model"], data["id"], data["created"])
    for choice in data["choices"]:
        index, message = choice["index"], choice["message"]
        tool_calls = message.get("tool_calls")
        opening = {"role": message.get("role", "assistant"), "content": None if tool_calls and not message.get("content") else ""}
        yield chunk(head, opening, index=index)
        for key in ("reasoning_content", "reasoning"):
            if message.get(key):
                yield chunk(head, {key: message[key]}, index=index)
        if message.get("content"):
            yield chunk(head, {"content": message["content"]}, index=index)
        if tool_calls:
            yield chunk(head, {"tool_calls": [_tool_call_delta(i, call) for i, call in enumerate(tool_calls)]}, index=index)
        yield chunk(head, {}, choice["finish_reason"], index=index)
    if include_usage:
        yield usage_chunk(head, data.get("usage"))


class UsageNote:
    """Not a chunk: the token counts a whole answer reported, for the request's record, when the
    client did not ask for a usage chunk (the counts are still logged and counted)."""

    __slots__ = ("usage",)

    def __init__(self, usage):
        self.usage = usage


def split_usage(payload: bytes) -> tuple:
    """A chunk's usage, for a client that did not ask for it: (UsageNote or None, what to send:
    the chunk without its `usage`, or None when usage was all it carried, as `include_usage`'s
    chunk with `choices: []`; some backends put it on their last content chunk instead)."""
    data = _object(payload)
    if data is None or not isinstance(data.get("usage"), dict):
        return None, payload
    note = UsageNote(data.pop("usage"))
    return note, dumps(data) if data.get("choices") else None


def missing_usage_chunk(first_payload: bytes, model_id: str) -> bytes:
    """For a relayed stream whose backend ignored `include_usage`: the promised chunk, usage null,
    with the stream's own id, created and model (read from its first event, once per stream)."""
    first = _object(first_payload) or {}
    return usage_chunk(chunk_head(model_id, first.get("id"), first.get("created")), None)


def _tool_call_delta(position: int, call: dict) -> dict:
    function = call["function"]
    arguments = function.get("arguments")
    if not isinstance(arguments, str):  # some backends send the arguments as an object
        arguments = "" if arguments is None else json.dumps(arguments, ensure_ascii=False)
    return {
        "index": call.get("index", position),
        "id": call.get("id") or f"call_{uuid.uuid4().hex[:24]}",
        "type": call.get("type", "function"),
        "function": {"name": function.get("name", ""), "arguments": arguments},
    }


def _object(payload: bytes) -> dict | None:
    """A chunk's JSON object, or None when it is not one."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None
