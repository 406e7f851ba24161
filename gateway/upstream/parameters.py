"""A model's pinned sampling parameters: `defaults` fill what the client left out, `overrides` always win.

The config checks both tables at start-up against the small schema below (known sampling fields,
the right types), so a typo such as `temprature` stops start-up instead of being sent to the
backend on every request. `apply` is called once per chat request, from `call.build_call`.
Imports only marshmallow: the gunicorn master loads this module through the config check.
"""

from marshmallow import RAISE, Schema, ValidationError, fields

from ..strict_fields import StrictBool, StrictNumber

# The request's own structure: the client (or the gateway) decides these, never a model's table.
NOT_PARAMETERS = ("model", "messages", "stream", "tools")
# `max_tokens` is the older name of `max_completion_tokens`: a client that sent either has set its
# limit, so a default for the other must not add a second, conflicting one.
_SAME_LIMIT = {"max_tokens": "max_completion_tokens", "max_completion_tokens": "max_tokens"}


class _Stop(fields.Field):
    default_error_messages = {"invalid": "Must be a string or a list of strings."}

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str) or (isinstance(value, list) and all(isinstance(s, str) for s in value)):
            return value
        raise self.make_error("invalid")


class _LogitBias(fields.Field):
    default_error_messages = {"invalid": "Must be a table of token ids to numbers."}

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, dict) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and str(k).lstrip("-").isdigit() for k, v in value.items()
        ):
            return value
        raise self.make_error("invalid")


class SamplingParameters(Schema):
    """The fields a `defaults` or `overrides` table may set, with OpenAI's types. `top_k`, `min_p` and
    `repetition_penalty` are the extensions of vLLM, llama.cpp and TGI, which in-house servers
    are usually built on."""

    class Meta:
        unknown = RAISE

    temperature = StrictNumber(minimum=0)
    top_p = StrictNumber(minimum=0)
    max_tokens = StrictNumber(integer=True, minimum=1)
    max_completion_tokens = StrictNumber(integer=True, minimum=1)
    n = StrictNumber(integer=True, minimum=1)
    seed = StrictNumber(integer=True)
    presence_penalty = StrictNumber()
    frequency_penalty = StrictNumber()
    stop = _Stop()
    reasoning_effort = fields.String()
    logit_bias = _LogitBias()
    logprobs = StrictBool()
    top_logprobs = StrictNumber(integer=True, minimum=0)
    parallel_tool_calls = StrictBool()
    top_k = StrictNumber(integer=True)
    min_p = StrictNumber(minimum=0)
    repetition_penalty = StrictNumber(minimum=0)


KNOWN = tuple(SamplingParameters._declared_fields)
_schema = SamplingParameters()


class ParameterTable(fields.Field):
    """A model's `defaults` or `overrides` table, for the config schema: errors name each bad key."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, dict):
            raise ValidationError("Must be a table, e.g. { temperature = 0.4 }.")
        forbidden = {key: [f"cannot be set per model: the client's request decides '{key}'"] for key in NOT_PARAMETERS if key in value}
        if forbidden:
            raise ValidationError(forbidden)
        errors = _schema.validate(value)
        if errors:
            known = ", ".join(KNOWN)
            raise ValidationError({key: [f"unknown sampling parameter (known: {known})"] if reasons == ["Unknown field."] else reasons
                                   for key, reasons in errors.items()})
        return dict(value)


def apply(body: dict, defaults: dict, overrides: dict) -> None:
    """Fills `defaults` where the body has no value (absent or null), then sets every override.
    `body` is the backend's own copy, never the client's dict."""
    for key, value in defaults.items():
        if body.get(key) is None and body.get(_SAME_LIMIT.get(key, "")) is None:
            body[key] = value
    for key, value in overrides.items():
        body[key] = value
        other = _SAME_LIMIT.get(key)
        if other and other not in overrides:
            body.pop(other, None)  # a pinned limit is the limit: not one of two


def describe(defaults: dict, overrides: dict) -> str:
    """One line for `make check` and the like: `defaults temperature=0.4; overrides top_p=0.9`."""
    parts = []
    for label, table in (("defaults", defaults), ("overrides", overrides)):
        if table:
            parts.append(f"{label} " + ", ".join(f"{k}={v!r}" for k, v in table.items()))
    return "; ".join(parts) or "no pinned parameters"
