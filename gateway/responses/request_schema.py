"""The Responses API request (`POST /v1/responses`), as marshmallow schemas.

Accepts what the openai SDK, the Agents SDK and Codex CLI send: `input` as a string or a list of
items, `tools` of every type (hosted ones are dropped later, in to_chat.py), and fields with no
chat meaning. Unknown fields are accepted too (every SDK release adds some) and reported, so the
access log can name them. Rejects what is malformed, or what a chat backend cannot do
(`background: true`, a stored `prompt` or `conversation`), with the error's path (`input.3.type`,
`tools.2.type`) as OpenAI's `param`. Validation only: the client's dict is returned unchanged.
Items are checked by small custom fields, not nested schemas, for the reason chat/request_schema.py
gives (a Codex request carries dozens of items and tools).
"""

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate

from ..chat.request_schema import NOT_OBJECT, NOT_STRING, REQUIRED, FirstErrorList, validated
from ..strict_fields import StrictBool, StrictNumber

ROLES = ("user", "assistant", "system", "developer")
ITEM_TYPES = (
    "message", "function_call", "function_call_output", "custom_tool_call", "custom_tool_call_output", "reasoning", "item_reference",
)
CONTENT_PART_TYPES = ("input_text", "output_text", "input_image", "refusal")
OUTPUT_PART_TYPES = ("input_text", "output_text", "input_image")  # a tool's output given as parts
TOOL_CHOICE_MODES = ("none", "auto", "required")
TEXT_FORMATS = ("text", "json_object", "json_schema")

# Top-level fields the bridge maps to the chat request (to_chat.py), or acts on itself.
MAPPED = (
    "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "max_output_tokens", "temperature",
    "top_p", "user", "reasoning", "text", "stream", "store", "previous_response_id", "background",
)
# Fields OpenAI defines that mean nothing to a chat backend: accepted, not sent (the access log
# names the ones a request carried). `reasoning.summary` and `text.verbosity` are of this kind too.
NO_CHAT_MEANING = (
    "include", "metadata", "prompt_cache_key", "prompt_cache_retention", "prompt_cache_options", "client_metadata",
    "truncation", "service_tier", "safety_identifier", "stream_options", "max_tool_calls", "top_logprobs",
    "context_management",
)
# Fields that need OpenAI's own stored objects: refused with a value, accepted as null.
REFUSED = ("conversation", "prompt")
KNOWN = frozenset(MAPPED + NO_CHAT_MEANING + REFUSED)


class _Open(Schema):
    class Meta:
        unknown = INCLUDE


def _string_errors(obj: dict, required=(), optional=()) -> dict:
    errors = {}
    for key in required:
        if key not in obj:
            errors[key] = [REQUIRED]
        elif not isinstance(obj[key], str):
            errors[key] = [NOT_STRING]
    for key in optional:
        if obj.get(key) is not None and not isinstance(obj[key], str):
            errors[key] = [NOT_STRING]
    return errors


def _first_bad(items, check) -> dict:
    for index, item in enumerate(items):
        if problem := check(item):
            return {index: problem}
    return {}


def _one_of(kind, allowed) -> list:
    return [f"'{kind}' is not supported here; one of: {', '.join(allowed)}."]


def _part_errors(part, allowed=CONTENT_PART_TYPES) -> dict | list:
    if not isinstance(part, dict):
        return [NOT_OBJECT]
    errors = _string_errors(part, required=("type",))
    kind = part.get("type")
    if errors:
        return errors
    if kind in ("input_text", "output_text"):
        errors = _string_errors(part, required=("text",))
    elif kind == "refusal":
        errors = _string_errors(part, required=("refusal",))
    elif kind == "input_image" and kind in allowed:
        if part.get("image_url") is None and part.get("file_id") is not None:
            errors = {"file_id": ["Files uploaded to OpenAI cannot be read by this gateway; send the image as image_url (a URL or a data: URL)."]}
        else:
            errors = _string_errors(part, required=("image_url",), optional=("detail",))
    if kind not in allowed:
        errors = {"type": _one_of(kind, allowed)}
    return errors


def _content_errors(content, allowed=CONTENT_PART_TYPES):
    """A message's content, or a tool's output: a string or a list of parts."""
    if isinstance(content, str):
        return None
    if isinstance(content, list):
        return _first_bad(content, lambda part: _part_errors(part, allowed)) or None
    return ["Must be a string or a list of content parts."]


