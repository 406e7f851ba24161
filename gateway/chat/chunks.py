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
_MODEL_FIELD = re.compile(rb'"model"\s*:\s*"(?:[^"\\]|\\.)*"')


class ModelRename:
    """Makes each relayed chunk name the model the client asked for, not the backend's own name
    (`"model": "smollm2"` for a request for `lab/smollm2`), as OpenAI and LiteLLM answer.

    A byte replacement, without parsing the event: the field's exact bytes are found in the first
    chunk that has one, and replaced as they are in every later chunk. The same bytes cannot stand
    inside a string value, where JSON escapes the quotes."""

    __slots__ = ("_wanted", "_seen")

    def __init__(self, model_id: str):
        self._wanted = b'"model":' + dumps(model_id)
        self._seen = None  # the field as this backend writes it

    def __call__(self, payload: bytes) -> bytes:
        seen = self._seen
        if seen is None or seen not in payload:
            match = _MODEL_FIELD.search(payload)
            if match is None:
                return payload
            seen = self._seen = match.group(0)
        return payload if seen == self._wanted else payload.replace(seen, self._wanted)


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


def missing_usage_chunk(first_payload: bytes, model_id: str) -> bytes:
    """For a relayed stream whose backend ignored `include_usage`: the promised chunk, usage null,
    with the stream's own id, created and model (read from its first event, once per stream)."""
    try:
        first = json.loads(first_payload)
    except (ValueError, RecursionError):
        first = None
    first = first if isinstance(first, dict) else {}
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
