"""A backend's response head, read without the email parser.

http.client reads a response's header lines and hands them to `email.parser`, which builds the
`HTTPMessage` that urllib3 and requests read: ~28 µs of CPU for five plain headers, paid by every
backend call (each stream's start, each whole answer). Here, header lines of the plain kind
(`Name: value`, the name printable ASCII, no continuation line, no stray CR) are stored as the
email parser stores them (compat32: the value without its leading blanks and line end), at a
third of the cost (~8 µs). A head with any other line goes to the email parser, as before, with what
that brings (continuations joined, defects noted). The lines are read by http.client's own
`_read_headers`, with its limits on line length and count.

Installed by create_app; the Python releases it was checked against are listed (another keeps
http.client's own).
"""

import email.parser
import http.client
import re
import sys

PYTHON_RELEASES = ((3, 11),)  # whose http.client.parse_headers and email parser this was checked against

HTTP_CLIENTS_OWN = http.client.parse_headers  # what this stands in for (kept for comparison)
_PLAIN = re.compile(rb"([\x21-\x39\x3b-\x7e]+):[ \t]*([^\r\n]*?)\r?\n\Z")  # a name as the email parser reads one


def parse_headers(fp, _class=http.client.HTTPMessage):
    lines = http.client._read_headers(fp)
    if lines[-1] in (b"\r\n", b"\n"):
        message = _class()
        match = _PLAIN.match
        for line in lines[:-1]:
            plain = match(line)
            if plain is None:
                break
            name, value = plain.groups()
            message.set_raw(name.decode("iso-8859-1"), value.decode("iso-8859-1"))
        else:
            message.set_payload("")  # as the email parser leaves a head with no body
            return message
    return email.parser.Parser(_class=_class).parsestr(b"".join(lines).decode("iso-8859-1"))


def install() -> None:
    if sys.version_info[:2] in PYTHON_RELEASES and hasattr(http.client, "_read_headers"):
        http.client.parse_headers = parse_headers
