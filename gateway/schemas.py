"""The Chat Completions request, as marshmallow schemas.

Accepts everything Open WebUI and the openai SDK send: content as a string, a list of parts, or
null on an assistant turn with `tool_calls`; roles system, developer, user, assistant, tool;
unknown fields kept (on every level: `unknown = INCLUDE` is per schema, so the shared base sets it).
Rejects what is malformed, with the error's path (`messages.2.role`) as OpenAI's `param`.
Validation only: the body forwarded is the client's own dict, so no value is coerced on the way.
"""

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate, validates_schema

from .errors import InvalidRequest
from .fields import StrictBool, StrictNumber

ROLES = ("system", "developer", "user", "assistant", "tool")


class _Open(Schema):
    class Meta:
        unknown = INCLUDE


class ImageURLSchema(_Open):
    url = fields.String(required=True)


class ContentPartSchema(_Open):
    type = fields.String(required=True)
    text = fields.String()
    image_url = fields.Nested(ImageURLSchema)

    @validates_schema
    def _part_has_its_payload(self, data, **kwargs):
        kind = data.get("type")
        if kind == "text" and "text" not in data:
            raise ValidationError("Missing data for required field.", "text")
        if kind == "image_url" and "image_url" not in data:
            raise ValidationError("Missing data for required field.", "image_url")


class Content(fields.Field):
    """A string, a list of content parts, or null (checked against the role by the message)."""

    default_error_messages = {"invalid": "Must be a string, a list of content parts, or null."}
    _parts = fields.List(fields.Nested(ContentPartSchema))

    def _deserialize(self, value, attr, data, **kwargs):
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list):
            return self._parts.deserialize(value, attr, data, **kwargs)
        raise self.make_error("invalid")


class FunctionCallSchema(_Open):
    name = fields.String(required=True)
    arguments = fields.String(required=True)


class ToolCallSchema(_Open):
    id = fields.String(required=True)
    type = fields.String(required=True)
    function = fields.Nested(FunctionCallSchema, required=True)


class MessageSchema(_Open):
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    content = Content(allow_none=True)
    name = fields.String()
    tool_calls = fields.List(fields.Nested(ToolCallSchema))
    tool_call_id = fields.String()

    @validates_schema
    def _content_fits_role(self, data, **kwargs):
        role = data.get("role")
        if role == "tool" and "tool_call_id" not in data:
            raise ValidationError("Missing data for required field.", "tool_call_id")
        if data.get("content") is None and not (role == "assistant" and (data.get("tool_calls") or "function_call" in data)):
            raise ValidationError("Must be a string or a list of content parts (null only on an assistant turn with tool_calls).", "content")


class FunctionSchema(_Open):
    name = fields.String(required=True)


class ToolSchema(_Open):
    # The parameters' JSON schema is the backend's business: checking it deeply would cost
    # milliseconds per request on Open WebUI's 36 builtin tools for nothing we use.
    type = fields.String(required=True)
    function = fields.Nested(FunctionSchema)


class StreamOptionsSchema(_Open):
    include_usage = StrictBool()


class Stop(fields.Field):
    default_error_messages = {"invalid": "Must be a string, a list of strings, or null."}

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str) or (isinstance(value, list) and all(isinstance(s, str) for s in value)):
            return value
        raise self.make_error("invalid")


class ChatCompletionRequestSchema(_Open):
    model = fields.String(required=True, validate=validate.Length(min=1))
    messages = fields.List(fields.Nested(MessageSchema), required=True, validate=validate.Length(min=1))
    stream = StrictBool(allow_none=True)
    stream_options = fields.Nested(StreamOptionsSchema, allow_none=True)
    temperature = StrictNumber(allow_none=True)
    top_p = StrictNumber(allow_none=True)
    max_tokens = StrictNumber(integer=True, minimum=1, allow_none=True)
    max_completion_tokens = StrictNumber(integer=True, minimum=1, allow_none=True)
    n = StrictNumber(integer=True, minimum=1, allow_none=True)
    stop = Stop(allow_none=True)
    tools = fields.List(fields.Nested(ToolSchema), allow_none=True)
    user = fields.String(allow_none=True)


_schema = ChatCompletionRequestSchema()


def first_error(messages, path=()):
    """The first leaf of marshmallow's nested error map: (`messages.2.role`, "reason")."""
    while isinstance(messages, dict):
        key, messages = next(iter(messages.items()))
        if key != "_schema":
            path = (*path, str(key))
    if isinstance(messages, list) and messages and isinstance(messages[0], (dict, list)):
        return first_error(messages[0], path)
    reason = messages[0] if isinstance(messages, list) and messages else str(messages)
    return ".".join(path) or None, reason


def validate_chat_request(body) -> dict:
    """Returns the body unchanged if it is a valid Chat Completions request; else InvalidRequest."""
    if not isinstance(body, dict):
        raise InvalidRequest("Invalid request: the body must be a JSON object.")
    errors = _schema.validate(body)
    if errors:
        param, reason = first_error(errors)
        where = f"'{param}'" if param else "the body"
        raise InvalidRequest(f"Invalid request: {where}: {reason}", param=param)
    return body
