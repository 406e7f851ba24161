"""Calling a backend over HTTP with requests: one pooled Session per backend, errors translated once.

Everything that can go wrong on the wire becomes one of the `BackendError`s here, by what it
means rather than by its class (under gevent a TLS read timeout is an `SSLError`, a read timeout
mid-body is a `ConnectionError`). Redirects are never followed: requests would carry our secret
headers to whatever host the redirect names.
"""

import http.client
import json
import os
import re
import ssl
from urllib.parse import urlsplit

import certifi
import gevent
import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_environ_proxies

from .. import errors
from ..completions import HAS_USAGE, complete_envelope, completion_chunks, completion_problem, missing_usage_chunk
from ..config import BackendConfig, ConfigError
from ..forwarding import UpstreamCall
from ..sse import DONE_PAYLOAD, SSEDecoder, SSEError
from .base import Backend

_READ_SIZE = 65536
_DRAIN_SECONDS = 2.0  # after [DONE], how long the rest of the body may take before we cut it off
_ERROR_BODY_LIMIT = 65536  # enough for any error message; a huge error page is not read whole
_FINISHED = re.compile(rb'"finish_reason"\s*:\s*"')
_ERROR_EVENT = re.compile(rb'\s*\{\s*"error"\s*:')
# What reading a body can raise: requests wraps only what goes through its own methods, and the
# relay reads the raw urllib3 response for speed.
_WIRE_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)


def _proxies(config: BackendConfig) -> dict:
    """The backend's proxy: its own `proxy`, else HTTPS_PROXY/HTTP_PROXY unless NO_PROXY covers it.
    Resolved once at start-up: requests would read the environment again on every call."""
    if config.proxy:
        return {"http": config.proxy, "https": config.proxy}
    return get_environ_proxies(config.url) or {}


def _tls_context(config: BackendConfig) -> ssl.SSLContext:
    """Everything TLS for one backend, loaded once: urllib3 would re-read the CA and client
    certificate files on every new connection, blocking the worker for milliseconds each time."""
    try:
        context = ssl.create_default_context(cafile=config.ca_bundle or os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE") or certifi.where())
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"backends.{config.name}.ca_bundle: not a usable CA bundle ({exc})") from None
    if config.client_cert:
        try:
            # No pass phrase: OpenSSL would otherwise prompt on the worker's terminal and hang it.
            context.load_cert_chain(config.client_cert, config.client_key, password=lambda: b"")
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"backends.{config.name}.client_cert: not a usable certificate and key ({exc})") from None
    if not config.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _BackendAdapter(HTTPAdapter):
    """requests' adapter with the backend's own SSLContext, and nothing re-read per connection."""

    def __init__(self, tls: ssl.SSLContext | None, **kwargs):
        self._tls = tls
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        if self._tls is not None:
            kwargs["ssl_context"] = self._tls
        return super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, proxy, **kwargs):
        if self._tls is not None:
            kwargs["ssl_context"] = self._tls
        return super().proxy_manager_for(proxy, **kwargs)

    def cert_verify(self, conn, url, verify, cert):
        # The context already holds the CA and client certificate; requests would otherwise have
        # urllib3 load certifi's bundle into it again for every connection.
        conn.cert_reqs = "CERT_REQUIRED" if verify else "CERT_NONE"
        conn.ca_certs = conn.ca_cert_dir = None


