"""A backend's whole answer (`chat.completion`): is it one, and filling what a lax backend left out."""

import time
import uuid


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


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
        "id": data.get("id") or new_completion_id(),
        "object": "chat.completion",
        "created": data.get("created") or int(time.time()),
        "model": model_id,  # the id the client asked for; the backend's own name is in the access log
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
