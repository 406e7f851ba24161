"""A validated Responses request → the Chat Completions request a chat backend understands.

The result then takes the chat path unchanged (web/routing.py `attempts_for`, upstream/call.py
`build_call`): model routing and `upstream` names, the model's system prompt, `defaults` and
`overrides`, headers and identity, failover and limits are the chat path's own. What this module
adds is the translation, and the `ToolMap` that turns the backend's tool calls back into
Responses items:

- items → messages: `developer` → `system` (chat backends of this kind do not know it), with
  `instructions` and every leading system message merged into the one leading system message;
  `function_call` → an assistant message's `tool_calls` (consecutive calls, and the assistant text
  just before them, in one message); `function_call_output` → a `tool` message; custom tool calls
  likewise; `reasoning` items are not sent;
- tools: `function` kept, `namespace` flattened to `<namespace>__<name>`, `custom` (free-form
  input) → a function with one string parameter `input`; hosted tools cannot run on a chat
  backend and are dropped (the caller logs which);
- settings: `max_output_tokens` → `max_tokens`, `reasoning.effort` → `reasoning_effort`,
  `text.format` → `response_format`; temperature, top_p, user, tool_choice, parallel_tool_calls.

Pure: no Flask, no I/O. `item_reference`s are resolved before (store.py).
"""

import dataclasses
import json

from ..errors import InvalidRequest

NAMESPACE_SEPARATOR = "__"
CUSTOM_INPUT = "input"  # the one parameter a custom (free-form) tool's function takes
TOOL_OUTPUT_IMAGE = "[image omitted: a tool's image output cannot be passed to this chat backend]"


def flattened(name: str, namespace: str | None) -> str:
    """The chat function name of a tool: its own name, or `<namespace>__<name>` inside a namespace."""
    return f"{namespace}{NAMESPACE_SEPARATOR}{name}" if namespace else name


class ToolMap:
    """Which chat function came from which Responses tool: (kind, name, namespace) by chat name."""

    __slots__ = ("_tools",)

    def __init__(self):
        self._tools = {}  # chat name -> ("function" | "custom", name, namespace or None)

    def add(self, kind: str, name: str, namespace: str | None = None) -> str:
        chat_name = flattened(name, namespace)
        self._tools[chat_name] = (kind, name, namespace)
        return chat_name

    def knows(self, chat_name: str) -> bool:
        return chat_name in self._tools

    def is_custom(self, chat_name: str) -> bool:
        return self._tools.get(chat_name, ("function",))[0] == "custom"

    def origin(self, chat_name: str) -> tuple:
        """(kind, name, namespace) of the tool a backend called by `chat_name`. A name the request
        did not define (a model's invention) comes back as a plain function call of that name."""
        return self._tools.get(chat_name) or ("function", chat_name, None)


@dataclasses.dataclass(slots=True)
class ChatBridge:
    chat: dict  # the Chat Completions request body
    tools: ToolMap
    dropped_tools: list  # the types of the hosted tools left out, in request order


def input_items(request: dict) -> list:
    """The request's `input` as a list of items (a string is one user message)."""
    given = request.get("input")
    if given is None:
        return []
    if isinstance(given, str):
        return [{"type": "message", "role": "user", "content": given}]
    return list(given)


def chat_request(request: dict, items: list) -> ChatBridge:
    """The chat request for `request`, whose conversation is `items` (the stored history of
    `previous_response_id`, then this request's input, with item references resolved)."""
    tools, chat_tools, dropped = _tools(request.get("tools") or ())
    messages = _messages(items, tools)
    messages = _leading_system(request.get("instructions"), messages)
    if not messages:
        raise InvalidRequest("Invalid request: 'input': the conversation is empty; send input (or previous_response_id).", param="input")
    chat = {"model": request["model"], "messages": messages, "stream": bool(request.get("stream"))}
    if chat["stream"]:
        chat["stream_options"] = {"include_usage": True}  # a response's usage comes from the last chunk
    choice = request.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = {flattened(t.get("name", ""), t.get("namespace")) for t in choice["tools"]}
        chat_tools = [t for t in chat_tools if t["function"]["name"] in allowed]
        choice = choice["mode"]
    if chat_tools:
        chat["tools"] = chat_tools
        if (mapped := _tool_choice(choice)) is not None:
            chat["tool_choice"] = mapped
        if request.get("parallel_tool_calls") is not None:
            chat["parallel_tool_calls"] = request["parallel_tool_calls"]
    for ours, theirs in (("max_output_tokens", "max_tokens"), ("temperature", "temperature"), ("top_p", "top_p"), ("user", "user")):
        if request.get(ours) is not None:
            chat[theirs] = request[ours]
    effort = (request.get("reasoning") or {}).get("effort")
    if effort is not None:
        chat["reasoning_effort"] = effort
    response_format = _response_format((request.get("text") or {}).get("format"))
    if response_format is not None:
        chat["response_format"] = response_format
    return ChatBridge(chat, tools, dropped)


# --- tools ------------------------------------------------------------------------------------


