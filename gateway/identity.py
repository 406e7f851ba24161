"""Who is asking: the per-request template values that come from the client.

Open WebUI, with ENABLE_FORWARD_USER_INFO_HEADERS=true, sends the user as X-OpenWebUI-User-*
headers (the name URL-encoded) and the chat as X-OpenWebUI-Chat-Id. Without them, the body's
`user` string is the user's id. These headers are only as trustworthy as the network path to the
gateway; the signed variant (X-OpenWebUI-User-Jwt) is the way to trust them across a network.
"""

from urllib.parse import unquote

_FORWARDED = (
    ("user.id", "X-OpenWebUI-User-Id"),
    ("user.email", "X-OpenWebUI-User-Email"),
    ("user.role", "X-OpenWebUI-User-Role"),
    ("chat_id", "X-OpenWebUI-Chat-Id"),
)


def _header_text(value: str) -> str:
    """WSGI hands header bytes over as latin-1; a client that sent raw UTF-8 meant UTF-8."""
    if value.isascii():
        return value
    return value.encode("latin-1", errors="replace").decode("utf-8", errors="replace")


def client_values(headers, body: dict) -> dict:
    """Template values from Open WebUI's forwarded headers, else from the body's `user`."""
    values = {}
    for key, header in _FORWARDED:
        value = headers.get(header)
        if value:
            values[key] = _header_text(value)
    name = headers.get("X-OpenWebUI-User-Name")
    if name:
        values["user.name"] = unquote(_header_text(name), errors="replace")
    if "user.id" not in values and isinstance(body.get("user"), str) and body["user"]:
        values["user.id"] = body["user"]
    return values
