"""Who is asking: the per-request template values that come from the client.

Open WebUI, with ENABLE_FORWARD_USER_INFO_HEADERS=true, sends the user as X-OpenWebUI-User-*
headers (the name URL-encoded) and the chat as X-OpenWebUI-Chat-Id. Without them, the body's
`user` string is the user's id. Plain headers are only as trustworthy as the network path to the
gateway; with `user_jwt_secret` configured, the user comes only from a verified
X-OpenWebUI-User-Jwt (HS256), and the plain headers are ignored.
"""

from urllib.parse import unquote

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


class Asker(dict):
    """The template values of who is asking, and where each came from (`sources`: placeholder ->
    the request header or body field), so a 400 about one of them can name it as its `param`."""

    __slots__ = ("sources",)

    def __init__(self):
        super().__init__()
        self.sources = {}

    def put(self, key: str, value: str, source: str) -> None:
        self[key] = value
        self.sources[key] = source


def _plain_user(headers, body: dict) -> Asker:
    values = Asker()
    for key, header in _FORWARDED:
        value = headers.get(header)
        if value:
            values.put(key, _header_text(value), header)
    name = headers.get("X-OpenWebUI-User-Name")
    if name:
        values.put("user.name", unquote(_header_text(name), errors="replace"), "X-OpenWebUI-User-Name")
    if "user.id" not in values and isinstance(body.get("user"), str) and body["user"]:
        values.put("user.id", body["user"], "user")
    return values


def _signed_user(headers, secret: str, leeway: float) -> Asker:
    """The user from a verified token; none without a token (a plain API client); 401 for a bad one."""
    values = Asker()
    token = headers.get(_JWT_HEADER)
    if not token:
        return values
    import jwt  # imported by the gateways that verify tokens (app.py, at boot), not by every worker

    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp"]}, leeway=leeway)
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"The {_JWT_HEADER} token {_what_is_wrong(exc)}.", code="invalid_user_token") from None
    for key, claim in _JWT_CLAIMS:
        if isinstance(claims.get(claim), (str, int)) and claims[claim] != "":
            values.put(key, str(claims[claim]), _JWT_HEADER)
    return values


def _what_is_wrong(error) -> str:
    """What is wrong with a token (a jwt.InvalidTokenError), in words a user or an operator can act on."""
    import jwt

    if isinstance(error, jwt.ExpiredSignatureError):
        return "has expired"
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"has no `{error.claim}` claim: only tokens that expire are accepted"
    if isinstance(error, jwt.InvalidSignatureError):
        return "is not signed with this gateway's user_jwt_secret"
    if isinstance(error, jwt.ImmatureSignatureError):
        return "is not valid yet (nbf or iat in the future)"
    if isinstance(error, jwt.InvalidAlgorithmError):
        return "is not signed with HS256"
    if isinstance(error, jwt.DecodeError):
        return "is malformed (not a JWT)"
    return f"is not valid ({error})"


def load_verifier() -> None:
    """Imports PyJWT now, at a worker's boot, where tokens are verified: not on the first signed request."""
    import jwt  # noqa: F401


def who_is_asking(headers, body: dict, jwt_secret: str | None = None, jwt_leeway: float = 30.0) -> Asker:
    """Template values that come from the client: the user (signed or plain) and the chat id."""
    values = _signed_user(headers, jwt_secret, jwt_leeway) if jwt_secret else _plain_user(headers, body)
    chat_id = headers.get("X-OpenWebUI-Chat-Id")
    if chat_id:
        values.put("chat_id", _header_text(chat_id), "X-OpenWebUI-Chat-Id")
    return values
