"""The Chat Completions request, as marshmallow schemas.

Accepts everything Open WebUI and the openai SDK send: content as a string, a list of parts, or
null on an assistant turn with `tool_calls`; roles system, developer, user, assistant, tool;
unknown fields kept (on every level: `unknown = INCLUDE` is per schema, so the shared base sets it).
Rejects what is malformed, with the error's path (`messages.2.role`) as OpenAI's `param`.
Validation only: the body forwarded is the client's own dict, so no value is coerced on the way.
"""

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate

from ..errors import InvalidRequest
from ..strict_fields import StrictBool, StrictNumber

ROLES = ("system", "developer", "user", "assistant", "tool")


class _Open(Schema):
    class Meta:
        unknown = INCLUDE


# Messages, their content parts and tool calls, and tool definitions are checked by small custom
# fields rather than nested schemas: a request carries many of them (Open WebUI sends 36 tool
# definitions with every chat), and a nested marshmallow schema costs about 13 us each, measured,
# which made validation a tenth of a worker's time per request. Errors keep marshmallow's shape,
# so the path (`messages.2.content.0.text`) still becomes the client's `param`.

REQUIRED = "Missing data for required field."
NOT_STRING = "Not a valid string."
NOT_OBJECT = "Must be an object."


def _strings(obj: dict, required=(), optional=()) -> dict:
    """Errors for keys of `obj` that must be strings (present, for `required`)."""
    errors = {}
    for key in required:
        if key not in obj:
            errors[key] = [REQUIRED]
        elif not isinstance(obj[key], str):
            errors[key] = [NOT_STRING]
    for key in optional:
        if key in obj and not isinstance(obj[key], str):
            errors[key] = [NOT_STRING]
    return errors


def _part_errors(part) -> dict | list:
    if not isinstance(part, dict):
        return [NOT_OBJECT]
    kind = part.get("type")
    errors = _strings(part, required=("type",))
    if kind == "text":
        errors.update(_strings(part, required=("text",)))
    elif kind == "image_url":
        image = part.get("image_url")
        if not isinstance(image, dict):
            errors["image_url"] = [REQUIRED if image is None else NOT_OBJECT]
        else:
            url_errors = _strings(image, required=("url",))
            if url_errors:
                errors["image_url"] = url_errors
    return errors


def _tool_call_errors(call) -> dict | list:
    if not isinstance(call, dict):
        return [NOT_OBJECT]
    errors = _strings(call, required=("id", "type"))
    function = call.get("function")
    if not isinstance(function, dict):
        errors["function"] = [REQUIRED if function is None else NOT_OBJECT]
    else:
        function_errors = _strings(function, required=("name", "arguments"))
        if function_errors:
            errors["function"] = function_errors
    return errors


def _indexed(items, check) -> dict:
    """The first bad item only: a hostile body may hold millions, and one error says enough."""
    for index, item in enumerate(items):
        if problem := check(item):
            return {index: problem}
    return {}


class FirstErrorList(fields.List):
    """A list that stops at its first bad item: marshmallow's own List builds an error for every
    item, which for a 10 MB body of bad items takes tens of seconds."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, list):
            raise self.make_error("invalid")
        inner = self.inner
        for index, item in enumerate(value):
            try:
                inner._deserialize(item, attr, data, **kwargs)  # our own fields: no validators to run
            except ValidationError as error:
                raise ValidationError({index: error.messages}) from None
        return value


class Message(fields.Field):
    """One chat message: a role; content as a string, a list of parts, or null on an assistant turn
    with tool_calls; tool_calls and tool_call_id when present. Unknown keys are kept."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, dict):
            raise ValidationError(NOT_OBJECT)
        role = value.get("role")
        errors = _strings(value, optional=("name", "tool_call_id"))
        if "role" not in value:
            errors["role"] = [REQUIRED]
        elif role not in ROLES:
            errors["role"] = [f"Must be one of: {', '.join(ROLES)}."]
        tool_calls = value.get("tool_calls")
        if tool_calls is not None:
            if not isinstance(tool_calls, list):
                errors["tool_calls"] = ["Not a valid list."]
            elif problems := _indexed(tool_calls, _tool_call_errors):
                errors["tool_calls"] = problems
        content = value.get("content")
        if isinstance(content, list):
            if problems := _indexed(content, _part_errors):
                errors["content"] = problems
        elif content is None:
            if not (role == "assistant" and (tool_calls or "function_call" in value)):
                errors["content"] = ["Must be a string or a list of content parts (null only on an assistant turn with tool_calls)."]
        elif not isinstance(content, str):
            errors["content"] = ["Must be a string, a list of content parts, or null."]
        if role == "tool" and "tool_call_id" not in value:
            errors["tool_call_id"] = [REQUIRED]
        if errors:
            raise ValidationError(errors)
        return value


class ToolDefinition(fields.Field):
    """A tool: its `type`, and a `function` with a `name`. Its JSON schema is the backend's business."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, dict):
            raise ValidationError(NOT_OBJECT)
        errors = _strings(value, required=("type",))
        function = value.get("function")
        if function is not None:
            if not isinstance(function, dict):
                errors["function"] = [NOT_OBJECT]
            elif function_errors := _strings(function, required=("name",)):
                errors["function"] = function_errors
        if errors:
            raise ValidationError(errors)
        return value


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
    messages = FirstErrorList(Message(), required=True, validate=validate.Length(min=1))
    stream = StrictBool(allow_none=True)
    stream_options = fields.Nested(StreamOptionsSchema, allow_none=True)
    temperature = StrictNumber(allow_none=True)
    top_p = StrictNumber(allow_none=True)
    max_tokens = StrictNumber(integer=True, minimum=1, allow_none=True)
    max_completion_tokens = StrictNumber(integer=True, minimum=1, allow_none=True)
    n = StrictNumber(integer=True, minimum=1, allow_none=True)
    stop = Stop(allow_none=True)
    tools = FirstErrorList(ToolDefinition(), allow_none=True)
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


def validated(schema: Schema, body) -> dict:
    """Returns the body unchanged if `schema` accepts it; else InvalidRequest naming the first
    bad field as OpenAI's `param`. (The embeddings schema uses it too.)"""
    if not isinstance(body, dict):
        raise InvalidRequest("Invalid request: the body must be a JSON object.")
    errors = schema.validate(body)
    if errors:
        param, reason = first_error(errors)
        where = f"'{param}'" if param else "the body"
        raise InvalidRequest(f"Invalid request: {where}: {reason}", param=param)
    return body


def validate_chat_request(body) -> dict:
    """Returns the body unchanged if it is a valid Chat Completions request; else InvalidRequest."""
    return validated(_schema, body)
