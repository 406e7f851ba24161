"""Calling a backend over HTTP with requests: one pooled Session per backend (transport.py), and
failures translated once (wire_errors.py).

Redirects are never followed: requests would carry our secret headers to whatever host the
redirect names. Relayed events are read from the raw urllib3 response with `read1`, so each event
goes out as it arrives, chunked or not.
"""

import contextlib
import dataclasses
import json
import logging
import re
import socket
import ssl

import gevent
import requests
from requests.structures import CaseInsensitiveDict

from .. import errors, jsonio
from ..concurrency import WOKEN, backend_wait, cooperative, on_cancel, relaying, run_if_large
from ..chat.answers import complete_envelope, completion_problem
from ..chat.chunks import HAS_USAGE, ModelRename, UsageNote, completion_chunks, missing_usage_chunk, split_usage
from ..config import BackendConfig
from ..embeddings.answers import complete_embeddings, embeddings_problem
from ..sse import DONE_PAYLOAD, SSEDecoder, SSEError
from ..upstream.call import UpstreamCall, without_usage_ask
from . import silence
from .base import Backend
from .transport import backend_session
from .wire_errors import WIRE_ERRORS, error_event, read_timeout_error, status_error, translate

log = logging.getLogger("gateway")

_READ_SIZE = 65536
_BATCH = 64  # payloads a relay read in place hands its body at most at once (one write)
_DRAIN_SECONDS = 2.0  # after [DONE], how long the rest of the body may take before we cut it off
_FINISHED = re.compile(rb'"finish_reason"\s*:\s*"')
_ERROR_EVENT = re.compile(rb'\s*\{\s*"error"\s*:')
_NOT_WATCHED = contextlib.nullcontext()


