"""The streaming translator: `chat.completion.chunk` payloads in, Responses API SSE events out.

One `ResponseEvents` per stream, and it is that stream's *framing* (streaming/framing.py): the
`ChatStream` hands it the backend's chunks as they come, the end, or the failure, and writes
what it returns. Each event is `event: <type>` and `data: <json>` with the same `type` and a
`sequence_number` counting from 0 without gaps:

    response.created, response.in_progress                      (before the first item)
    response.output_item.added            a reasoning item, a message, a function call ...
      response.content_part.added         (message and reasoning)
      response.output_text.delta ...      (reasoning: response.reasoning_text.delta ...;
      response.output_text.done            function calls: response.function_call_arguments.delta/.done;
      response.content_part.done           custom tools: response.custom_tool_call_input.delta/.done)
    response.output_item.done
    response.completed | response.incomplete                    (the end)
    response.failed                                             (a failure after the first byte)

It handles what a relayed backend stream sends (content, `reasoning_content` / `reasoning`,
`refusal`, tool call deltas by index with arguments in pieces, several calls, finish_reason, a
usage chunk) and the chunks a non-streaming backend's answer is built into (chat/chunks.py).
Items open one at a time; once a tool call has started, any text that follows (a model's
trailing newline, mostly) is kept and sent as a whole item after the calls, so the calls stay
one block. No `[DONE]`: the last event says how the response ended.
"""

import json
import uuid

from ..errors import BackendInvalidAnswer, GatewayError, redacted_body
from ..jsonio import dumps
from . import from_chat
from .from_chat import call_item, call_item_id, message_item, new_id, reasoning_item, text_part
from .to_chat import ToolMap


class _Call:
    """One tool call being streamed: chat index → its item, once its name is known."""

    __slots__ = ("call_id", "name", "arguments", "item_id", "output_index")

    def __init__(self, call_id: str):
        self.call_id = call_id
        self.name = ""
        self.arguments = ""
        self.item_id = None  # set when the item is announced (output_item.added)
        self.output_index = None


