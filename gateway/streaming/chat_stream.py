"""One streamed chat answer, from the backend call to the last byte: `ChatStream`.

The backend's events are read in a greenlet of their own and handed over a small queue, so the
response can wait for the next one with a deadline and send `: keep-alive` when
`heartbeat_seconds` pass in silence, whether the backend streams or is still computing a whole
answer. The life of a stream, in order:

1. `ChatStream(...)` starts the backend call and watches the client's connection;
2. `start()` waits for the first event or the first heartbeat, in the view: a failure known by
   then raises, and is still a real HTTP status;
3. `body()` is the response body: events as they come, keep-alives in silence, `[DONE]` at the
   end; after the first byte a failure is an in-stream error event and `[DONE]`;
4. `close()` (the server closes the response: done, or the client left) stops the backend call
   at once and frees what the stream held. Idempotent.
"""

import logging

import gevent
from gevent.queue import Empty, Full, Queue

from ..errors import GatewayError, InternalError, error_json
from ..sse import DONE, KEEPALIVE, encode_event
from ..telemetry.record import CLIENT_GONE, COMPLETED, RequestRecord
from .client_watch import ClientWatch

log = logging.getLogger(__name__)

# What the queue yields besides a payload (bytes) or the backend's failure (a GatewayError):
SILENCE = None  # a heartbeat interval passed without an event
ENDED = object()  # the backend finished its answer: nothing more will come
CLIENT_LEFT = object()  # the client closed its connection while the stream was running
# Events are handed over through a bounded queue: a client slower than its backend makes the
# backend wait (TCP back-pressure) instead of the gateway buffering the whole answer.
_QUEUE_SIZE = 64


class ChatStream:
    __slots__ = ("_queue", "_greenlet", "_release", "_heartbeat", "_record", "_secrets", "_cleanups", "_first")

    def __init__(self, events, release, *, heartbeat: float, record: RequestRecord, secrets=(), client_socket=None, stalled_after: float = 60):
        """`events`: the backend's payloads (a generator, not started yet); `release()` frees the
        backend slot; `client_socket`: the client's connection, watched when the server gives it."""
        self._queue = Queue(_QUEUE_SIZE)
        self._release = release
        self._heartbeat = heartbeat
        self._record = record
        self._secrets = secrets
        self._first = SILENCE
        self._greenlet = gevent.spawn(self._read_backend, events)
        self._cleanups = [self._stop_backend]
        if client_socket is not None:
            # Watched from now on, the first wait included: a client gone early stops the backend too.
            self._cleanups.append(ClientWatch(client_socket, self._client_left).stop)
            # gunicorn's gevent worker writes with no timeout: a client that stops reading without
            # closing would hold the stream, its backend connection and its slot until TCP gives up.
            client_socket.settimeout(max(stalled_after, 3 * heartbeat))
            self._cleanups.append(lambda: client_socket.settimeout(None))

    # --- the four steps ----------------------------------------------------------------------------

    def start(self) -> None:
        """Waits for the first event or heartbeat; raises the backend's failure if it came first."""
        try:
            self._first = self._next()
        except BaseException:
            self.close()  # a body that never starts never runs its `finally`
            raise

    def body(self):
        """The response body, from what `start()` got on."""
        record, item = self._record, self._first
        if item is not CLIENT_LEFT:
            record.mark_first_byte()
        try:
            while True:
                if item is CLIENT_LEFT:
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
                    payloads = (item, *self._ready())
                    for payload in payloads:
                        record.note_payload(payload)
                    yield encode_event(item) if len(payloads) == 1 else b"".join(map(encode_event, payloads))
                try:
                    item = self._next()
                except GatewayError as exc:
                    yield from self._error_event(exc)
                    return
        except GeneratorExit:
            if record.outcome is None:
                record.outcome = CLIENT_GONE
            raise
        except Exception:  # a bug of ours: the stream still ends the way the contract says
            log.exception("stream body failed unexpectedly")
            yield from self._error_event(InternalError("The gateway failed while streaming the answer."))
        finally:
            self._stop_backend()

    def close(self) -> None:
        """Stops the backend call and frees what the stream holds; safe to call more than once."""
        cleanups, self._cleanups = self._cleanups, []
        for cleanup in cleanups:
            cleanup()

    # --- the backend side --------------------------------------------------------------------------

    def _read_backend(self, events):
        put = self._queue.put
        try:
            for payload in events:
                if payload.__class__ is not bytes:  # a UsageNote: for the record, not the client
                    self._record.note_usage(payload.usage)
                    continue
                put(payload)
            put(ENDED)
        except GatewayError as exc:
            put(exc)
        except Exception:  # a bug of ours must still end the client's stream cleanly
            log.exception("backend stream failed unexpectedly")
            put(InternalError("The gateway failed while reading the backend's answer."))
        finally:
            self._release()  # the backend request is over: its slot is free for the next one

    def _stop_backend(self) -> None:
        if not self._greenlet.dead:
            self._greenlet.kill(block=False)
        # A greenlet killed before it ever ran never reaches its `finally`.
        self._release()

    def _client_left(self) -> None:
        """The client hung up: stop the backend call now and wake the body so it ends too."""
        self._stop_backend()
        try:
            self._queue.put_nowait(CLIENT_LEFT)
        except Full:
            pass  # the body is not waiting on the queue: it is writing, and that write will fail

    # --- the client side ---------------------------------------------------------------------------

    def _next(self):
        """The next payload, or SILENCE, ENDED or CLIENT_LEFT; raises the backend's failure."""
        try:
            item = self._queue.get(timeout=self._heartbeat)
        except Empty:
            return SILENCE
        if isinstance(item, GatewayError):
            raise item
        return item

    def _ready(self) -> list:
        """Whatever payloads are already waiting, without waiting for more (for one combined write)."""
        items = []
        queue = self._queue
        while queue.qsize() and queue.peek().__class__ is bytes:
            items.append(queue.get())
        return items

    def _error_event(self, error: GatewayError):
        self._record.failed(error)
        yield encode_event(error_json(error, self._secrets))
        yield DONE
