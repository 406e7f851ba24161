"""Fitting a conversation to the backend: the model's system prompt, `tools = "drop"`, `content = "text"`.

Open WebUI sends tool definitions with every chat and images as content parts; many corporate
backends accept neither. Rather than pass them on to be rejected, or drop them silently, each
backend says what it takes, and the conversation is rewritten so the model still sees what
happened: earlier tool calls and results become plain turns, an omitted image leaves a note.
Every function returns new lists and dicts: the client's request is never changed.
"""

import json

TOOL_FIELDS = ("tools", "tool_choice", "parallel_tool_calls", "functions", "function_call")
IMAGE_PLACEHOLDER = "[image omitted: this model accepts text only]"


def merge_system_prompt(messages: list, prompt: str) -> list:
    """The model's prompt at the start of the single leading system message."""
    if messages and messages[0].get("role") == "system":
        first = messages[0]
        content = first.get("content")
        if isinstance(content, list):
            merged = [{"type": "text", "text": prompt}, *content]
        elif content:
            merged = f"{prompt}\n\n{content}"
        else:
            merged = prompt
        return [{**first, "content": merged}, *messages[1:]]
    return [{"role": "system", "content": prompt}, *messages]


def drop_tools(body: dict) -> None:
    """Removes tool definitions and turns earlier tool turns into plain text turns (in place on `body`)."""
    for field in TOOL_FIELDS:
        body.pop(field, None)
    messages = body["messages"]
    if any(m.get("role") == "tool" or m.get("tool_calls") for m in messages):
        names = {call.get("id"): call["function"].get("name") for m in messages for call in m.get("tool_calls") or ()}
        body["messages"] = [_plain_turn(m, names) for m in messages]


def _plain_turn(message: dict, tool_names: dict) -> dict:
    role = message.get("role")
    if role == "assistant" and message.get("tool_calls"):
        lines = [text_of(message.get("content"))] if message.get("content") else []
        for call in message["tool_calls"]:
            function = call["function"]
            lines.append(f"[Called tool {function.get('name')} with arguments {_arguments(function.get('arguments'))}]")
        plain = {k: v for k, v in message.items() if k not in ("tool_calls", "function_call")}
        plain["content"] = "\n".join(lines)
        return plain
    if role == "tool":
        call_id = message.get("tool_call_id")
        name = tool_names.get(call_id) or "a tool"
        return {"role": "user", "content": f"[Result of {name} (call {call_id})]\n{text_of(message.get('content'))}"}
    return message


def _arguments(arguments) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


def text_of(content) -> str:
    """A message's content as one string; parts a text-only model cannot take leave a note."""
    if isinstance(content, list):
        return "\n".join(_part_text(part) for part in content)
    return content or ""


def _part_text(part) -> str:
    kind = part.get("type")
    if kind == "text":
        return part.get("text", "")
    if kind == "image_url":
        return IMAGE_PLACEHOLDER
    return f"[{kind or 'unknown'} content omitted: this model accepts text only]"


def content_as_text(body: dict) -> None:
    """Every list of content parts joined into one string (in place on `body`)."""
    messages = body["messages"]
    if any(isinstance(m.get("content"), list) for m in messages):
        body["messages"] = [
            {**m, "content": text_of(m["content"])} if isinstance(m.get("content"), list) else m for m in messages
        ]
