"""A model's pinned request fields: `defaults` fill what the client left out, `overrides` always win.

The config checks both tables at start-up: OpenAI's sampling fields (and vLLM's, llama.cpp's and
TGI's usual extensions) against the small schema below, with their types. Any other field is the
backend's own (`chat_template_kwargs`, `response_format`, `repeat_penalty`...) and is sent as it is,
unless its name looks like a misspelt known one: a typo such as `temprature` stops start-up
instead of being sent to the backend on every request. `apply` is called once per chat request,
from `call.build_call`. Imports only marshmallow: the gunicorn master loads this module through
the config check.
"""

import datetime
import difflib
import re

from marshmallow import RAISE, Schema, ValidationError, fields

from ..strict_fields import StrictBool, StrictNumber

# The request's own structure: the client (or the gateway) decides these, never a model's table.
NOT_PARAMETERS = ("model", "messages", "stream", "tools", "stream_options")
# How alike a field's name must be to a known one to be taken for its misspelling: `temprature`,
# `max_token`, `presense_penalty` are (0.9 and more); `top_a`, `repeat_penalty`, backends' own
# samplers, are not (0.8).
MISSPELT_AT = 0.85
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
        errors = _schema.validate({key: item for key, item in value.items() if key in KNOWN})
        for key in value.keys() - set(KNOWN):
            alike = misspelt(key)
            if alike:
                errors[key] = [f"unknown sampling parameter: did you mean '{alike[0]}'? (a field of the backend's own with a name "
                               f"unlike the known ones is sent as it is; known: {', '.join(KNOWN)})"]
            elif _has_time(value[key]):
                errors[key] = ["must hold values JSON can carry: a date or time cannot be sent to the backend"]
        if errors:
            raise ValidationError(errors)
        return dict(value)


def misspelt(name: str) -> list:
    """The known field `name` looks like a misspelling of ([] if none): compared in snake_case
    (`topP`, `Top-P` and `top_P` are `top_p`), then by similarity."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).replace("-", "_").replace(" ", "_").lower()
    if snake in KNOWN:
        return [snake]
    return difflib.get_close_matches(snake, KNOWN, n=1, cutoff=MISSPELT_AT)


def _has_time(value) -> bool:
    """Whether a TOML value holds a date or time anywhere (JSON has none)."""
    if isinstance(value, (datetime.date, datetime.time)):
        return True
    if isinstance(value, dict):
        return any(_has_time(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_time(item) for item in value)
    return False


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
