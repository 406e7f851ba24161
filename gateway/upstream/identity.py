"""Who is asking: the per-request template values that come from the client.

Open WebUI, with ENABLE_FORWARD_USER_INFO_HEADERS=true, sends the user as X-OpenWebUI-User-*
headers (the name URL-encoded) and the chat as X-OpenWebUI-Chat-Id. Without them, the body's
`user` string is the user's id. Plain headers are only as trustworthy as the network path to the
gateway; with `user_jwt_secret` configured, the user comes only from a verified
X-OpenWebUI-User-Jwt (HS256), and the plain headers are ignored.
"""

from urllib.parse import unquote

import jwt

from ..errors import Unauthorized

_FORWARDED = (
    ("user.id", "X-OpenWebUI-User-Id"),
    ("user.email", "X-OpenWebUI-User-Email"),
    ("user.role", "X-OpenWebUI-User-Role"),
)
_JWT_HEADER = "X-OpenWebUI-User-Jwt"
_JWT_CLAIMS = (("user.id", "sub"), ("user.email", "email"), ("user.name", "name"), ("user.role", "role"))


def _header_text(value: str) -> str:
    """WSGI hands header bytes over as latin-1; a client that sent raw UTF-8 meant UTF-8."""
    if value.isascii():
        return value
    return value.encode("latin-1", errors="replace").decode("utf-8", errors="replace")


def _plain_user(headers, body: dict) -> dict:
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


def _signed_user(headers, secret: str, leeway: float) -> dict:
    """The user from a verified token; none without a token (a plain API client); 401 for a bad one."""
    token = headers.get(_JWT_HEADER)
    if not token:
        return {}
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp"]}, leeway=leeway)
    except jwt.ExpiredSignatureError:
        raise Unauthorized(f"The {_JWT_HEADER} token has expired.", code="invalid_user_token") from None
    except jwt.InvalidTokenError:
        raise Unauthorized(f"The {_JWT_HEADER} token is not valid (bad signature or malformed).", code="invalid_user_token") from None
    return {key: str(claims[claim]) for key, claim in _JWT_CLAIMS if isinstance(claims.get(claim), (str, int)) and claims[claim] != ""}


def who_is_asking(headers, body: dict, jwt_secret: str | None = None, jwt_leeway: float = 30.0) -> dict:
    """Template values that come from the client: the user (signed or plain) and the chat id."""
    values = _signed_user(headers, jwt_secret, jwt_leeway) if jwt_secret else _plain_user(headers, body)
    chat_id = headers.get("X-OpenWebUI-Chat-Id")
    if chat_id:
        values["chat_id"] = _header_text(chat_id)
    return values
