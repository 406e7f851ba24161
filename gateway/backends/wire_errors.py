"""Everything that can go wrong on the wire to a backend, as the gateway's `BackendError`s.

Translated here, once, by type: requests wraps urllib3's exceptions, which wrap the socket's, so
the whole chain is searched for the type that says what happened. Text is read only where the
stack gives no type: gevent raises its TLS timeouts as plain `ssl.SSLError`s, and OpenSSL's
verification failures differ only in their reason text.
"""

import http.client
import json
import socket
import ssl
from urllib.parse import urlsplit

import requests
import urllib3

from .. import errors
from ..config import BackendConfig
from .error_text import backend_words

# What sending a request or reading a body can raise: requests wraps only what goes through its
# own methods, and the relay reads the raw urllib3 response for speed.
WIRE_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)
ERROR_BODY_LIMIT = 65536  # enough for any error message; a huge error page is not read whole
# gevent's TLS timeouts: SSLError instances with these texts, not socket timeouts.
_GEVENT_TLS_HANDSHAKE_TIMEOUT = "The handshake operation timed out"
_GEVENT_TLS_READ_TIMEOUTS = ("The read operation timed out", "The write operation timed out")
_DROPPED = (
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.ProtocolError,
    http.client.IncompleteRead,
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
)


def _chain(exc: BaseException) -> list:
    """`exc` and every exception it wraps, outermost first."""
    found, pending = [], [exc]
    while pending:
        current = pending.pop(0)
        if current is None or any(current is seen for seen in found):
            continue
        found.append(current)
        pending.extend(arg for arg in current.args if isinstance(arg, BaseException))
        reason = getattr(current, "reason", None)  # urllib3's MaxRetryError
        pending.extend((reason if isinstance(reason, BaseException) else None, current.__cause__, current.__context__))
    return found


def _ssl_text(chain) -> str:
    return " ".join(str(e) for e in chain if isinstance(e, (ssl.SSLError, ssl.CertificateError, urllib3.exceptions.SSLError, requests.exceptions.SSLError)))


def read_timeout_error(backend: BackendConfig) -> errors.BackendTimeout:
    return errors.BackendTimeout(backend.name, f"sent nothing for {backend.read_timeout:g} s (read_timeout)")


def translate(exc: BaseException, backend: BackendConfig) -> errors.BackendError:
    """The gateway's error for a failure while calling or reading `backend`."""
    name = backend.name
    chain = _chain(exc)

    def has(*types) -> bool:
        return any(isinstance(e, types) for e in chain)

    texts = {e.args[0] for e in chain if isinstance(e, ssl.SSLError) and e.args and isinstance(e.args[0], str)}
    if isinstance(exc, requests.ConnectTimeout):  # requests raises it only for the TCP connect
        return errors.BackendTimeout(name, f"did not accept a connection within {backend.connect_timeout:g} s (connect_timeout)")
    if _GEVENT_TLS_HANDSHAKE_TIMEOUT in texts or any(_GEVENT_TLS_HANDSHAKE_TIMEOUT in str(e) for e in chain if isinstance(e, TimeoutError)):
        return errors.BackendTimeout(name, f"did not complete the TLS handshake within {backend.connect_timeout:g} s (connect_timeout)")
    if has(requests.ReadTimeout, urllib3.exceptions.ReadTimeoutError, TimeoutError) or texts & set(_GEVENT_TLS_READ_TIMEOUTS):
        return read_timeout_error(backend)
    if has(requests.exceptions.ProxyError, urllib3.exceptions.ProxyError):
        return errors.BackendUnreachable(name, "could not be reached through its proxy")
    if has(ssl.SSLError, ssl.CertificateError, urllib3.exceptions.SSLError, requests.exceptions.SSLError):
        return errors.BackendTLSError(name, _tls_reason(_ssl_text(chain), bool(backend.client_cert)))
    if has(ConnectionRefusedError):
        return errors.BackendUnreachable(name, f"refused the connection at {backend.location}")
    if has(socket.gaierror, urllib3.exceptions.NameResolutionError):
        return errors.BackendUnreachable(name, f"could not be found: the host of {backend.location} does not resolve")
    if has(urllib3.exceptions.NewConnectionError):
        return errors.BackendUnreachable(name, f"could not be reached at {backend.location}")
    if has(*_DROPPED):
        return errors.BackendDropped(name, "closed the connection before its answer was complete")
    if has(requests.ConnectionError, OSError):
        return errors.BackendUnreachable(name, f"could not be reached at {backend.location}")
    return errors.BackendUnreachable(name, f"could not be called ({type(exc).__name__})")