class HttpBackend(Backend):
    def __init__(self, config: BackendConfig, pool_size: int):
        super().__init__(config)
        self.timeout = (config.connect_timeout, config.read_timeout)
        session = requests.Session()
        session.trust_env = False  # proxies and CA are resolved once, here
        tls = _tls_context(config) if config.url.startswith("https:") else None
        adapter = _BackendAdapter(tls, pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.proxies = _proxies(config)
        self.session = session  # owns the adapter (the connection pool) and the proxies
        self._adapter = adapter
        # Prepared once: the per-call work left is the body and the rendered headers.
        self._prepared_url = requests.Request("POST", config.url).prepare().url
        base = {**requests.utils.default_headers(), "Content-Type": "application/json"}
        self._headers_for = {
            False: {**base, "Accept": "application/json"},
            True: {**base, "Accept": "text/event-stream", "Accept-Encoding": "identity"},  # compressed SSE arrives in lumps
        }

    # --- the two calls ---------------------------------------------------------------------------

    def complete(self, call: UpstreamCall) -> dict:
        response = self._post(call, stream=False)
        try:
            try:
                raw = response.content
            except _WIRE_ERRORS as exc:
                raise self._translate(exc) from None
            return self._completion(raw, call.model_id)
        finally:
            response.close()

    def stream(self, call: UpstreamCall):
        response = self._post(call, stream=True)
        finished = False
        try:
            content_type = response.headers.get("Content-Type", "")
            if not content_type.startswith("text/event-stream"):
                # A backend configured as streaming that answered with one JSON body after all.
                if "json" in content_type:
                    yield from completion_chunks(self._completion(response.content, call.model_id), call.include_usage)
                    return
                raise errors.BackendInvalidAnswer(self.name, f"answered a streaming request with {content_type or 'no content type'}, not an event stream")
            yield from self._relay(response, call)
            finished = True
        except SSEError as exc:
            raise errors.BackendInvalidAnswer(self.name, f"sent an unreadable event stream: {exc}") from None
        except _WIRE_ERRORS as exc:
            raise self._translate(exc) from None
        finally:
            if finished:
                # The answer is complete: let the client have its [DONE] now, and read the end of
                # the body in the background so the connection can go back to the pool.
                gevent.spawn(_drain_and_release, response)
            else:  # failed, or the client left: the connection is in an unknown state
                response.close()

    def close(self) -> None:
        self.session.close()

    # --- the wire --------------------------------------------------------------------------------

    def _post(self, call: UpstreamCall, stream: bool) -> requests.Response:
        # Straight to the session's transport adapter with a request prepared here: Session.request
        # would merge environment, cookie and redirect settings on every call, a fifth of the
        # worker's time per request, for features a backend call does not use (no cookies, no
        # redirects, proxies and CA resolved at start-up).
        prepared = requests.PreparedRequest()
        prepared.method = "POST"
        prepared.url = self._prepared_url
        prepared.headers = CaseInsensitiveDict(self._headers_for[stream])
        prepared.headers.update(call.headers)
        prepared.headers["Content-Length"] = str(len(call.data))
        prepared.body = call.data
        try:
            response = self._adapter.send(prepared, stream=True, timeout=self.timeout, verify=self.config.verify, cert=None, proxies=self.session.proxies)
        except requests.RequestException as exc:
            raise self._translate(exc) from None
        if response.status_code >= 300:
            try:
                raise self._status_error(response)
            finally:
                response.close()
        return response

    def _relay(self, response: requests.Response, call: UpstreamCall):
        """The data of each event as it arrives, untouched; ends only at [DONE] or a finished answer."""
        decoder = SSEDecoder()
        read = response.raw.read1
        finished = done = False
        usage_missing = call.include_usage
        first = None  # the first event: its id, created and model label a usage chunk we add
        while not done:
            chunk = read(_READ_SIZE)
            events = decoder.feed(chunk) if chunk else decoder.close()
            for payload in events:
                if payload == DONE_PAYLOAD:
                    done = True
                    break
                if _ERROR_EVENT.match(payload):
                    raise self._error_event(payload)
                if not finished and _FINISHED.search(payload):
                    finished = True
                if usage_missing and HAS_USAGE.search(payload):
                    usage_missing = False
                if first is None:
                    first = payload
                yield payload
            if not chunk:
                break
        if first is None:
            raise errors.BackendInvalidAnswer(self.name, "ended its stream without sending an answer")
        if not done and not finished:
            raise errors.BackendInvalidAnswer(self.name, "ended its stream before the answer was finished")
        if usage_missing:  # the client was promised a usage chunk; this backend sent none
            yield missing_usage_chunk(first, call.model_id)

    def _error_event(self, payload: bytes) -> errors.BackendError:
        """The backend reported a failure inside its stream: ours, naming it (an HTTP status if nothing was sent yet)."""
        try:
            error = json.loads(payload)["error"]
        except (ValueError, KeyError, TypeError):
            error = None
        message = error.get("message") if isinstance(error, dict) else error
        detail = f": {message}" if isinstance(message, str) and message else ""
        return errors.BackendServerError(self.name, f"reported an error in its stream{detail}")

    def _completion(self, raw: bytes, model_id: str) -> dict:
        try:
            data = json.loads(raw)
        except ValueError:
            raise errors.BackendInvalidAnswer(self.name, "answered with something that is not JSON") from None
        problem = completion_problem(data)
        if problem:
            raise errors.BackendInvalidAnswer(self.name, f"answered with JSON that is not a chat completion: it {problem}")
        return complete_envelope(data, model_id)

    # --- failures, translated once ---------------------------------------------------------------

    def _status_error(self, response: requests.Response) -> errors.BackendError:
        status = response.status_code
        if 300 <= status < 400:
            target = urlsplit(response.headers.get("Location", ""))
            where = target.netloc.rsplit("@", 1)[-1] or "another path"
            return errors.BackendRedirected(
                self.name, f"answered with a redirect (HTTP {status}) to {where}; the gateway does not follow redirects, so secret headers stay with the configured host"
            )
        message = self._error_message(response)
        detail = f": {message}" if message else ""
        if status in (401, 403):
            return errors.BackendAuthRejected(self.name, f"rejected the gateway's credentials (HTTP {status}); check the backend's headers in the config{detail}")
        if status == 429:
            retry_after = response.headers.get("Retry-After")
            return errors.BackendRateLimited(self.name, f"is rate limiting requests (HTTP 429){detail}", headers={"Retry-After": retry_after} if retry_after else None)
        if status < 500:
            return errors.BackendRejected(self.name, f"rejected the request (HTTP {status}){detail}", status=status)
        return errors.BackendServerError(self.name, f"failed (HTTP {status}){detail}")

    @staticmethod
    def _error_message(response: requests.Response) -> str:
        """The backend's own words about a failure, if it gave any in a form we can read."""
        try:
            raw = response.raw.read(_ERROR_BODY_LIMIT, decode_content=True)
        except Exception:  # noqa: BLE001 - an unreadable error body just means no detail
            return ""
        content_type = response.headers.get("Content-Type", "")
        if "json" in content_type:
            try:
                data = json.loads(raw)
            except ValueError:
                return ""
            if isinstance(data, dict):
                error = data.get("error")
                for candidate in (error.get("message") if isinstance(error, dict) else error, data.get("message"), data.get("detail")):
                    if isinstance(candidate, str) and candidate:
                        return candidate
            return ""
        if content_type.startswith("text/plain"):
            return raw.decode("utf-8", errors="replace").strip()
        return ""

    def _translate(self, exc: Exception) -> errors.BackendError:
        text = str(exc)
        connect_s, read_s = self.timeout
        lowered = text.lower()
        if isinstance(exc, requests.ConnectTimeout):
            return errors.BackendTimeout(self.name, f"did not accept a connection within {connect_s:g} s (connect_timeout)")
        if "handshake operation timed out" in lowered:
            return errors.BackendTimeout(self.name, f"did not complete the TLS handshake within {connect_s:g} s (connect_timeout)")
        # Under gevent a TLS read timeout arrives as SSLError('The read operation timed out').
        if isinstance(exc, requests.ReadTimeout) or "timed out" in lowered:
            return errors.BackendTimeout(self.name, f"sent nothing for {read_s:g} s (read_timeout)")
        if isinstance(exc, (requests.exceptions.SSLError, ssl.SSLError, urllib3.exceptions.SSLError)) or "alert certificate required" in lowered:
            return errors.BackendTLSError(self.name, _tls_reason(text, bool(self.config.client_cert)))
        if isinstance(exc, requests.exceptions.ProxyError):
            return errors.BackendUnreachable(self.name, "could not be reached through its proxy")
        if isinstance(exc, (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError, http.client.IncompleteRead, ConnectionResetError)):
            return errors.BackendDropped(self.name, "closed the connection before its answer was complete")
        if isinstance(exc, (requests.ConnectionError, OSError)):
            if "refused" in text.lower():
                return errors.BackendUnreachable(self.name, f"refused the connection at {self.config.location}")
            if "Name or service not known" in text or "nodename nor servname" in text or "getaddrinfo" in text:
                return errors.BackendUnreachable(self.name, f"could not be found: the host of {self.config.location} does not resolve")
            return errors.BackendUnreachable(self.name, f"could not be reached at {self.config.location}")
        return errors.BackendUnreachable(self.name, f"could not be called ({type(exc).__name__})")


def _drain_and_release(response: requests.Response) -> None:
    raw = response.raw
    try:
        with gevent.Timeout(_DRAIN_SECONDS):
            while raw.read1(_READ_SIZE):
                pass
    except BaseException:  # noqa: BLE001 - timed out or broke: the connection cannot be reused
        raw.close()
    raw.release_conn()


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
