"""A backend's own words about a failure, from the body of its error answer: `backend_words`.

A JSON error's message (OpenAI's `error.message`, or a `message` or `detail` field); else its text,
as one line of at most PLAIN_TEXT_LIMIT characters: plain text as it is, an HTML error page (a
proxy's, a web framework's) by its visible text. A body that is no text at all gives nothing.
"""

import html.parser
import json
import re

PLAIN_TEXT_LIMIT = 300  # a backend's own non-JSON error text (maybe its stack trace): one short line
# An HTML page is read this far: enough for its title and first lines, and parsing 64 KiB on the
# worker's loop would hold its streams for tens of milliseconds (4 KiB: about 2 ms).
HTML_READ = 4096
_HTML_STARTS = ("<!doctype html", "<html", "<head", "<body", "<title")
_TERMINAL_CODES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # colours in a logged stack trace


def backend_words(content_type: str, raw: bytes) -> str:
    """What the error body says, or "" when it says nothing readable."""
    content_type = content_type.lower()
    if "json" in content_type:
        return _json_message(raw)
    if content_type and not content_type.startswith(("text/", "application/xhtml")):
        return ""  # a body of another kind (an image, bytes): nothing to read
    # Declared text is read whatever its bytes (a body cut inside a character, Latin-1); a body of
    # no declared type only when it is UTF-8.
    try:
        text = raw.decode("utf-8", errors="replace" if content_type else "strict")
    except UnicodeDecodeError:
        return ""
    if "html" in content_type or text.lstrip()[:14].lower().startswith(_HTML_STARTS):
        text = _visible_text(text[:HTML_READ])
    return _one_line(_TERMINAL_CODES.sub("", text))


def _one_line(text: str) -> str:
    """`text` as one line of at most PLAIN_TEXT_LIMIT characters, blanks collapsed; control
    characters (a terminal's colours) are never echoed into a message."""
    line = " ".join(text.split())
    if not line.isprintable():
        line = "".join(char for char in line if char.isprintable())
    return line if len(line) <= PLAIN_TEXT_LIMIT else line[: PLAIN_TEXT_LIMIT - 1] + "…"


def _json_message(raw: bytes) -> str:
    try:
        data = json.loads(raw)
    except ValueError:
        return ""
    if isinstance(data, dict):
        error = data.get("error")
        for candidate in (error.get("message") if isinstance(error, dict) else error, data.get("message"), data.get("detail")):
            if isinstance(candidate, str) and candidate:
                return candidate
        if isinstance(data.get("detail"), list):  # FastAPI's validation errors: [{"loc": [...], "msg": ...}]
            return _validation_errors(data["detail"])
    return ""


def _validation_errors(items: list) -> str:
    """FastAPI's (pydantic's) list of problems as one line: `body.stream_options: Extra inputs are
    not permitted; ...`."""
    said = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("msg"), str):
            where = ".".join(str(part) for part in item["loc"]) if isinstance(item.get("loc"), list) else ""
            said.append(f"{where}: {item['msg']}" if where else item["msg"])
    return _one_line("; ".join(said))


class _TextOf(html.parser.HTMLParser):
    """The text a browser would show: tags dropped, entities decoded, scripts and styles left out."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.pieces = []
        self._hidden = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._hidden += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self._hidden:
            self._hidden -= 1

    def handle_data(self, data):
        if not self._hidden:
            self.pieces.append(data)


def _visible_text(page: str) -> str:
    parser = _TextOf()
    try:
        parser.feed(page)
        parser.close()
    except Exception:  # noqa: BLE001 - a page the parser cannot read says nothing
        return ""
    return " ".join(parser.pieces)
