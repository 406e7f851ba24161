"""Reading the client's request body as JSON: within `body_timeout`, at most `max_request_bytes`,
strict JSON, and never stalling the worker's other requests.

The body is read from the server's input stream ourselves rather than through Werkzeug, because
Werkzeug's size limit acts only on Content-Length (a chunked body would be cut at the limit and
read as if it were whole) and bad chunked framing surfaces as the server's own exceptions.
"""

from flask import request

from .. import jsonio

from ..config import GatewaySettings
from ..errors import BodyTimeout, InvalidRequest, RequestTooLarge, UnreadableBody
from ..concurrency import deadline, run_if_large

try:  # gunicorn's parser raises these while the app reads a chunked body
    from gunicorn.http.errors import NoMoreData, ParseException
except ImportError:  # another WSGI server
    ParseException = NoMoreData = ValueError

_READ_SIZE = 65536
_FRAMING_ERRORS = (ParseException, NoMoreData, ValueError)


def read_body(settings: GatewaySettings) -> bytes:
    """The request's whole body, or an error saying what is wrong with it (400, 408, 413)."""
    limit = settings.max_request_bytes
    length = request.content_length
    if length is not None and length > limit:
        raise _too_large(limit)
    stream = request.environ["wsgi.input"]
    wanted = length if length is not None else limit + 1  # one byte past the limit tells "too large"
    pieces, received = [], 0
    try:
        with deadline(settings.body_timeout, BodyTimeout(
            f"Invalid request: the body did not arrive within {settings.body_timeout:g} s (body_timeout)."
        )):
            while received < wanted:
                piece = stream.read(min(_READ_SIZE, wanted - received))
                if not piece:
                    break
                pieces.append(piece)
                received += len(piece)
    except _FRAMING_ERRORS:
        raise UnreadableBody("Invalid request: the body's chunked framing is malformed.") from None
    if received > limit:
        raise _too_large(limit)
    if length is not None and received < length:
        raise UnreadableBody(f"Invalid request: the body ended after {received} of its {length} bytes (Content-Length).")
    return b"".join(pieces)


def read_request(record, settings: GatewaySettings, endpoint: str, validate) -> tuple:
    """(raw, body) of a counted API call to `endpoint`: the body read, parsed as strict JSON and
    checked by `validate` (off the event loop when it is large, see run_if_large)."""
    record.counted = True  # in the metrics; the `endpoint` label tells the calls apart
    record.endpoint = endpoint
    raw = read_body(settings)
    return raw, run_if_large(len(raw), _validated, raw, validate)


def _validated(raw: bytes, validate) -> dict:
    return validate(parse_json(raw))


def _too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(f"Invalid request: the body is larger than this gateway accepts ({limit} bytes, max_request_bytes).")


def _not_a_number(text):
    raise ValueError(f"{text} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is out of range for a number")
    return value


def parse_json(raw: bytes):
    """Strict JSON: the parsed body, or a 400 saying why not."""
    try:
        # NaN, Infinity and numbers that overflow to infinity are not JSON: a backend would get
        # a body it cannot parse.
        return jsonio.loads(raw, parse_constant=_not_a_number, parse_float=_finite)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, UnicodeDecodeError):
            reason = "it is not UTF-8"
        elif isinstance(exc, RecursionError):
            reason = "it is nested too deeply"
        elif "JSON number" in str(exc) or "out of range" in str(exc):
            reason = str(exc)
        else:
            reason = "it is not valid JSON"
        raise InvalidRequest(f"Invalid request: the body could not be read as JSON: {reason}.") from None