class HttpBackend(Backend):
    def __init__(self, config: BackendConfig, pool_size: int, on_slot_change=None, on_cooldown=None):
        super().__init__(config, on_slot_change, on_cooldown)
        self.timeout = (config.connect_timeout, config.read_timeout)
        self._refuses_stream_options = False  # it refused the usage ask the gateway adds to streams (_post_stream)
        self.session, self._adapter = backend_session(config, pool_size)
        # Prepared once: the per-call work left is the body and the rendered headers.
        self._prepared_url = requests.Request("POST", config.url).prepare().url
        # The embeddings endpoint and the model list, each with the config its wire errors name
        # (they may be on another host than `url`, and a message must say where it failed).
        self._embeddings_at = _target(config, config.embeddings_url)
        self._models_at = _target(config, config.discovery_url)
        self._health_at = _target(config, config.health_url)
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
                chunks = _body_chunks(response)
            except WIRE_ERRORS as exc:
                raise translate(exc, self.config) from None
            return run_if_large(sum(map(len, chunks)), self._completion, chunks, call.model_id)
        finally:
            response.close()

    def stream(self, call: UpstreamCall):
        response = self._post_stream(call)
        on_cancel(lambda: _abort(response))  # a reader thread (no gevent) is stopped this way
        finished = False
        try:
            content_type = response.headers.get("Content-Type", "")
            if not content_type.startswith("text/event-stream"):
                # A backend configured as streaming that answered with one JSON body after all.
                if "json" in content_type:
                    completion = self._completion(response.content, call.model_id)
                    if not call.include_usage and completion.get("usage"):
                        yield UsageNote(completion["usage"])
                    yield from completion_chunks(completion, call.include_usage)
                    return
                raise errors.BackendInvalidAnswer(self.name, f"answered a streaming request with {content_type or 'no content type'}, not an event stream")
            yield from self._relay(response, call)
            finished = True
        except SSEError as exc:
            raise errors.BackendInvalidAnswer(self.name, f"sent an unreadable event stream: {exc}") from None
        except WIRE_ERRORS as exc:
            raise translate(exc, self.config) from None
        finally:
            if finished and cooperative():
                _end_of_body(response)
            else:  # failed, or the client left: the connection is in an unknown state
                response.close()

    def embed(self, call) -> dict:
        response = self._post(call, stream=False, target=self._embeddings_at)
        try:
            try:
                chunks = _body_chunks(response)
            except WIRE_ERRORS as exc:
                raise translate(exc, self._embeddings_at[1]) from None
            return run_if_large(sum(map(len, chunks)), self._embeddings, chunks, call)  # RAG answers run to megabytes
        finally:
            response.close()

    def fetch_model_list(self, headers: dict):
        """The parsed JSON of the backend's GET .../models (discovery.py reads it), sent with
        `headers` (its rendered templates); a BackendError when there is no usable answer."""
        url, config = self._models_at
        prepared = requests.PreparedRequest()
        prepared.method = "GET"
        prepared.url = url
        prepared.headers = CaseInsensitiveDict({**requests.utils.default_headers(), "Accept": "application/json"})
        prepared.headers.update(headers)
        try:
            response = self._adapter.send(prepared, stream=True, timeout=self.timeout, verify=self.config.verify, cert=None, proxies=self.session.proxies)
        except requests.RequestException as exc:
            raise translate(exc, config) from None
        try:
            if response.status_code >= 300:
                raise status_error(response, self.name)
            try:
                raw = response.content
            except WIRE_ERRORS as exc:
                raise translate(exc, config) from None
        finally:
            response.close()
        try:
            return json.loads(raw)
        except ValueError:
            raise errors.BackendInvalidAnswer(self.name, "answered its model list with something that is not JSON") from None

    def probe(self, headers: dict) -> str | None:
        """One health probe (health.py): GET health_url with `headers` (its rendered templates),
        within health_timeout_seconds to connect and to answer. None when it answers 2xx, else
        what went wrong, in words for the log and the status page. Its body is not read."""
        url, config = self._health_at
        timeout = self.config.health_timeout_seconds
        prepared = requests.PreparedRequest()
        prepared.method = "GET"
        prepared.url = url
        prepared.headers = CaseInsensitiveDict(requests.utils.default_headers())
        prepared.headers.update(headers)
        try:
            response = self._adapter.send(prepared, stream=True, timeout=(timeout, timeout), verify=self.config.verify, cert=None, proxies=self.session.proxies)
        except requests.RequestException as exc:
            error = translate(exc, config)
            if isinstance(error, errors.BackendTimeout):
                return f"did not answer its health check within {timeout:g} s (health_timeout_seconds)"
            return error.reason
        try:
            if 200 <= response.status_code < 300:
                return None
            return f"answered its health check with HTTP {response.status_code}"
        finally:
            response.close()

    def close(self) -> None:
        self.session.close()

    # --- the wire --------------------------------------------------------------------------------

    def _post_stream(self, call: UpstreamCall) -> requests.Response:
        """The streaming call. A backend that refuses the usage ask the gateway added (a 400 or
        422 naming stream_options) is called again without it, and this worker asks it no more."""
        if call.usage_hidden and self._refuses_stream_options:
            return self._post(without_usage_ask(call), stream=True)
        try:
            return self._post(call, stream=True)
        except errors.BackendRejected as rejected:
            if not (call.usage_hidden and rejected.status in (400, 422) and "stream_options" in rejected.reason):
                raise
        self._refuses_stream_options = True
        log.warning(
            "backend '%s' refused stream_options, which the gateway adds to count every stream's usage: this worker "
            "no longer asks it, and its streams count only the usage it reports unasked (drop_params = "
            "[\"stream_options\"] in its config says so from the start)", self.name,
        )
        return self._post(without_usage_ask(call), stream=True)

    def _post(self, call: UpstreamCall, stream: bool, target: tuple | None = None) -> requests.Response:
        # Straight to the session's transport adapter with a request prepared here: Session.request
        # would merge environment, cookie and redirect settings on every call, a fifth of the
        # worker's time per request, for features a backend call does not use (no cookies, no
        # redirects, proxies and CA resolved at start-up).
        prepared = requests.PreparedRequest()
        prepared.method = "POST"
        url, config = target or (self._prepared_url, self.config)
        prepared.url = url
        prepared.headers = CaseInsensitiveDict(self._headers_for[stream])
        prepared.headers.update(call.headers)
        prepared.headers["Content-Length"] = str(len(call.data))
        prepared.body = call.data
        try:
            response = self._adapter.send(prepared, stream=True, timeout=self.timeout, verify=self.config.verify, cert=None, proxies=self.session.proxies)
        except requests.RequestException as exc:
            raise translate(exc, config) from None
        if response.status_code >= 300:
            try:
                raise status_error(response, self.name)
            finally:
                response.close()
        return response

    def _relay(self, response: requests.Response, call: UpstreamCall):
        """The data of each event as it arrives, untouched; ends only at [DONE] or a finished answer."""
        relaying()
        silence = self._watch_silence(response)
        try:
            yield from self._events_of(response, call, silence)
        except (SSEError, errors.BackendInvalidAnswer, *WIRE_ERRORS):
            if silence is not None and silence.expired:  # the watchdog cut the read short
                raise read_timeout_error(self.config) from None
            raise
        finally:
            relaying(False)  # a failover's next backend may build its answer instead
            if silence is not None:
                silence.stop()

    def _watch_silence(self, response: requests.Response):
        """Under gevent: read_timeout from the worker's watchdog (silence.py) instead of a timer
        around every socket wait. Elsewhere (a reader thread) the socket's own timeout stays."""
        sock = _socket_of(response)
        if not cooperative() or sock is None:
            return None
        sock.settimeout(None)
        return silence.watch(self.config.read_timeout, lambda: _abort(response))

    def _events_of(self, response: requests.Response, call: UpstreamCall, silence):
        """Under gevent, once the stream's body reads this relay itself (`backend_wait()`), every
        wait for the backend goes through that wait, which may yield WOKEN (a keep-alive is due;
        the relay then carries on where it was), and payloads come out as lists: everything that
        had arrived when the relay caught up (at most _BATCH), for one write."""
        decoder = SSEDecoder()
        raw = response.raw
        read = raw.read1
        sock = _socket_of(response)
        waiting = silence.waiting if silence is not None else _nothing
        heard = silence.heard if silence is not None else _nothing
        finished = done = False
        usage_missing = call.include_usage
        hidden = call.usage_hidden  # a usage chunk the gateway asked for: noted (UsageNote), not sent
        notes = []
        renamed = ModelRename(call.model_id)  # each event names the model the client asked for
        first = None  # the first event: its id and created label a usage chunk we add
        wait = None
        buffered = None  # whether more of the response has arrived (None: not looked since the last read)
        ready = []
        while not done:
            if wait is None:
                wait = backend_wait()  # found once the body has taken the relay over, then kept
            if wait is not None and sock is not None:
                if buffered is None:
                    buffered = _has_buffered(raw, sock)
                if not buffered:
                    if ready:  # caught up with the backend: what arrived goes out before any wait
                        yield ready
                        ready = []
                    waiting()
                    if not wait.until_readable(sock):
                        with silence.paused() if silence is not None else _NOT_WATCHED:
                            yield WOKEN
                        continue
            waiting()
            chunk = read(_READ_SIZE)
            heard()
            buffered, failure = None, None
            for payload in decoder.feed(chunk) if chunk else decoder.close():
                if payload == DONE_PAYLOAD:
                    done = True
                    break
                if _ERROR_EVENT.match(payload):
                    failure = error_event(payload, self.name)  # after what came before it
                    break
                if not finished and _FINISHED.search(payload):
                    finished = True
                if usage_missing and HAS_USAGE.search(payload):
                    usage_missing = False
                if hidden and HAS_USAGE.search(payload):
                    note, payload = split_usage(payload)
                    if note is not None:
                        notes.append(note)
                    if payload is None:
                        continue
                if first is None:
                    first = payload
                ready.append(renamed(payload))
            if wait is None:  # a reader (before the hand-over, or a thread): one by one
                yield from ready
                ready = []
            elif ready and (done or failure is not None or not chunk or len(ready) >= _BATCH or notes):
                yield ready
                ready = []
            if notes:
                yield from notes
                notes = []
            if failure is not None:
                raise failure
            if not chunk:
                break
        if first is None:
            raise errors.BackendInvalidAnswer(self.name, "ended its stream without sending an answer")
        if not done and not finished:
            raise errors.BackendInvalidAnswer(self.name, "ended its stream before the answer was finished")
        if usage_missing:  # the client was promised a usage chunk; this backend sent none
            yield missing_usage_chunk(first, call.model_id)

    def _completion(self, raw, model_id: str) -> dict:
        """`raw`: the answer's bytes, or the chunks they came in."""
        try:
            data = jsonio.loads(raw)
        except ValueError:
            raise errors.BackendInvalidAnswer(self.name, "answered with something that is not JSON") from None
        problem = completion_problem(data)
        if problem:
            raise errors.BackendInvalidAnswer(self.name, f"answered with JSON that is not a chat completion: it {problem}")
        return complete_envelope(data, model_id)

    def _embeddings(self, raw, call) -> dict:
        try:
            data = jsonio.loads(raw)
        except ValueError:
            raise errors.BackendInvalidAnswer(self.name, "answered with something that is not JSON") from None
        problem = embeddings_problem(data, call.expected)
        if problem is None:
            answer, problem = complete_embeddings(data, call.model_id, call.wants_base64)
            if answer is not None:
                jsonio.dismantle(data)  # the backend's own items, freed here in the pool, not at once later
                return answer
        raise errors.BackendInvalidAnswer(self.name, f"answered with JSON that is not an embeddings list: it {problem}")


