"""Streaming answers to the client: the backend's events out as SSE, keep-alives while it is silent.

The backend call runs in a greenlet of its own (`EventSource`) and hands its events over a small
queue, so the response can wait for the next one with a deadline and send `: keep-alive` when
`heartbeat_seconds` pass in silence, whether the backend streams or is still computing a whole
answer. The first wait happens before the response starts (`first_event`): a failure known by
then is still a real HTTP status; after it, failures are in-stream error events. Closing the
response (the client left) kills the greenlet, which closes the backend request at once.
"""

import logging
import socket

import gevent
from gevent.queue import Empty, Full, Queue

from .errors import GatewayError, InternalError, error_json
from .observe import CLIENT_GONE, COMPLETED, RequestRecord
from .sse import DONE, KEEPALIVE, encode_event

log = logging.getLogger(__name__)

_END = object()
_CLIENT_GONE = object()
SILENCE = None  # what `next` returns when a heartbeat interval passed without an event
# Events are handed over through a bounded queue: a client slower than its backend makes the
# backend wait (TCP back-pressure) instead of the gateway buffering the whole answer.
_QUEUE_SIZE = 64


class StreamEnded(Exception):
    """The backend finished its answer: nothing more will come."""


class ClientGone(Exception):
    """The client closed its connection while the stream was running."""


class ClientWatch:
    """Calls `on_gone()` the moment the client closes its connection.

    A streaming client sends nothing after its request, so its socket turning readable with
    nothing to read means it hung up (Open WebUI's stop button, a closed tab). Without this, the
    gateway would notice only when a write fails, up to two heartbeats later, while the backend
    keeps computing an answer nobody reads. It is a bare event-loop watcher with a callback, not a
    greenlet: with a thousand streams open, a parked greenlet's saved stack per stream adds up.
    """

    __slots__ = ("_watcher", "_socket", "_on_gone")

    def __init__(self, client_socket, on_gone):
        self._socket = getattr(client_socket, "_sock", client_socket)  # the real socket under gevent's
        self._on_gone = on_gone
        self._watcher = gevent.get_hub().loop.io(client_socket.fileno(), 1)  # 1: readable
        self._watcher.start(self._readable)

    def _readable(self):
        # Runs in the event loop: it must not block, so the peek is non-blocking.
        try:
            data = self._socket.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return  # a spurious wake-up: keep watching
        except OSError:
            data = b""  # reset by the client: gone as well
        self.stop()
        if not data:
            self._on_gone()
        # else: the client sent something (a pipelined request), which is not a hang-up

    def stop(self) -> None:
        """Idempotent; called when the response closes."""
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher.close()
            self._watcher = None


class EventSource:
    """Runs `produce()` (a generator of event payloads) in its own greenlet; `release()` when it is over."""

    __slots__ = ("_queue", "_greenlet", "_release")

    def __init__(self, produce, release):
        self._queue = Queue(_QUEUE_SIZE)
        self._release = release
        self._greenlet = gevent.spawn(self._run, produce)

    def _run(self, produce):
        put = self._queue.put
        try:
            for payload in produce():
                put(payload)
            put(_END)
        except GatewayError as exc:
            put(exc)
        except Exception:  # a bug of ours must still end the client's stream cleanly
            log.exception("backend stream failed unexpectedly")
            put(InternalError("The gateway failed while reading the backend's answer."))
        finally:
            self._release()  # the backend request is over: its slot is free for the next one

    def next(self, timeout: float):
        """The next payload; SILENCE after `timeout` seconds without one; raises at the end or on failure."""
        try:
            item = self._queue.get(timeout=timeout)
        except Empty:
            return SILENCE
        if item.__class__ is bytes:
            return item
        if item is _END:
            raise StreamEnded
        if item is _CLIENT_GONE:
            raise ClientGone
        raise item

    def abandon(self) -> None:
        """The client left: stop the backend call now and wake the response body so it ends too."""
        self.close()
        try:
            self._queue.put_nowait(_CLIENT_GONE)
        except Full:
            pass  # the body is not waiting on the queue: it is writing, and that write will fail

    def ready(self) -> list:
        """Whatever payloads are already waiting, without waiting for more (for one combined write)."""
        items = []
        queue = self._queue
        while queue.qsize() and queue.peek().__class__ is bytes:
            items.append(queue.get())
        return items

    def close(self) -> None:
        """Stops the backend call; safe to call more than once, from any greenlet."""
        if not self._greenlet.dead:
            self._greenlet.kill(block=False)
        # A greenlet killed before it ever ran never reaches its `finally`.
        self._release()


def first_event(source: EventSource, heartbeat: float):
    """Waits one heartbeat for the backend's first event. Raises its error, if it failed by then."""
    try:
        return source.next(heartbeat)
    except StreamEnded:
        return _END
    except ClientGone:  # it left before the first byte: nothing to send, nobody to send it to
        return _CLIENT_GONE


def sse_body(source: EventSource, first, heartbeat: float, record: RequestRecord, secrets=()):
    """The response body: the first event (or a keep-alive), then events, keep-alives, [DONE]."""
    if first is _CLIENT_GONE:
        record.outcome = CLIENT_GONE
        source.close()
        return
    record.mark_first_byte()
    try:
        if first is _END:
            record.outcome = COMPLETED
            yield DONE
            return
        if first is SILENCE:
            record.keepalives += 1
            yield KEEPALIVE
        else:
            record.note_payload(first)
            yield encode_event(first)
        while True:
            try:
                payload = source.next(heartbeat)
            except StreamEnded:
                record.outcome = COMPLETED
                yield DONE
                return
            except ClientGone:
                record.outcome = CLIENT_GONE
                return
            except GatewayError as exc:
                record.failed(exc)
                yield encode_event(error_json(exc, secrets))
                yield DONE
                return
            if payload is SILENCE:
                record.keepalives += 1
                yield KEEPALIVE
                continue
            more = source.ready()
            if more:  # the backend is ahead of the client: one write instead of many
                payloads = (payload, *more)
                for p in payloads:
                    record.note_payload(p)
                yield b"".join(encode_event(p) for p in payloads)
            else:
                record.note_payload(payload)
                yield encode_event(payload)
    except GeneratorExit:
        if record.outcome is None:
            record.outcome = CLIENT_GONE
        raise
    except Exception:  # a bug of ours: the stream still ends the way the contract says
        log.exception("stream body failed unexpectedly")
        error = InternalError("The gateway failed while streaming the answer.")
        record.failed(error)
        yield encode_event(error_json(error, secrets))
        yield DONE
    finally:
        source.close()
