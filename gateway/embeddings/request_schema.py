"""The Embeddings request (`POST /v1/embeddings`), as a marshmallow schema.

`input` is what OpenAI accepts: a string, a list of strings, a list of token ids, or a list of
lists of token ids, never empty. `encoding_format`, `dimensions` and `user` are checked for their
type and passed on; unknown fields pass too (Open WebUI may add a prefix field for some models).
Errors name the field (`input.3`) as OpenAI's `param`, as for chat.
"""

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate

from ..chat.request_schema import validated

from ..strict_fields import StrictNumber

_INPUT_SHAPES = "a string, a list of strings, a list of token ids, or a list of lists of token ids"


def _is_token(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class EmbeddingsInput(fields.Field):
    """One of the four shapes, checked up to the first bad item (a list may hold thousands)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            if not value:
                raise ValidationError("Must not be an empty string.")
            return value
        if not isinstance(value, list):
            raise ValidationError(f"Must be {_INPUT_SHAPES}.")
        if not value:
            raise ValidationError("Must not be an empty list.")
        first = value[0]
        if isinstance(first, str):
            check, what = (lambda item: isinstance(item, str) and item), "a non-empty string, like the first item"
        elif _is_token(first):
            check, what = _is_token, "a token id (an integer of at least 0), like the first item"
        elif isinstance(first, list):
            check, what = (lambda item: isinstance(item, list) and item and all(_is_token(t) for t in item)), \
                "a non-empty list of token ids, like the first item"
        else:
            raise ValidationError({0: [f"Must be a string, a token id or a list of token ids ({_INPUT_SHAPES})."]})
        for index, item in enumerate(value):
            if not check(item):
                raise ValidationError({index: [f"Must be {what}."]})
        return value


class EmbeddingsRequestSchema(Schema):
    class Meta:
        unknown = INCLUDE

    model = fields.String(required=True, validate=validate.Length(min=1))
    input = EmbeddingsInput(required=True)
    encoding_format = fields.String(validate=validate.OneOf(["float", "base64"]), allow_none=True)
    dimensions = StrictNumber(integer=True, minimum=1, allow_none=True)
    user = fields.String(allow_none=True)


_schema = EmbeddingsRequestSchema()


def validate_embeddings_request(body) -> dict:
    """Returns the body unchanged if it is a valid Embeddings request; else InvalidRequest."""
    return validated(_schema, body)