def _tools(given) -> tuple:
    tools, chat_tools, dropped = ToolMap(), [], []
    for index, tool in enumerate(given):
        kind = tool["type"]
        if kind == "namespace":
            for inner_index, inner in enumerate(tool["tools"]):
                chat_tools.append(_chat_tool(inner, tools, tool["name"], f"tools.{index}.tools.{inner_index}.name"))
        elif kind in ("function", "custom"):
            chat_tools.append(_chat_tool(tool, tools, None, f"tools.{index}.name"))
        else:  # web_search, file_search, code_interpreter, computer_use, mcp, image_generation, local_shell, ...
            dropped.append(kind)
    return tools, chat_tools, dropped


def _chat_tool(tool: dict, tools: ToolMap, namespace: str | None, param: str) -> dict:
    if tools.knows(flattened(tool["name"], namespace)):  # its calls could not be told apart
        raise InvalidRequest(f"Invalid request: '{param}': a second tool is called '{flattened(tool['name'], namespace)}' for the backend.", param=param)
    name = tools.add(tool["type"], tool["name"], namespace)
    function = {"name": name}
    if tool.get("description"):
        function["description"] = tool["description"]
    if tool["type"] == "custom":
        function["parameters"] = {
            "type": "object",
            "properties": {CUSTOM_INPUT: {"type": "string", "description": _custom_input_description(tool.get("format"))}},
            "required": [CUSTOM_INPUT],
            "additionalProperties": False,
        }
    else:
        if tool.get("parameters") is not None:
            function["parameters"] = tool["parameters"]
        if tool.get("strict") is not None:
            function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _custom_input_description(format_) -> str:
    """What the one string parameter of a custom tool holds: free text, or text in a grammar."""
    if isinstance(format_, dict) and format_.get("type") == "grammar" and isinstance(format_.get("definition"), str):
        return f"The tool's whole input, written in this {format_.get('syntax') or 'grammar'} grammar:\n{format_['definition']}"
    return "The tool's whole input, as free-form text."


def _tool_choice(choice):
    if choice is None or isinstance(choice, str):
        return choice
    if choice.get("type") in ("function", "custom"):
        return {"type": "function", "function": {"name": flattened(choice["name"], choice.get("namespace"))}}
    return None  # a hosted tool's: dropped with the tool


# --- items ------------------------------------------------------------------------------------


def _messages(items: list, tools: ToolMap) -> list:
    messages = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            role = "system" if item["role"] == "developer" else item["role"]
            messages.append({"role": role, "content": _content(item["content"], role)})
        elif kind in ("function_call", "custom_tool_call"):
            if kind == "function_call":
                arguments = item["arguments"]
            else:
                arguments = json.dumps({CUSTOM_INPUT: item["input"]}, ensure_ascii=False)
            call = {"id": item["call_id"], "type": "function", "function": {"name": flattened(item["name"], item.get("namespace")), "arguments": arguments}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":  # its text, or the calls before this one
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind in ("function_call_output", "custom_tool_call_output"):
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": _tool_output(item["output"])})
        elif kind == "item_reference":  # store.resolve_references replaces them all before
            raise InvalidRequest(f"Invalid request: the item reference '{item.get('id')}' was not resolved.", param="input")
        # reasoning: the backend's own thoughts from an earlier turn are not sent back
    return messages


def _part(part: dict) -> dict:
    kind = part["type"]
    if kind == "input_image":
        image = {"url": part["image_url"]}
        if part.get("detail"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    return {"type": "text", "text": part["refusal"] if kind == "refusal" else part["text"]}


def _content(content, role: str):
    """A message's content for chat: a string, or a list of `text` / `image_url` parts. One text
    part is sent as a string (what every chat backend takes), and an assistant's text parts as one
    string (they are one answer)."""
    if isinstance(content, str):
        return content
    parts = [_part(part) for part in content]
    texts_only = all(part["type"] == "text" for part in parts)
    if texts_only and (len(parts) == 1 or role == "assistant"):
        return "".join(part["text"] for part in parts)
    return parts if parts else ""


def _tool_output(output):
    """A tool's result for a `tool` message: a string, or text parts (chat tool messages carry no images)."""
    if isinstance(output, str):
        return output
    parts = [{"type": "text", "text": TOOL_OUTPUT_IMAGE} if part["type"] == "input_image" else _part(part) for part in output]
    if len(parts) == 1:
        return parts[0]["text"]
    return parts if parts else ""


def _leading_system(instructions, messages: list) -> list:
    """`instructions`, then every system message before the first other turn, as one system
    message: many chat templates take a single system message, and only at the start."""
    leading = [instructions] if instructions else []
    start = 0
    while start < len(messages) and messages[start]["role"] == "system":
        leading.append(messages[start]["content"])
        start += 1
    leading = [content for content in leading if content not in ("", [])]
    if not leading:
        return messages[start:]
    if all(isinstance(content, str) for content in leading):
        merged = "\n\n".join(leading)
    else:
        merged = [part for content in leading for part in ([{"type": "text", "text": content}] if isinstance(content, str) else content)]
    return [{"role": "system", "content": merged}, *messages[start:]]


def _response_format(format_):
    if not isinstance(format_, dict) or format_.get("type") == "text":
        return None
    if format_["type"] == "json_object":
        return {"type": "json_object"}
    schema = {"name": format_["name"], "schema": format_["schema"]}
    for key in ("description", "strict"):
        if format_.get(key) is not None:
            schema[key] = format_[key]
    return {"type": "json_schema", "json_schema": schema}
