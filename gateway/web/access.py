"""Who may call the API, and from which web origins: inbound API keys and CORS.

Keys are compared in constant time, against every configured key, so neither the match nor its
position leaks through timing. CORS preflights are answered before authentication (browsers
send them without credentials), and the allow-origin header goes on every answer, errors
included: Open WebUI's "direct connections" call the gateway from the browser and could not
read an error without it.
"""

import hmac

from flask import Flask, Response, current_app, request

from ..config import GatewaySettings
from ..errors import Unauthorized

CORS_ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"  # DELETE: /v1/responses/<id>
CORS_DEFAULT_HEADERS = "Authorization, Content-Type, X-Request-Id"
CORS_EXPOSED_HEADERS = "X-Request-Id, Retry-After"
CORS_MAX_AGE = "600"


class KeyCheck:
    def __init__(self, api_keys):
        self._keys = tuple(key.encode("utf-8") for key in api_keys)

    def check(self, authorization: str | None) -> None:
        """Raises Unauthorized unless the header is `Bearer <one of the keys>`."""
        if not self._keys:
            return
        if not authorization:
            raise Unauthorized("Missing API key: send it as 'Authorization: Bearer <key>'.")
        scheme, _, presented = authorization.partition(" ")
        presented = presented.strip().encode("utf-8", errors="replace")
        matched = False
        for key in self._keys:  # no early exit: every key costs the same
            matched |= hmac.compare_digest(presented, key)
        if scheme.lower() != "bearer" or not matched:
            raise Unauthorized("The API key is not valid for this gateway.")


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


def init_app(app: Flask, settings: GatewaySettings) -> None:
    app.extensions["api_keys"] = KeyCheck(settings.api_keys)
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
    """For the API blueprint: 401 unless the request carries one of the configured keys."""
    current_app.extensions["api_keys"].check(request.headers.get("Authorization"))