class ResponseEvents:
    """Chunks → events for one stream; `on_finished(response)` is told the final Response (to
    store it) before the last event goes out, so a client that continues at once finds it."""

    def __init__(self, shell: dict, tools: ToolMap, on_finished=None, backend_name=lambda: "the backend"):
        self._shell = shell
        self._tools = tools
        self._on_finished = on_finished
        self._backend_name = backend_name
        self._sequence = 0
        self._started = False
        self._out = []  # the events of the write being built
        self._output = []  # every item announced, by output_index; each is final once done
        self._open = None  # ("message" | "reasoning", output_index, item_id, kind of part, text so far)
        self._calls = {}  # chat tool call index -> _Call
        self._late_text = []  # text that came after a tool call started
        self._late_reasoning = []
        self._finish_reason = None
        self._usage = None

    # --- the framing --------------------------------------------------------------------------------

    def encode(self, payloads) -> bytes:
        """The events for one or more chunks (bytes of chat.completion.chunk JSON)."""
        self._begin()
        for payload in payloads:
            self._chunk(payload)
        return self._flush()

    def end(self) -> bytes:
        """The backend finished: every item closed, then response.completed or .incomplete."""
        self._begin()
        self._close_open()
        self._close_calls()
        if late := "".join(self._late_reasoning):
            self._whole_item(reasoning_item(new_id("rs"), late))
        if (late := "".join(self._late_text)).strip():
            self._whole_item(message_item(new_id("msg"), [text_part(late)]))
        response = from_chat.finished(self._shell, self._output, self._finish_reason, self._usage)
        if self._on_finished is not None:
            self._on_finished(response)
        self._event(f"response.{response['status']}", response=response)
        return self._flush()

    def error(self, error: GatewayError, secrets=()) -> bytes:
        """A failure after the first byte: response.failed, carrying the code and message a chat
        stream's error event would (redacted the same way)."""
        self._begin()
        body = redacted_body(error, secrets)["error"]
        failure = {"code": body["code"] or "server_error", "message": body["message"]}
        output = [dict(item, status="incomplete") if item.get("status") == "in_progress" else item for item in self._output]
        self._event("response.failed", response=from_chat.failed(self._shell, output, failure, self._usage))
        return self._flush()

    # --- chunks ---------------------------------------------------------------------------------

    def _chunk(self, payload: bytes) -> None:
        try:
            chunk = json.loads(payload)
        except (ValueError, RecursionError):
            chunk = None
        if not isinstance(chunk, dict):
            raise BackendInvalidAnswer(self._backend_name(), "sent an event that is not a JSON object")
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # the Responses API has one answer per request (no `n`)
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._delta(delta)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]

    def _delta(self, delta: dict) -> None:
        for key in ("reasoning_content", "reasoning"):
            if isinstance(delta.get(key), str) and delta[key]:
                self._text("reasoning", delta[key])
        if isinstance(delta.get("content"), str) and delta["content"]:
            self._text("message", delta["content"])
        if isinstance(delta.get("refusal"), str) and delta["refusal"]:
            self._text("message", delta["refusal"], part="refusal")
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                self._tool_call(call)

    def _text(self, kind: str, text: str, part: str = "output_text") -> None:
        if self._calls:  # after a tool call: sent whole at the end, after the calls
            (self._late_reasoning if kind == "reasoning" else self._late_text).append(text)
            return
        if kind == "reasoning":
            part = "reasoning_text"
        current = self._open
        if current is None or current[0] != kind or current[3] != part:
            self._close_open()
            current = self._open_item(kind, part)
        current[4].append(text)
        if part == "output_text":
            self._event("response.output_text.delta", item_id=current[2], output_index=current[1], content_index=0, delta=text, logprobs=[])
        elif part == "refusal":
            self._event("response.refusal.delta", item_id=current[2], output_index=current[1], content_index=0, delta=text)
        else:
            self._event("response.reasoning_text.delta", item_id=current[2], output_index=current[1], content_index=0, delta=text)

    def _open_item(self, kind: str, part: str) -> list:
        index = len(self._output)
        if kind == "reasoning":
            item_id = new_id("rs")
            item = {"id": item_id, "type": "reasoning", "summary": [], "content": []}
        else:
            item_id = new_id("msg")
            item = message_item(item_id, [], "in_progress")
        self._output.append(item)
        self._event("response.output_item.added", output_index=index, item=item)
        self._event("response.content_part.added", item_id=item_id, output_index=index, content_index=0, part=_part(part, ""))
        self._open = [kind, index, item_id, part, []]
        return self._open

    def _close_open(self) -> None:
        current, self._open = self._open, None
        if current is None:
            return
        kind, index, item_id, part, pieces = current
        text = "".join(pieces)
        if part == "output_text":
            self._event("response.output_text.done", item_id=item_id, output_index=index, content_index=0, text=text, logprobs=[])
        elif part == "refusal":
            self._event("response.refusal.done", item_id=item_id, output_index=index, content_index=0, refusal=text)
        else:
            self._event("response.reasoning_text.done", item_id=item_id, output_index=index, content_index=0, text=text)
        self._event("response.content_part.done", item_id=item_id, output_index=index, content_index=0, part=_part(part, text))
        item = reasoning_item(item_id, text) if kind == "reasoning" else message_item(item_id, [_part(part, text)])
        self._output[index] = item
        self._event("response.output_item.done", output_index=index, item=item)

    def _tool_call(self, delta: dict) -> None:
        index = delta.get("index", 0)
        call = self._calls.get(index)
        if call is None:
            self._close_open()
            call = self._calls[index] = _Call(delta.get("id") or f"call_{uuid.uuid4().hex[:24]}")
        elif call.item_id is None and delta.get("id"):
            call.call_id = delta["id"]
        function = delta.get("function") if isinstance(delta.get("function"), dict) else {}
        if call.item_id is None and isinstance(function.get("name"), str):
            call.name += function["name"]
        arguments = from_chat.arguments_text(function.get("arguments"))
        if call.item_id is None and call.name:
            self._announce(call)
        if arguments:
            call.arguments += arguments
            if call.item_id is not None and not self._tools.is_custom(call.name):
                self._event("response.function_call_arguments.delta", item_id=call.item_id, output_index=call.output_index, delta=arguments)

    def _announce(self, call: _Call) -> None:
        """The call's item opens once its name is known (arguments that came before go out with it)."""
        call.item_id = call_item_id(call.name, self._tools)
        call.output_index = len(self._output)
        item = call_item(call.item_id, call.call_id, call.name, "", self._tools, status="in_progress")
        self._output.append(item)
        self._event("response.output_item.added", output_index=call.output_index, item=item)
        if call.arguments and not self._tools.is_custom(call.name):
            self._event("response.function_call_arguments.delta", item_id=call.item_id, output_index=call.output_index, delta=call.arguments)

    def _close_calls(self) -> None:
        for call in self._calls.values():
            if call.item_id is None:
                self._announce(call)
            item = call_item(call.item_id, call.call_id, call.name, call.arguments, self._tools)
            if item["type"] == "custom_tool_call":
                self._event("response.custom_tool_call_input.delta", item_id=call.item_id, output_index=call.output_index, delta=item["input"])
                self._event("response.custom_tool_call_input.done", item_id=call.item_id, output_index=call.output_index, input=item["input"])
            else:
                self._event("response.function_call_arguments.done", item_id=call.item_id, output_index=call.output_index,
                            name=item["name"], arguments=call.arguments)
            self._output[call.output_index] = item
            self._event("response.output_item.done", output_index=call.output_index, item=item)
        self._calls = {}

    def _whole_item(self, item: dict) -> None:
        """An item that is complete already (text that followed the tool calls)."""
        index = len(self._output)
        is_reasoning = item["type"] == "reasoning"
        part_type = "reasoning_text" if is_reasoning else "output_text"
        text = item["content"][0]["text"]
        self._output.append(item)
        opened = dict(item, content=[]) if is_reasoning else dict(item, status="in_progress", content=[])
        self._event("response.output_item.added", output_index=index, item=opened)
        self._event("response.content_part.added", item_id=item["id"], output_index=index, content_index=0, part=_part(part_type, ""))
        if is_reasoning:
            self._event("response.reasoning_text.delta", item_id=item["id"], output_index=index, content_index=0, delta=text)
            self._event("response.reasoning_text.done", item_id=item["id"], output_index=index, content_index=0, text=text)
        else:
            self._event("response.output_text.delta", item_id=item["id"], output_index=index, content_index=0, delta=text, logprobs=[])
            self._event("response.output_text.done", item_id=item["id"], output_index=index, content_index=0, text=text, logprobs=[])
        self._event("response.content_part.done", item_id=item["id"], output_index=index, content_index=0, part=_part(part_type, text))
        self._event("response.output_item.done", output_index=index, item=item)

    # --- events ---------------------------------------------------------------------------------

    def _begin(self) -> None:
        if not self._started:
            self._started = True
            self._event("response.created", response=self._shell)
            self._event("response.in_progress", response=self._shell)

    def _event(self, kind: str, **fields) -> None:
        data = dumps({"type": kind, "sequence_number": self._sequence, **fields})
        self._sequence += 1
        self._out.append(b"event: " + kind.encode("ascii") + b"\ndata: " + data + b"\n\n")

    def _flush(self) -> bytes:
        out, self._out = self._out, []
        return b"".join(out)


def _part(kind: str, text: str) -> dict:
    if kind == "output_text":
        return text_part(text)
    if kind == "refusal":
        return {"type": "refusal", "refusal": text}
    return {"type": "reasoning_text", "text": text}
