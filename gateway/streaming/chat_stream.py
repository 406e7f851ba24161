"""One streamed chat answer, from the backend call to the last byte: `ChatStream`.

Until the first event, the backend is read beside the response (a greenlet under gevent, a thread
under any other WSGI server: concurrency.py) and its events are handed over a small queue, so the
response can wait with a deadline and send `: keep-alive` when `heartbeat_seconds` pass in
silence, whether the backend streams or is still computing a whole answer, and a failure is still
a real HTTP status. Under gevent a relay's reader then hands the backend's generator over and the
body reads the rest itself (concurrency.BackendWait): no queue hand-off per event; keep-alives come
from the watchdog ending the body's wait for its backend. A built answer (a non-streaming backend's,
in memory) and every answer under threads are read by the reader to the end. Under gevent, while
the body waits for what the reader hands over, it also watches the backend's socket
(concurrency.SameTurnWake), so the hand-over wakes it in the same turn of the event loop, not at
the next (a second late in a busy worker).
The life of a stream, in order:

1. `ChatStream(...)` starts the backend call and watches the client's connection;
2. `start()` waits for the first event or the first heartbeat, in the view: a failure known by
   then raises, and is still a real HTTP status;
3. `body()` is the response body: events as they come, keep-alives in silence, the end (`[DONE]`
   for chat); after the first byte a failure is an in-stream error event (and `[DONE]`). How
   payloads, the end and a failure are written is the stream's *framing* (framing.py): chat's by
   default, the Responses API's events for /v1/responses;
4. `close()` (the server closes the response: done, or the client left) stops the backend call
   at once and frees what the stream held. Idempotent.

Under gevent, the client's socket is watched (a hang-up stops the backend at once), and while it
is open the stream is in `open_streams`, whose watchdog drops a client that stopped reading
(`check_stalled`) and ends the stream when the worker's graceful stop runs out (`interrupt`).
Elsewhere a departed client is noticed at the next write, as the server closes the body.
"""

import logging
import socket
import time

from queue import Empty, Full

from ..concurrency import WOKEN, BackendWait, CancelScope, SameTurnWake, cooperative, new_queue, reading_in_place, start_reader, stop_reader
from ..errors import GatewayError, InternalError
from ..sse import KEEPALIVE
from ..telemetry.record import CLIENT_GONE, COMPLETED, RequestRecord
from . import open_streams
from .client_watch import ClientWatch
from .framing import CHAT

log = logging.getLogger(__name__)

# What the queue yields besides a payload (bytes) or the backend's failure (a GatewayError):
SILENCE = None  # a heartbeat interval passed without an event
HEARTBEAT_DUE = object()  # put in the queue by the worker's watchdog: SILENCE, without a timer per wait
ENDED = object()  # the backend finished its answer: nothing more will come
CLIENT_LEFT = object()  # the client closed its connection while the stream was running
HANDED_OVER = object()  # the reader passed the backend's generator to the body (gevent): read in place from here
# Events are handed over through a bounded queue: a client slower than its backend makes the
# backend wait (TCP back-pressure) instead of the gateway buffering the whole answer.
_QUEUE_SIZE = 64


