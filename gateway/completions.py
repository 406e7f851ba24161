"""The shapes of chat completions: checking a backend's answer, and turning one into stream chunks.

A non-streaming backend answers with one `chat.completion`. For a client that asked to stream,
`completion_chunks` turns it into the chunks a streaming backend would have sent (role, reasoning,
content, `tool_calls` deltas with `index`, finish, optional usage), at once and without sleeps:
the answer is complete, and holding it back would only make the user wait.
"""

import json
import re
import time
import uuid

from .jsonio import dumps

# Whether a chunk carries token counts: found by a byte search, so relayed events are not parsed.
HAS_USAGE = re.compile(rb'"usage"\s*:\s*\{')


def completion_problem(data) -> str | None:
    """What makes `data` not a usable chat completion, or None if it is one."""
    if not isinstance(data, dict):
        return "is not a JSON object"
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        return "has no choices"
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            return "has a choice without a message"
        if not isinstance(message.get("content"), (str, type(None))):
            return "has a message whose content is not a string"
        tool_calls = message.get("tool_calls")
        if tool_calls is not None and not (
            isinstance(tool_calls, list) and all(isinstance(c, dict) and isinstance(c.get("function"), dict) for c in tool_calls)
        ):
            return "has malformed tool_calls"
    return None


def complete_envelope(data: dict, model_id: str) -> dict:
    """Fills what a lax backend leaves out so clients get a whole `chat.completion`."""
    data = {
        "id": data.get("id") or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": data.get("created") or int(time.time()),
        "model": data.get("model") or model_id,
        **{k: v for k, v in data.items() if k not in ("id", "object", "created", "model")},
    }
    for index, choice in enumerate(data["choices"]):
        if not isinstance(choice.get("index"), int):
            choice["index"] = index
        if not choice.get("finish_reason"):  # absent or null: the answer is complete, say how
            choice["finish_reason"] = "tool_calls" if choice["message"].get("tool_calls") else "stop"
        if not choice["message"].get("role"):
            choice["message"]["role"] = "assistant"
    return data


def completion_chunks(data: dict, include_usage: bool):
    """The `chat.completion.chunk` payloads (JSON bytes) that stream one complete answer."""
    head = {"id": data["id"], "object": "chat.completion.chunk", "created": data["created"], "model": data["model"]}

    def chunk(index, delta, finish_reason=None):
        return dumps({**head, "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason}]})

    for choice in data["choices"]:
        index, message = choice["index"], choice["message"]
        tool_calls = message.get("tool_calls")
        yield chunk(index, {"role": message.get("role", "assistant"), "content": None if tool_calls and not message.get("content") else ""})
        for key in ("reasoning_content", "reasoning"):
            if message.get(key):
                yield chunk(index, {key: message[key]})
        if message.get("content"):
            yield chunk(index, {"content": message["content"]})
        if tool_calls:
            yield chunk(index, {"tool_calls": [_tool_call_delta(i, call) for i, call in enumerate(tool_calls)]})
        yield chunk(index, {}, choice["finish_reason"])
    if include_usage:
        yield usage_chunk(head, data.get("usage"))


def usage_chunk(head: dict, usage) -> bytes:
    """The final chunk a client that asked for `include_usage` gets: `choices: []` and the usage,
    null when the backend did not report it (we do not make up token counts)."""
    return dumps({**head, "choices": [], "usage": usage if isinstance(usage, dict) else None})


def missing_usage_chunk(first_payload: bytes, model_id: str) -> bytes:
    """For a relayed stream whose backend ignored `include_usage`: the promised chunk, usage null,
    with the stream's own id, created and model (read from its first event, once per stream)."""
    try:
        first = json.loads(first_payload)
    except (ValueError, RecursionError):
        first = None
    first = first if isinstance(first, dict) else {}
    head = {
        "id": first.get("id") or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": first.get("created") or int(time.time()),
        "model": first.get("model") or model_id,
    }
    return usage_chunk(head, None)


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