def _item_errors(item) -> dict | list:
    if not isinstance(item, dict):
        return [NOT_OBJECT]
    kind = item.get("type", "message" if "role" in item else None)
    if kind is None:
        return {"type": [REQUIRED]}
    if not isinstance(kind, str):
        return {"type": [NOT_STRING]}
    if kind not in ITEM_TYPES:
        return {"type": [f"Input items of type '{kind}' cannot be sent to a chat backend; supported: {', '.join(ITEM_TYPES)}."]}
    errors = {}
    if kind == "message":
        role = item.get("role")
        if "role" not in item:
            errors["role"] = [REQUIRED]
        elif role not in ROLES:
            errors["role"] = [f"Must be one of: {', '.join(ROLES)}."]
        if "content" not in item:
            errors["content"] = [REQUIRED]
        elif problem := _content_errors(item["content"]):
            errors["content"] = problem
    elif kind == "function_call":
        errors = _string_errors(item, required=("call_id", "name", "arguments"), optional=("namespace",))
    elif kind == "custom_tool_call":
        errors = _string_errors(item, required=("call_id", "name", "input"), optional=("namespace",))
    elif kind in ("function_call_output", "custom_tool_call_output"):
        errors = _string_errors(item, required=("call_id",))
        if "output" not in item:
            errors["output"] = [REQUIRED]
        elif problem := _content_errors(item["output"], OUTPUT_PART_TYPES):
            errors["output"] = problem
    elif kind == "item_reference":
        errors = _string_errors(item, required=("id",))
    return errors  # reasoning items are not sent to the backend: nothing of theirs to check


class Input(fields.Field):
    """`input`: one user message as a string, or a list of items."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise ValidationError("Must be a string or a list of input items.")
        if problems := _first_bad(value, _item_errors):
            raise ValidationError(problems)
        return value


def _function_errors(tool: dict) -> dict:
    errors = _string_errors(tool, required=("name",), optional=("description",))
    if tool.get("parameters") is not None and not isinstance(tool["parameters"], dict):
        errors["parameters"] = ["Must be a JSON schema object."]
    if tool.get("strict") is not None and not isinstance(tool["strict"], bool):
        errors["strict"] = ["Must be true or false."]
    return errors


def _custom_errors(tool: dict) -> dict:
    errors = _string_errors(tool, required=("name",), optional=("description",))
    if tool.get("format") is not None and not isinstance(tool["format"], dict):
        errors["format"] = [NOT_OBJECT]
    return errors


def _namespaced_tool_errors(tool) -> dict | list:
    if not isinstance(tool, dict):
        return [NOT_OBJECT]
    kind = tool.get("type")
    if kind == "function":
        return _function_errors(tool)
    if kind == "custom":
        return _custom_errors(tool)
    return {"type": ["A namespace holds tools of type 'function' or 'custom'."]}


class ToolDefinition(fields.Field):
    """A tool: `function`, `custom` and `namespace` are checked; any other type is a hosted tool
    (or one newer than this gateway) that to_chat.py drops."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, dict):
            raise ValidationError(NOT_OBJECT)
        errors = _string_errors(value, required=("type",))
        kind = value.get("type")
        if kind == "function":
            errors = _function_errors(value)
        elif kind == "custom":
            errors = _custom_errors(value)
        elif kind == "namespace":
            errors = _string_errors(value, required=("name",), optional=("description",))
            tools = value.get("tools")
            if not isinstance(tools, list):
                errors["tools"] = [REQUIRED if tools is None else "Not a valid list."]
            elif problems := _first_bad(tools, _namespaced_tool_errors):
                errors["tools"] = problems
        if errors:
            raise ValidationError(errors)
        return value


