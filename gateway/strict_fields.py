"""Strict marshmallow fields: the API and the config take JSON/TOML types as they are.

marshmallow's own Boolean takes "yes" and its Float takes "0.5"; an OpenAI-compatible API
rejects those, and so do we (a client sending `"stream": "false"` would otherwise stream).
"""

from marshmallow import fields


class StrictBool(fields.Field):
    default_error_messages = {"invalid": "Must be true or false."}

    def _deserialize(self, value, attr, data, **kwargs):
        if value is True or value is False:
            return value
        raise self.make_error("invalid")


class StrictNumber(fields.Field):
    """An int or a float, never a bool or a numeric string; `minimum` is inclusive unless `exclusive`."""

    default_error_messages = {
        "invalid": "Must be a number.",
        "too_small": "Must be {op} {minimum}.",
    }

    def __init__(self, *, minimum=None, exclusive=False, integer=False, **kwargs):
        super().__init__(**kwargs)
        self.minimum = minimum
        self.exclusive = exclusive
        self.integer = integer
        if integer:
            self.error_messages["invalid"] = "Must be an integer."

    def _deserialize(self, value, attr, data, **kwargs):
        kinds = int if self.integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or value != value:
            raise self.make_error("invalid")
        if self.minimum is not None:
            if value < self.minimum or (self.exclusive and value == self.minimum):
                op = "greater than" if self.exclusive else "at least"
                raise self.make_error("too_small", op=op, minimum=self.minimum)
        return value
