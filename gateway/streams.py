"""Streaming answers to the client: the backend's events out as SSE, keep-alives while it is silent.

The backend call runs in a greenlet of its own (`EventSource`) and hands its events over a small
queue, so the response can wait for the next one with a deadline and send `: keep-alive` when
`heartbeat_seconds` pass in silence, whether the backend streams or is still computing a whole
answer. The first wait happens before the response starts (`first_event`): a failure known by
then is still a real HTTP status; after it, failures are in-stream error events. Closing the
response (the client left) kills the greenlet, which closes the backend request at once.
"""

import logging

import gevent
from gevent.queue import Empty, Queue

from .errors import GatewayError, InternalError, error_json
from .sse import DONE, KEEPALIVE, encode_event

log = logging.getLogger(__name__)

_END = object()
SILENCE = None  # what `next` returns when a heartbeat interval passed without an event
# Events are handed over through a bounded queue: a client slower than its backend makes the
# backend wait (TCP back-pressure) instead of the gateway buffering the whole answer.
_QUEUE_SIZE = 64


class StreamEnded(Exception):
    """The backend finished its answer: nothing more will come."""


class EventSource:
    """Runs `produce()` (a generator of event payloads) in its own greenlet."""

    __slots__ = ("_queue", "_greenlet")

    def __init__(self, produce):
        self._queue = Queue(_QUEUE_SIZE)
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
        raise item

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


def first_event(source: EventSource, heartbeat: float):
    """Waits one heartbeat for the backend's first event. Raises its error, if it failed by then."""
    try:
        return source.next(heartbeat)
    except StreamEnded:
        return _END


def sse_body(source: EventSource, first, heartbeat: float, secrets=()):
    """The response body: the first event (or a keep-alive), then events, keep-alives, [DONE]."""
    try:
        if first is _END:
            yield DONE
            return
        yield KEEPALIVE if first is SILENCE else encode_event(first)
        while True:
            try:
                payload = source.next(heartbeat)
            except StreamEnded:
                yield DONE
                return
            except GatewayError as exc:
                yield encode_event(error_json(exc, secrets))
                yield DONE
                return
            if payload is SILENCE:
                yield KEEPALIVE
                continue
            more = source.ready()
            if more:  # the backend is ahead of the client: one write instead of many
                yield b"".join(encode_event(p) for p in (payload, *more))
            else:
                yield encode_event(payload)
    finally:
        source.close()