class ChatStream:
    __slots__ = (
        "_queue", "_reader", "_scope", "_heartbeat", "_record", "_secrets", "_cleanups", "_first",
        "_socket", "_stalled_after", "_writing_since", "_interruption", "_held", "_timed_wait", "keepalive_due", "_keepalive_every",
        "_events", "_wait", "_in_place", "_framing", "_same_turn",
    )

    def __init__(self, events, *, heartbeat: float, record: RequestRecord, secrets=(), client_socket=None, stalled_after: float = 60,
                 framing=CHAT):
        """`events`: the backend's payloads (a generator, not started yet; closing it ends the
        backend call and frees what it held); `client_socket`: the client's connection, watched when the server gives it;
        `stalled_after`: seconds a client may take to accept a write (at least three heartbeats);
        `framing`: how payloads, the end and a failure are written (framing.py)."""
        self._framing = framing
        self._queue = new_queue(_QUEUE_SIZE)
        self._heartbeat = heartbeat
        self._record = record
        self._secrets = secrets
        self._first = SILENCE
        self._socket = client_socket
        self._stalled_after = max(stalled_after, 3 * heartbeat)
        self._writing_since = 0.0  # when the pending write began; 0.0 while no write is pending
        self._interruption = None  # set by interrupt(): the error the stream must end with
        self._held = None  # a non-payload item `_ready` took from the queue, for `_next`
        # Under gevent one watchdog per worker puts HEARTBEAT_DUE in the queue when a stream has
        # been silent for a heartbeat: a timed wait per event would start and cancel a timer
        # each time. Threads wait with a timeout (no watchdog there).
        self._timed_wait = not cooperative()
        self.keepalive_due = time.monotonic() + heartbeat  # the first one exactly: it may commit the 200
        # Later ones up to a fifth early, by a fraction fixed per stream: a thousand streams
        # started together would otherwise all be due on the same tick, every heartbeat, and the
        # last of a thousand writes would be late. Early is harmless; late is what proxies punish.
        self._keepalive_every = heartbeat * (1.0 - 0.2 * ((id(self) >> 4) % 32) / 32) - open_streams.TICK
        self._scope = CancelScope()
        self._reader = None
        self._events = None  # the backend's generator, once the reader handed it over (gevent)
        self._in_place = False  # the body took it over: it reads the backend itself
        self._wait = BackendWait() if cooperative() else None  # in place: how the body waits for its backend
        self._cleanups = [self._end_backend]
        self._same_turn = None  # until the first event: woken in the turn the reader hands it over (gevent)
        if SameTurnWake.available(self._queue):
            self._same_turn = SameTurnWake(self._queue)
            self._scope.on_request_sent = self._same_turn.watch
            self._cleanups.append(self._first_wait_over)
        if cooperative():
            if client_socket is not None:
                # Watched from now on, the first wait included: a client gone early stops the backend too.
                self._cleanups.append(ClientWatch(client_socket, self._client_left).stop)
            open_streams.add(self)
            self._cleanups.append(lambda: open_streams.discard(self))
        # Last: nothing above may fail and leave a reader running unsupervised.
        self._reader = start_reader(lambda: self._read_backend(events))

    # --- the four steps ----------------------------------------------------------------------------

    def start(self) -> None:
        """Waits for the first event or heartbeat; raises the backend's failure if it came first."""
        try:
            self._first = self._next()
        except BaseException:
            self.close()  # a body that never starts never runs its `finally`
            raise

    def body(self):
        """The response body, from what `start()` got on. Each write the server makes of it is
        timed (for `check_stalled`): the server asks for the next item once the last is written."""
        items = self._items()
        try:
            for data in items:
                self._writing_since = time.monotonic()
                yield data
                self._writing_since = 0.0
        finally:
            items.close()

    def _items(self):
        record, item = self._record, self._first
        encode = self._framing.encode
        if item is not CLIENT_LEFT:
            record.mark_first_byte()
        try:
            while True:
                if item is CLIENT_LEFT:
                    record.outcome = CLIENT_GONE
                    return
                if item is ENDED:
                    try:
                        end = self._framing.end()
                    except GatewayError as exc:
                        yield from self._error_event(exc)
                        return
                    record.outcome = COMPLETED
                    yield end
                    return
                if item is SILENCE:
                    record.keepalives += 1
                    yield KEEPALIVE
                else:
                    # Whatever else is already waiting goes out in the same write: the backend is
                    # ahead. Read in place, what one read brought comes as a list.
                    payloads = item if item.__class__ is list else (item, *self._ready())
                    for payload in payloads:
                        record.note_payload(payload)
                    try:
                        data = encode(payloads)
                    except GatewayError as exc:  # a framing that reads the payloads found one unusable
                        yield from self._error_event(exc)
                        return
                    yield data
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
            self._end_backend()

    def close(self) -> None:
        """Stops the backend call and frees what the stream holds; safe to call more than once."""
        cleanups, self._cleanups = self._cleanups, []
        for cleanup in cleanups:
            cleanup()

    # --- what the worker's watchdog does ----------------------------------------------------------

    def check_stalled(self, now: float) -> None:
        """Drops the client if a write has waited longer than `stalled_after` (one warning line)."""
        since = self._writing_since
        if not since or now - since < self._stalled_after or self._socket is None:
            return
        self._writing_since = 0.0
        log.warning(
            "dropped a streaming client that accepted no bytes for %g s (stalled_client_seconds), request %s",
            self._stalled_after, self._record.request_id,
        )
        self._record.outcome = CLIENT_GONE
        self._record.error = "stalled_client"
        self._stop_backend()
        try:
            # The pending write then fails as a broken pipe, which the server ends quietly. The
            # real socket under gevent's: gevent's own shutdown cancels the pending write with
            # EBADF, which gunicorn logs as a traceback.
            getattr(self._socket, "_sock", self._socket).shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def interrupt(self, error: GatewayError) -> None:
        """Ends the stream now with `error` as its last event (the worker is stopping)."""
        self._interruption = error
        self._stop_backend()
        try:
            self._queue.put_nowait(error)  # wakes a body waiting for the next event
        except Full:
            pass  # the body is writing: it finds the interruption when it asks for the next item

    # --- the backend side --------------------------------------------------------------------------

    def _read_backend(self, events):
        put = self._queue.put if cooperative() else self._put_unless_cancelled
        handed_over = False
        try:
            with self._scope:
                for payload in events:
                    if payload.__class__ is not bytes:  # a UsageNote: for the record, not the client
                        self._record.note_usage(payload.usage)
                        continue
                    put(payload)
                    if self._wait is not None and self._scope.relaying:  # gevent: the body reads the rest itself
                        if self._scope.cancelled:
                            return  # stopped meanwhile: closed below, never handed over
                        self._events = events
                        handed_over = True
                        put(HANDED_OVER)
                        return
            put(ENDED)
        except GatewayError as exc:
            self._put_ending(exc)
        except _ReaderStopped:
            pass
        except Exception:  # a bug of ours must still end the client's stream cleanly
            if self._scope.cancelled:
                return  # a read we aborted from outside: nobody waits for this stream any more
            log.exception("backend stream failed unexpectedly")
            self._put_ending(InternalError("The gateway failed while reading the backend's answer."))
        finally:
            # Killed while waiting for room in the queue, the backend's generator would stay open
            # (its connection and backend slot with it) for as long as the traceback holds it:
            # close it now, which frees both (failover.Attempts releases its slots on close).
            if not handed_over:
                events.close()

    def _put_unless_cancelled(self, item) -> None:
        """A reader thread's put: a thread cannot be killed while it waits for room in the queue."""
        while True:
            try:
                self._queue.put(item, timeout=1.0)
                return
            except Full:
                if self._scope.cancelled:
                    raise _ReaderStopped from None

    def _stop_backend(self) -> None:
        """Stops the backend call from outside the body (the watchdog, a hang-up, the shutdown):
        kills the reader, or, once the body reads in place, aborts the backend's socket, which
        ends the body's wait or read at once without throwing into it; the body then ends."""
        if self._events is not None:
            self._scope.cancel()
        elif self._reader is not None:
            stop_reader(self._reader, self._scope)

    def _end_backend(self) -> None:
        """Stops the backend call from the body's own greenlet (the stream ended, or the server
        closes it): once read in place, closing the generator frees its connection and slot."""
        events = self._events
        if events is None:
            self._stop_backend()
            return
        self._scope.cancelled = True  # whatever the generator raises from here is ours, not the backend's
        try:
            events.close()
        finally:
            reading_in_place(None, None)
            self._wait.close()

    def _client_left(self) -> None:
        """The client hung up: stop the backend call now and wake the body so it ends too."""
        self._stop_backend()
        try:
            self._queue.put_nowait(CLIENT_LEFT)
        except Full:
            pass  # the body is not waiting on the queue: it is writing, and that write will fail

    # --- the client side ---------------------------------------------------------------------------

    def _put_ending(self, item) -> None:
        """The stream's last item must arrive even behind a slow client: a greenlet waits (it can
        be killed); a thread waits unless cancelled."""
        if self._timed_wait:
            try:
                self._put_unless_cancelled(item)
            except _ReaderStopped:
                pass
        else:
            self._queue.put(item)

    def _next(self):
        """The next payload, or SILENCE, ENDED or CLIENT_LEFT; raises the backend's failure."""
        if self._interruption is not None:
            raise self._interruption
        item, self._held = self._held, None
        if item is None and self._in_place:
            item = self._pull()
        elif item is None:
            if self._timed_wait:
                try:
                    item = self._queue.get(timeout=max(0.0, self.keepalive_due - time.monotonic()))
                except Empty:
                    item = HEARTBEAT_DUE
            elif self._same_turn is not None:
                with self._same_turn.waiting():
                    item = self._queue.get()
            else:
                item = self._queue.get()
        if self._same_turn is not None and item is not HEARTBEAT_DUE:
            self._first_wait_over()  # the first event is here: what follows is queued already, or read in place
        if item is HANDED_OVER:
            self._take_over()
            item = self._pull()
        self.keepalive_due = time.monotonic() + max(self._keepalive_every, 0.5 * self._heartbeat)
        if item is HEARTBEAT_DUE:
            return SILENCE
        if isinstance(item, GatewayError):
            raise item
        return item

    def heartbeat_if_due(self, now: float) -> None:
        """From the worker's watchdog: wakes a body that has waited a heartbeat for its backend."""
        if now >= self.keepalive_due:
            if self._in_place:
                # Ends the body's wait for its backend. Writing or inside a read, it is not waiting:
                # the next tick tries again.
                if self._wait.wake():
                    self.keepalive_due = float("inf")  # `_next` sets the next due time
                return
            self.keepalive_due = float("inf")  # one marker at a time; `_next` sets the next due time
            try:
                self._queue.put_nowait(HEARTBEAT_DUE)
            except Full:
                pass  # events are waiting: no keep-alive needed

    def _ready(self) -> list:
        """Whatever payloads are already waiting, without waiting for more (for one combined write)."""
        items = []
        queue = self._queue
        while queue.qsize():  # mostly empty (a model is slower than its client): no exception raised
            item = queue.get_nowait()
            if item.__class__ is not bytes:
                if item is HEARTBEAT_DUE:
                    continue  # events are going out: no keep-alive needed
                self._held = item  # the end, or a failure: `_next` takes it from here
                return items
            items.append(item)
        return items

    def _first_wait_over(self) -> None:
        """No more same-turn wakes (concurrency.SameTurnWake) once the first item other than a
        heartbeat came: a relay's reader puts the hand-over right after it, a built answer is in
        memory by then, and an end or a failure is the last. Until then they wake the body through
        the heartbeats before a thinking backend's first event too."""
        same_turn, self._same_turn = self._same_turn, None
        if same_turn is not None:
            self._scope.on_request_sent = None
            same_turn.close()

    # --- reading in place (gevent, after the first event) ------------------------------------------

    def _take_over(self) -> None:
        """The reader handed the backend's generator over: this greenlet reads it from now on."""
        self._in_place = True
        reading_in_place(self._scope, self._wait)
        if self.keepalive_due == float("inf"):  # a marker left in the queue, never to be read: due now
            self.keepalive_due = time.monotonic()

    def _pull(self):
        """The backend's next item, in the queue's terms: a payload (or a list of them), ENDED,
        HEARTBEAT_DUE, CLIENT_LEFT, or the failure (a GatewayError, not raised)."""
        # Stopped from outside (a hang-up, a stalled client, the shutdown), the scope is cancelled
        # and the backend's socket aborted: whatever the read then gives is no answer.
        while True:
            if self._scope.cancelled:
                return self._interruption or CLIENT_LEFT
            try:
                item = next(self._events, ENDED)
            except Exception as exc:
                if self._scope.cancelled:
                    return self._interruption or CLIENT_LEFT
                if isinstance(exc, GatewayError):
                    return exc
                log.exception("backend stream failed unexpectedly")
                return InternalError("The gateway failed while reading the backend's answer.")
            if self._scope.cancelled:
                return self._interruption or CLIENT_LEFT
            if item.__class__ is bytes or item.__class__ is list or item is ENDED:
                self._wait.forget_wake()  # bytes go out: no keep-alive needed
                return item
            if item is WOKEN:
                return HEARTBEAT_DUE
            self._record.note_usage(item.usage)  # a UsageNote: for the record, not the client

    def _error_event(self, error: GatewayError):
        self._record.failed(error)
        yield self._framing.error(error, self._secrets)


class _ReaderStopped(Exception):
    """The reader thread was cancelled while it waited to hand over an event."""