def _body_chunks(response: requests.Response) -> list:
    """The whole body as the chunks it came in: jsonio reads them as they are, so a large answer is
    never copied into one buffer (`response.content` joins tens of megabytes in one C call)."""
    return [chunk for chunk in response.iter_content(_READ_SIZE) if chunk]


def _target(config: BackendConfig, url: str | None) -> tuple | None:
    """(prepared url, the config as wire_errors sees it) for another URL of the backend, or None."""
    if not url:
        return None
    return requests.Request("GET", url).prepare().url, dataclasses.replace(config, url=url)


def _nothing() -> None:
    pass


def _socket_of(response: requests.Response):
    """The socket the response's body arrives on. A response that ends with its connection
    (`Connection: close`, no chunks) has been handed that socket: http.client's connection lets
    go of it, and only the body's reader still holds it."""
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    if sock is None:
        reader = getattr(getattr(response.raw, "_fp", None), "fp", None)
        sock = getattr(getattr(reader, "raw", None), "_sock", None)
    return sock


def _has_buffered(raw, sock) -> bool:
    """Whether bytes of the response already arrived, so that a read returns without waiting:
    in urllib3's decoded buffer, http.client's read buffer, or the TLS layer. A look with the
    socket briefly non-blocking: at most one read attempt, which keeps what it gets buffered."""
    if len(raw._decoded_buffer):
        return True
    body = raw._fp  # http.client's response
    reader = getattr(body, "fp", None)
    if reader is None:  # the body is complete: a read returns at once
        return True
    sock.settimeout(0.0)
    try:
        buffered = reader.peek(1)
    except (BlockingIOError, ssl.SSLWantReadError):
        return False
    finally:
        sock.settimeout(None)
    # The CRLF that ends a chunk is read with the next chunk's size: alone, it is no event.
    if buffered and not (buffered == b"\r\n" and body.chunked and body.chunk_left == 0):
        return True
    # TLS may hold the rest already decrypted: the socket then never becomes readable for it.
    pending = getattr(sock, "pending", None)
    return bool(pending is not None and pending())


