"""A chat backend's answer → the Responses API's Response object, and the pieces of it.

The Response is what OpenAI returns: `id` (`resp_...`), `object`, `created_at`, `status`
(`completed`; `incomplete` with `incomplete_details.reason` when the answer was cut by its length
or a content filter; `failed` with `error`), `model` (the id the client asked for), `output` (a
`reasoning` item from the backend's `reasoning_content`, a `message` item with `output_text`,
`function_call` / `custom_tool_call` items), `usage`, and the request's settings echoed. The
streaming translator (events.py) builds its items with the same functions, so a streamed answer
ends with the Response a `stream: false` request would have got.
"""

import json
import time
import uuid

from .to_chat import CUSTOM_INPUT, ToolMap

# What a chat finish_reason means for a response: (status, incomplete_details.reason).
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_id(prefix: str) -> str:
    """`resp_...`, `msg_...`, `fc_...`, `ctc_...`, `rs_...`: OpenAI's prefixes, our random part."""
    return f"{prefix}_{uuid.uuid4().hex}"


def response_shell(request: dict, stored: bool) -> dict:
    """A new Response for `request`, in progress and without output: its id, and the request's
    settings echoed as OpenAI echoes them (`stored`: whether it will be kept)."""
    reasoning = request.get("reasoning") or {}
    text = dict(request.get("text") or {})
    text["format"] = text.get("format") or {"type": "text"}
    return {
        "id": new_id("resp"),
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": request["model"],
        "output": [],
        "parallel_tool_calls": request.get("parallel_tool_calls") is not False,
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": stored,
        "temperature": request.get("temperature"),
        "text": text,
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": request.get("tools") or [],
        "top_p": request.get("top_p"),
        "truncation": request.get("truncation") or "disabled",
        "usage": None,
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def finished(shell: dict, output: list, finish_reason, usage) -> dict:
    """The Response once the answer is complete: its status from the chat finish_reason."""
    reason = _INCOMPLETE.get(finish_reason)
    return {
        **shell,
        "status": "incomplete" if reason else "completed",
        "incomplete_details": {"reason": reason} if reason else None,
        "output": output,
        "usage": response_usage(usage),
    }


def failed(shell: dict, output: list, error: dict, usage=None) -> dict:
    """The Response of an answer that broke off: `error` is `{"code", "message"}`."""
    return {**shell, "status": "failed", "error": error, "output": output, "usage": response_usage(usage)}


def response_usage(usage) -> dict | None:
    """Chat token counts in the Responses API's names; None when the backend reported none."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    total = usage.get("total_tokens")
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": _count((usage.get("prompt_tokens_details") or {}).get("cached_tokens")), "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": _count((usage.get("completion_tokens_details") or {}).get("reasoning_tokens"))},
        "total_tokens": _count(total) if isinstance(total, int) else prompt + completion,
    }


def _count(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


# --- output items -------------------------------------------------------------------------------


def message_item(item_id: str, parts: list, status: str = "completed") -> dict:
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": parts}


def text_part(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def refusal_part(text: str) -> dict:
    return {"type": "refusal", "refusal": text}


def reasoning_item(item_id: str, text: str) -> dict:
    return {"id": item_id, "type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": text}]}


def call_item(item_id: str, call_id: str, chat_name: str, arguments: str, tools: ToolMap, status: str = "completed") -> dict:
    """A backend's tool call as the item the client's tool dispatch expects: a `function_call` with
    the tool's own name (and its `namespace`, which Codex needs to run it), or a `custom_tool_call`
    with the free-form input."""
    kind, name, namespace = tools.origin(chat_name)
    if kind == "custom":
        item = {"id": item_id, "type": "custom_tool_call", "status": status, "call_id": call_id, "name": name, "input": custom_input(arguments)}
    else:
        item = {"id": item_id, "type": "function_call", "status": status, "call_id": call_id, "name": name, "arguments": arguments}
    if namespace:
        item["namespace"] = namespace
    return item


def call_item_id(chat_name: str, tools: ToolMap) -> str:
    return new_id("ctc" if tools.is_custom(chat_name) else "fc")


def custom_input(arguments: str) -> str:
    """The free-form input from the arguments of the one-parameter function it was sent as; the
    raw arguments when the backend did not answer in that shape."""
    try:
        parsed = json.loads(arguments)
    except (ValueError, RecursionError):
        return arguments
    if isinstance(parsed, dict) and isinstance(parsed.get(CUSTOM_INPUT), str):
        return parsed[CUSTOM_INPUT]
    return arguments


def arguments_text(arguments) -> str:
    """Some backends send a call's arguments as an object rather than a JSON string."""
    if isinstance(arguments, str):
        return arguments
    return "" if arguments is None else json.dumps(arguments, ensure_ascii=False)


def reasoning_text(message: dict) -> str | None:
    for key in ("reasoning_content", "reasoning"):  # vLLM / DeepSeek, and OpenRouter / Ollama names
        if isinstance(message.get(key), str) and message[key]:
            return message[key]
    return None


# --- a whole answer -------------------------------------------------------------------------------


def response_from_completion(completion: dict, shell: dict, tools: ToolMap) -> dict:
    """The Response for a checked `chat.completion` (chat/answers.py). Only its first choice:
    the Responses API has no `n`."""
    choice = completion["choices"][0]
    message = choice["message"]
    reason = choice.get("finish_reason")
    status = "incomplete" if reason in _INCOMPLETE else "completed"
    output = []
    if thought := reasoning_text(message):
        output.append(reasoning_item(new_id("rs"), thought))
    parts = []
    if isinstance(message.get("content"), str) and message["content"]:
        parts.append(text_part(message["content"]))
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        parts.append(refusal_part(message["refusal"]))
    if parts:
        output.append(message_item(new_id("msg"), parts, status))
    for call in message.get("tool_calls") or ():
        function = call["function"]
        name = function.get("name") or ""
        output.append(call_item(call_item_id(name, tools), call.get("id") or f"call_{uuid.uuid4().hex[:24]}", name,
                                arguments_text(function.get("arguments")), tools))
    return finished(shell, output, reason, completion.get("usage"))