def status_error(response: requests.Response, name: str) -> errors.BackendError:
    """The gateway's error for a backend that answered with a non-2xx status."""
    status = response.status_code
    if 300 <= status < 400:
        target = urlsplit(response.headers.get("Location", ""))
        where = target.netloc.rsplit("@", 1)[-1] or "another path"
        return errors.BackendRedirected(
            name, f"answered with a redirect (HTTP {status}) to {where}; the gateway does not follow redirects, so secret headers stay with the configured host"
        )
    message = _error_message(response)
    detail = f": {message}" if message else ""
    if status in (401, 403):
        return errors.BackendAuthRejected(name, f"rejected the gateway's credentials (HTTP {status}); check the backend's headers in the config{detail}")
    if status == 429:
        retry_after = response.headers.get("Retry-After")
        return errors.BackendRateLimited(name, f"is rate limiting requests (HTTP 429){detail}", headers={"Retry-After": retry_after} if retry_after else None)
    if status < 500:
        return errors.BackendRejected(name, f"rejected the request (HTTP {status}){detail}", status=status)
    return errors.BackendServerError(name, f"failed (HTTP {status}){detail}")


def error_event(payload: bytes, name: str) -> errors.BackendError:
    """The backend reported a failure inside its stream: ours, naming it (an HTTP status if nothing was sent yet)."""
    try:
        error = json.loads(payload)["error"]
    except (ValueError, KeyError, TypeError):
        error = None
    message = error.get("message") if isinstance(error, dict) else error
    detail = f": {message}" if isinstance(message, str) and message else ""
    return errors.BackendServerError(name, f"reported an error in its stream{detail}")


def _error_message(response: requests.Response) -> str:
    """The backend's own words about a failure, if it gave any in a form we can read."""
    try:
        raw = response.raw.read(ERROR_BODY_LIMIT, decode_content=True)
    except Exception:  # noqa: BLE001 - an unreadable error body just means no detail
        return ""
    return backend_words(response.headers.get("Content-Type", ""), raw)


def _tls_reason(text: str, has_client_cert: bool) -> str:
    """What went wrong in TLS, in words an operator can act on (OpenSSL's own text is not that)."""
    lowered = text.lower()
    if "certificate verify failed" in lowered:
        if "hostname mismatch" in lowered or "doesn't match" in lowered or "ip address mismatch" in lowered:
            return "presented a certificate for another host name (TLS)"
        if "expired" in lowered:
            return "presented an expired certificate (TLS)"
        return "presented a certificate the gateway does not trust (TLS: unknown CA; set ca_bundle to the in-house CA)"
    if "certificate required" in lowered or "handshake failure" in lowered or "bad certificate" in lowered or "unknown ca" in lowered:
        return "demands a client certificate the gateway did not present or it did not accept (TLS; set client_cert)"
    if "wrong version number" in lowered:
        return "does not speak TLS on that port (is the URL http://?)"
    if "eof occurred in violation of protocol" in lowered:
        # With TLS 1.3 a server that refuses the client's certificate (or its absence) may just
        # hang up instead of sending its alert: say what that most likely means.
        if has_client_cert:
            return "closed the TLS connection during the handshake: it may not accept the gateway's client certificate (client_cert)"
        return "closed the TLS connection during the handshake: it may demand a client certificate (set client_cert)"
    return "failed the TLS handshake"
