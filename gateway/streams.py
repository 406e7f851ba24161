"""Streaming answers to the client: the backend's events out as SSE, keep-alives while it is silent.

The backend call runs in a greenlet of its own (`EventSource`) and hands its events over a small
queue, so the response can wait for the next one with a deadline and send `: keep-alive` when
`heartbeat_seconds` pass in silence, whether the backend streams or is still computing a whole
answer. The first wait happens in the view, before the response starts: a failure known by then is
still a real HTTP status; after it, failures are in-stream error events. Closing the
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

# What `EventSource.next` returns besides a payload (bytes):
SILENCE = None  # a heartbeat interval passed without an event
ENDED = object()  # the backend finished its answer: nothing more will come
CLIENT_GONE_MARK = object()  # the client closed its connection while the stream was running
# Events are handed over through a bounded queue: a client slower than its backend makes the
# backend wait (TCP back-pressure) instead of the gateway buffering the whole answer.
_QUEUE_SIZE = 64


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
            put(ENDED)
        except GatewayError as exc:
            put(exc)
        except Exception:  # a bug of ours must still end the client's stream cleanly
            log.exception("backend stream failed unexpectedly")
            put(InternalError("The gateway failed while reading the backend's answer."))
        finally:
            self._release()  # the backend request is over: its slot is free for the next one

    def next(self, timeout: float):
        """The next payload, or SILENCE, ENDED or CLIENT_GONE_MARK; raises the backend's failure."""
        try:
            item = self._queue.get(timeout=timeout)
        except Empty:
            return SILENCE
        if isinstance(item, GatewayError):
            raise item
        return item

    def abandon(self) -> None:
        """The client left: stop the backend call now and wake the response body so it ends too."""
        self.close()
        try:
            self._queue.put_nowait(CLIENT_GONE_MARK)
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


def sse_body(source: EventSource, first, heartbeat: float, record: RequestRecord, secrets=()):
    """The response body, from `first` (what the view's first wait got) on: events as they come,
    keep-alives in silence, [DONE] at the end, an error event and [DONE] on failure."""
    item = first
    if item is not CLIENT_GONE_MARK:
        record.mark_first_byte()
    try:
        while True:
            if item is CLIENT_GONE_MARK:
                record.outcome = CLIENT_GONE
                return
            if item is ENDED:
                record.outcome = COMPLETED
                yield DONE
                return
            if item is SILENCE:
                record.keepalives += 1
                yield KEEPALIVE
            else:
                # Whatever else is already waiting goes out in the same write: the backend is ahead.
                payloads = (item, *source.ready())
                for payload in payloads:
                    record.note_payload(payload)
                yield encode_event(item) if len(payloads) == 1 else b"".join(map(encode_event, payloads))
            try:
                item = source.next(heartbeat)
            except GatewayError as exc:
                record.failed(exc)
                yield encode_event(error_json(exc, secrets))
                yield DONE
                return
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
