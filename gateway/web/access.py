"""Who may call the API, and from which web origins: inbound API keys (anonymous `api_keys` and
named `[keys.NAME]`) and CORS.

Keys are compared in constant time, against every configured key, so neither the match nor its
position leaks through timing. The key that matched is kept as the request's `Caller` (`g.caller`):
a named key by its NAME (what logs, the ledger and pages show), an anonymous one by its place in
`api_keys`; never the key itself. CORS preflights are answered before authentication (browsers
send them without credentials), and the allow-origin header goes on every answer, errors
included: Open WebUI's "direct connections" call the gateway from the browser and could not
read an error without it.
"""

import dataclasses
import hmac

from flask import Flask, Response, current_app, g, request

from ..config import Config, KeyConfig
from ..errors import Unauthorized

CORS_ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"  # DELETE: /v1/responses/<id>
CORS_DEFAULT_HEADERS = "Authorization, Content-Type, X-Request-Id"
CORS_EXPOSED_HEADERS = "X-Request-Id, Retry-After"
CORS_MAX_AGE = "600"


@dataclasses.dataclass(frozen=True, slots=True)
class Caller:
    """Which inbound key a request came with: a named key (`named`), the `index`-th of `api_keys`,
    or none at all (no inbound auth configured)."""

    named: KeyConfig | None = None
    index: int | None = None

    @property
    def name(self) -> str | None:
        """The named key's NAME, else None: what the ledger's `key` column and the access log show."""
        return self.named.name if self.named is not None else None

    @property
    def label(self) -> str | None:
        """How a request without a user is known in the ledger (never the key): `key:NAME`, `api_keys[0]`."""
        if self.named is not None:
            return f"key:{self.named.name}"
        return f"api_keys[{self.index}]" if self.index is not None else None


NOBODY = Caller()


def matching(presented: bytes, keys) -> int | None:
    """The index of `presented` in `keys` (bytes), compared in constant time: no early exit, so
    every key costs the same whichever matches."""
    found = None
    for index, key in enumerate(keys):
        if hmac.compare_digest(presented, key) and found is None:
            found = index
    return found


def presented_key(authorization: str | None) -> bytes | None:
    """The key of an `Authorization: Bearer <key>` header, else None."""
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return presented.strip().encode("utf-8", errors="replace")


class KeyCheck:
    def __init__(self, api_keys, named_keys=()):
        """`api_keys`: anonymous keys (strings); `named_keys`: KeyConfigs ([keys.NAME])."""
        self._named = tuple(named_keys)
        self._callers = tuple(Caller(index=i) for i in range(len(api_keys))) + tuple(Caller(named=k) for k in self._named)
        self._keys = tuple(key.encode("utf-8") for key in api_keys) + tuple(k.key.encode("utf-8") for k in self._named)

    @property
    def configured(self) -> bool:
        """Whether any inbound key is configured (else the API is open)."""
        return bool(self._keys)

    def check(self, authorization: str | None) -> Caller:
        """The caller whose key the header presents; raises Unauthorized unless it is
        `Bearer <one of the keys>` (no keys configured: anyone, as `NOBODY`)."""
        if not self._keys:
            return NOBODY
        if not authorization:
            raise Unauthorized("Missing API key: send it as 'Authorization: Bearer <key>'.")
        presented = presented_key(authorization)
        index = matching(presented if presented is not None else b"", self._keys)
        if presented is None or index is None:
            raise Unauthorized("The API key is not valid for this gateway.")
        return self._callers[index]


class Cors:
    def __init__(self, origins):
        self._any = "*" in origins
        self._origins = frozenset(origins)

    def allow_origin(self, origin: str | None) -> str | None:
        """The Access-Control-Allow-Origin value for this request's Origin, or None."""
        if not origin:
            return None
        if self._any:
            return "*"
        return origin if origin in self._origins else None

    def decorate(self, response, origin: str | None) -> None:
        allowed = self.allow_origin(origin)
        if allowed:
            response.headers["Access-Control-Allow-Origin"] = allowed
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSED_HEADERS
            if allowed != "*":
                response.vary.add("Origin")

    def preflight_headers(self, requested_headers: str | None) -> dict:
        return {
            "Access-Control-Allow-Methods": CORS_ALLOWED_METHODS,
            "Access-Control-Allow-Headers": requested_headers or CORS_DEFAULT_HEADERS,
            "Access-Control-Max-Age": CORS_MAX_AGE,
        }


def init_app(app: Flask, config: Config) -> None:
    settings = config.gateway
    app.extensions["api_keys"] = KeyCheck(settings.api_keys, config.keys.values())
    cors = Cors(settings.cors_origins)

    @app.before_request
    def answer_preflight():
        if request.method == "OPTIONS":  # CORS preflight: browsers send it without credentials
            return Response(status=204, headers=cors.preflight_headers(request.headers.get("Access-Control-Request-Headers")))

    @app.after_request
    def allow_origin(response):
        cors.decorate(response, request.headers.get("Origin"))
        return response


def require_api_key() -> None:
    """For the API blueprint: 401 unless the request carries one of the configured keys; the key
    that matched is `g.caller` (and a named key's NAME the access log's `key`)."""
    caller = g.caller = current_app.extensions["api_keys"].check(request.headers.get("Authorization"))
    if caller.named is not None:
        g.record.key = caller.named.name


def caller() -> Caller:
    """Who this request came as (NOBODY before require_api_key ran)."""
    return g.get("caller", NOBODY)
