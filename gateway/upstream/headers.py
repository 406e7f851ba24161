"""Per-request header templates: `{uuid}`, `{user.email|anonymous}`, `{{` for a literal brace.

Templates are compiled once when the config is loaded; rendering one is a walk over a short list.
Literal and `${VAR}` parts are sent exactly as configured (they must be printable ASCII, checked
at start-up): a ticket is never altered. Only the values filled in per request are made safe for
an HTTP header: HTTP carries ASCII, so a value holding anything else (non-ASCII names, CR/LF) is
sent percent-encoded as UTF-8, the way Open WebUI sends `X-OpenWebUI-User-Name`. That also makes
header injection impossible. Imports nothing of Flask or requests (the gunicorn master validates
configs with it).
"""

import re
import uuid
from urllib.parse import quote

PLACEHOLDERS = frozenset(
    {"uuid", "request_id", "model", "user.id", "user.email", "user.name", "user.role", "chat_id"}
)

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}|]*)(?:\|([^{}]*))?\}|[{}]")
# Printable ASCII stays as it is, except '%' itself once a value needs encoding (so it decodes back).
_SAFE_WHEN_ENCODING = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


MAX_HEADER_BYTES = 1024  # a filled-in header longer than this is the client's doing: 400


class TemplateError(ValueError):
    """The template text is not valid; the message says why."""


class HeaderTooLong(ValueError):
    """A per-request value would make a backend header longer than MAX_HEADER_BYTES."""

    def __init__(self, header: str, placeholders: tuple):
        self.header = header
        self.placeholders = placeholders
        names = ", ".join("{" + p + "}" for p in placeholders)
        super().__init__(f"the value of {names} would make the backend header {header!r} longer than {MAX_HEADER_BYTES} bytes")


class HeaderTemplate:
    """One header value template, compiled: a tuple of literal strings and (name, fallback) pairs."""

    __slots__ = ("parts", "constant", "placeholders")

    def __init__(self, text: str):
        parts = []
        literal = []
        position = 0
        for match in _TOKEN.finditer(text):
            literal.append(text[position : match.start()])
            position = match.end()
            token = match.group(0)
            if token in ("{{", "}}"):
                literal.append(token[0])
                continue
            if token in ("{", "}"):
                raise TemplateError(f"unbalanced '{token}' (write '{token * 2}' for a literal brace)")
            name = match.group(1).strip()
            if name not in PLACEHOLDERS:
                known = ", ".join("{" + p + "}" for p in sorted(PLACEHOLDERS))
                raise TemplateError(f"unknown placeholder {{{name}}}; known: {known}")
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append((name, match.group(2) or ""))
        literal.append(text[position:])
        if "".join(literal):
            parts.append("".join(literal))
        for part in parts:
            if isinstance(part, str) and not (part.isascii() and part.isprintable()):
                raise TemplateError("literal and ${VAR} parts must be printable ASCII: they are sent exactly as configured")
        self.parts = tuple(parts)
        self.constant = all(isinstance(p, str) for p in parts)
        self.placeholders = tuple(p[0] for p in parts if not isinstance(p, str))

    def render(self, values: dict) -> str:
        out = []
        for part in self.parts:
            if part.__class__ is str:
                out.append(part)
                continue
            name, fallback = part
            if name == "uuid":
                out.append(str(uuid.uuid4()))
            else:
                out.append(header_safe(values.get(name) or fallback))
        return "".join(out).strip(_BLANKS)


# Spaces and tabs at a header value's ends are not part of it in HTTP: trimmed. Anything else
# (CR, LF, U+2028, other control characters) is the value's own: encoded, never dropped.
_BLANKS = " \t"


def header_safe(value: str) -> str:
    """The value as it can travel in an HTTP header: spaces and tabs at its ends trimmed, and
    percent-encoded if it must be (then a leading or trailing CR/LF is kept, as %0D%0A)."""
    value = value.strip(_BLANKS)
    if value.isascii() and value.isprintable():
        return value
    return quote(value, safe=_SAFE_WHEN_ENCODING, encoding="utf-8", errors="surrogatepass").strip(_BLANKS)


def is_header_name(name: str) -> bool:
    return bool(_HEADER_NAME.match(name))


class HeaderSet:
    """A backend's header templates; `render` gives the headers for one request."""

    __slots__ = ("_constant", "_templates")

    def __init__(self, templates: dict):
        constant, dynamic = {}, []
        for name, text in templates.items():
            if not is_header_name(name):
                raise TemplateError(f"{name!r} is not a valid HTTP header name")
            template = HeaderTemplate(text)
            if template.constant:
                value = template.render({})
                if value:
                    constant[name] = value
            else:
                dynamic.append((name, template))
        self._constant = constant
        self._templates = tuple(dynamic)

    def render(self, values: dict) -> dict:
        headers = dict(self._constant)
        for name, template in self._templates:
            value = template.render(values)
            if len(value) > MAX_HEADER_BYTES:
                raise HeaderTooLong(name, template.placeholders)
            if value:  # a header that renders empty is not sent
                headers[name] = value
        return headers