def _abort(response: requests.Response) -> None:
    """From another thread or greenlet: makes a read blocked on this response's socket fail at
    once (closing a socket does not wake a thread blocked on it; shutting it down does)."""
    sock = _socket_of(response)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _end_of_body(response: requests.Response) -> None:
    """The answer is complete: the connection goes back to the pool. Mostly the body's end (a
    chunked body's last chunk) came with the last event: read at once, here. Else the client gets
    its [DONE] now and a greenlet reads the end in the background (never a wait here: a read of a
    chunk's size line that has half arrived would block)."""
    raw = response.raw
    sock = _socket_of(response)
    if sock is not None and _end_arrived(raw, sock):
        try:
            while raw.read1(_READ_SIZE):
                pass
        except Exception:  # noqa: BLE001 - broken after all: the connection cannot be reused
            raw.close()
        raw.release_conn()
        return
    gevent.spawn(_drain_and_release, response)


_LAST_CHUNK = (b"0\r\n\r\n", b"\r\n0\r\n\r\n")  # without, and with, the previous chunk's CRLF not yet read


def _end_arrived(raw, sock) -> bool:
    """Whether the rest of a chunked body is buffered already: its empty last chunk, no trailers."""
    body = raw._fp  # http.client's response
    if len(raw._decoded_buffer) or body is None or not body.chunked:
        return False  # unread data, or not chunked: the background read decides
    reader = getattr(body, "fp", None)
    if reader is None:
        return True  # http.client has read it all already
    sock.settimeout(0.0)
    try:
        buffered = reader.peek(len(_LAST_CHUNK[1]))
    except (BlockingIOError, ssl.SSLWantReadError):
        return False
    finally:
        sock.settimeout(None)
    return buffered in _LAST_CHUNK


def _drain_and_release(response: requests.Response) -> None:
    raw = response.raw
    try:
        with gevent.Timeout(_DRAIN_SECONDS):
            while raw.read1(_READ_SIZE):
                pass
    except BaseException:  # noqa: BLE001 - timed out or broke: the connection cannot be reused
        raw.close()
    raw.release_conn()