class ToolChoice(fields.Field):
    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            if value not in TOOL_CHOICE_MODES:
                raise ValidationError(f"Must be one of: {', '.join(TOOL_CHOICE_MODES)}, or an object naming a tool.")
            return value
        if not isinstance(value, dict):
            raise ValidationError(f"Must be one of: {', '.join(TOOL_CHOICE_MODES)}, or an object naming a tool.")
        errors = _string_errors(value, required=("type",))
        if value.get("type") in ("function", "custom"):
            errors = _string_errors(value, required=("name",), optional=("namespace",))
        elif value.get("type") == "allowed_tools":
            if value.get("mode") not in ("auto", "required"):
                errors["mode"] = ["Must be one of: auto, required."]
            if not isinstance(value.get("tools"), list) or not all(isinstance(t, dict) for t in value["tools"]):
                errors["tools"] = ["Must be a list of tool objects."]
        if errors:
            raise ValidationError(errors)
        return value


class TextFormat(fields.Field):
    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, dict):
            raise ValidationError(NOT_OBJECT)
        kind = value.get("type")
        if kind not in TEXT_FORMATS:
            raise ValidationError({"type": [f"Must be one of: {', '.join(TEXT_FORMATS)}."]})
        if kind == "json_schema":
            errors = _string_errors(value, required=("name",), optional=("description",))
            if not isinstance(value.get("schema"), dict):
                errors["schema"] = [REQUIRED if value.get("schema") is None else "Must be a JSON schema object."]
            if value.get("strict") is not None and not isinstance(value["strict"], bool):
                errors["strict"] = ["Must be true or false."]
            if errors:
                raise ValidationError(errors)
        return value


class TextSchema(_Open):
    format = TextFormat(allow_none=True)


class ReasoningSchema(_Open):
    effort = fields.String(allow_none=True)


class NotTrue(StrictBool):
    """A flag the gateway cannot honour when it is true (`background`)."""

    def __init__(self, reason: str, **kwargs):
        super().__init__(**kwargs)
        self.reason = reason

    def _deserialize(self, value, attr, data, **kwargs):
        if super()._deserialize(value, attr, data, **kwargs):
            raise ValidationError(self.reason)
        return value


class Unsupported(fields.Field):
    """A field whose meaning needs OpenAI's own stored objects: null is fine, a value is refused."""

    def __init__(self, reason: str, **kwargs):
        super().__init__(allow_none=True, **kwargs)
        self.reason = reason

    def _deserialize(self, value, attr, data, **kwargs):
        raise ValidationError(self.reason)


class ResponsesRequestSchema(_Open):
    model = fields.String(required=True, validate=validate.Length(min=1))
    input = Input()
    instructions = fields.String(allow_none=True)
    tools = FirstErrorList(ToolDefinition(), allow_none=True)
    tool_choice = ToolChoice(allow_none=True)
    parallel_tool_calls = StrictBool(allow_none=True)
    max_output_tokens = StrictNumber(integer=True, minimum=1, allow_none=True)
    temperature = StrictNumber(allow_none=True)
    top_p = StrictNumber(allow_none=True)
    user = fields.String(allow_none=True)
    reasoning = fields.Nested(ReasoningSchema, allow_none=True)
    text = fields.Nested(TextSchema, allow_none=True)
    stream = StrictBool(allow_none=True)
    store = StrictBool(allow_none=True)
    previous_response_id = fields.String(allow_none=True, validate=validate.Length(min=1))
    background = NotTrue(
        "Background responses are not supported by this gateway: a chat backend answers while the request is open. "
        "Leave background out (or false).",
        allow_none=True,
    )
    conversation = Unsupported("Conversations stored at OpenAI are not available here: send the history in input, or use previous_response_id.")
    prompt = Unsupported("Prompt templates stored at OpenAI are not available here: send instructions and input instead.")


_schema = ResponsesRequestSchema()


def validate_responses_request(body) -> dict:
    """Returns the body unchanged if it is a valid Responses request; else InvalidRequest naming
    the first bad field (`input.3.type`) as `param`."""
    return validated(_schema, body)


def unknown_fields(body: dict) -> list:
    """Top-level fields this gateway does not know (accepted, not sent), for the access log."""
    return sorted(key for key in body if key not in KNOWN)


def ignored_fields(body: dict) -> list:
    """Fields the request set that have no chat meaning (accepted, not sent), for the access log."""
    ignored = [key for key in NO_CHAT_MEANING if body.get(key) is not None]
    if isinstance(body.get("reasoning"), dict) and body["reasoning"].get("summary") is not None:
        ignored.append("reasoning.summary")
    if isinstance(body.get("text"), dict) and body["text"].get("verbosity") is not None:
        ignored.append("text.verbosity")
    return ignored
