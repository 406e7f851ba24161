"""Reading the client's request body as JSON, with a clear 400 or 413 for anything else."""

import json

from flask import request

from ..errors import InvalidRequest


def read_json():
    raw = request.get_data(cache=False)  # over max_request_bytes: Werkzeug raises 413 here
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        reason = "it is not UTF-8" if isinstance(exc, UnicodeDecodeError) else "it is not valid JSON"
        if isinstance(exc, RecursionError):
            reason = "it is nested too deeply"
        raise InvalidRequest(f"Invalid request: the body could not be read as JSON: {reason}.") from None
