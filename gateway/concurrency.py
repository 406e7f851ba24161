"""How this process runs concurrent work: gevent's cooperative runtime, or real threads.

Under gunicorn with gunicorn.conf.py the gevent worker has patched the standard library: a
stream's backend reader is a greenlet, and killing it interrupts any socket wait at once. Under
any other WSGI server (gunicorn sync or gthread, waitress, uWSGI, mod_wsgi) a greenlet doing
socket I/O would block its whole thread, so the reader is a real thread, and a thread cannot be
killed: the code that opens a backend connection registers how to abort it in the reader's
`CancelScope`, and `cancel()` runs that from the thread that noticed the client left, which
makes the reader's blocked read fail. Imports nothing of ours: backends and streams both use it.
"""

import contextlib
import contextvars
import gc
import os
import queue
import select
import sys
import threading

import gevent
import gevent.pool
import gevent.queue
from gevent import monkey
from gevent.hub import Waiter, get_hub


def cooperative() -> bool:
    """Whether gevent has patched this process (gunicorn's gevent worker)."""
    return monkey.is_module_patched("socket")


LARGE_BYTES = 256 * 1024  # above this, parsing, validating or serialising JSON leaves the loop


def run_if_large(size: int, function, *args):
    """`function(*args)`, in gevent's native thread pool when `size` bytes make it CPU-heavy (a
    10 MB `json.loads` takes ~0.2 s, which would stall every stream of the worker; the GIL still
    switches every 5 ms, so the loop keeps serving, as long as no single C call runs long: see
    jsonio.py). Inline when small, or outside gevent.

    Meanwhile the cyclic garbage collector waits: half a million parsed objects would make each of
    its full passes (which hold the GIL throughout) take hundreds of milliseconds, several times
    over. What the work made is then frozen out of its sight (JSON data holds no cycles) until the
    request ends (`request_ends`).

    And the GIL changes hands every 0.5 ms instead of 5: the event loop gives it up at each system
    call (every read and write of every stream) and then waits for the pool's thread to let go of
    it, up to a switch interval each time; at 5 ms those waits added up to 80-100 ms gaps in the
    worker's other streams while a 33 MB embeddings answer was parsed, at 0.5 ms to 20 ms
    (measured with gevent's monitor thread and streams relayed beside their direct twins)."""
    if size > LARGE_BYTES and cooperative():
        _large_work(+1)
        try:
            # The outcome comes back as a value: an exception raised in the pool would be printed
            # with its traceback by gevent's hub, and a client's bad body must not flood the log.
            failed, outcome = gevent.get_hub().threadpool.apply(_outcome_of, (function, args))
            if not failed:
                _freeze_until_the_request_ends()
        finally:
            _large_work(-1)
        if failed:
            raise outcome
        return outcome
    return function(*args)


# --- the garbage collector and large documents (gevent: only the hub's greenlets touch these) ---

_AT_REQUEST_END = contextvars.ContextVar("llm_gateway_at_request_end")
_large_works = 0  # run_if_large calls working in the pool now
_switch_interval = 0.005  # the interpreter's own, restored when the last one ends
_LARGE_WORK_SWITCH_INTERVAL = 0.0005
_freezes = 0  # requests whose large documents are frozen out of the collector's sight


def _large_work(change: int) -> None:
    """While any large document is worked on in the pool: no collector passes, a short switch interval."""
    global _large_works, _switch_interval
    _large_works += change
    if _large_works == change == 1:
        gc.disable()
        _switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(_LARGE_WORK_SWITCH_INTERVAL)
    elif _large_works == 0:
        gc.enable()
        sys.setswitchinterval(_switch_interval)


def _freeze_until_the_request_ends() -> None:
    global _freezes
    callbacks = _AT_REQUEST_END.get(None)
    if callbacks is None:
        return  # no request to wait for: nothing would thaw it
    gc.freeze()  # moves every object tracked now into a generation the collector never scans
    if _thaw not in callbacks:  # one thaw per request, however many large documents it has
        _freezes += 1
        callbacks.append(_thaw)


def _thaw() -> None:
    global _freezes
    _freezes -= 1
    if _freezes == 0:
        gc.unfreeze()  # what is still alive (and any cycle among it) is collected as usual again


def request_begins() -> list:
    """Called by the web layer as a request begins: what must happen when it ends (a list of
    callables, run by `request_ends`; a stream's reader sees the same list)."""
    callbacks = []
    _AT_REQUEST_END.set(callbacks)
    return callbacks


def request_ends(callbacks: list) -> None:
    for callback in callbacks:
        callback()
    callbacks.clear()


def _outcome_of(function, args) -> tuple:
    """(False, the result) or (True, the exception): run in the pool, raised by the caller."""
    try:
        return False, function(*args)
    except Exception as exc:  # noqa: BLE001 - handed to the caller, which raises it as it is
        return True, exc.with_traceback(None)


def off_the_loop(function, *args):
    """`function(*args)` in gevent's native thread pool, for work whose size is not known before
    it is done (serialising a stored conversation); inline outside gevent."""
    return run_if_large(LARGE_BYTES + 1, function, *args)


@contextlib.contextmanager
def deadline(seconds: float, error: Exception):
    """Raises `error` if the block takes longer than `seconds` (under gevent; elsewhere the
    server's own socket timeout applies)."""
    if not cooperative():
        yield
        return
    timeout = gevent.Timeout(seconds, error)
    timeout.start()
    try:
        yield
    finally:
        timeout.close()


def threads_note() -> str | None:
    """One line for the start-up log when streams run on threads, saying what that means (not
    when the app is only loaded to check it: `gunicorn --check-config`, see gunicorn.conf.py)."""
    if cooperative() or os.environ.get("GATEWAY_CHECK_ONLY"):
        return None
    return (
        "llm-gateway runs without gevent's cooperative runtime (this server is not gunicorn with "
        "gunicorn.conf.py): streams still stream, but each open stream holds one of the server's "
        "threads and a reader thread, so a process serves at most as many streams at once as it has "
        "threads; use gunicorn -c gunicorn.conf.py (gevent workers) for hundreds per process"
    )


_background = gevent.pool.Group()  # what in_background started and has not finished (gevent)


def in_background(function, *args) -> None:
    """Runs `function(*args)` without making the caller wait, where that is possible: under
    gevent's patching in a greenlet of its own (which also outlives a caller that is killed, or
    is the event loop itself, where nothing may wait); elsewhere (threads, no patching) at once.
    A stopping worker waits for these before it exits (`background_finished`): they are the last
    writes of a request that has answered (its Redis counts and leases)."""
    if cooperative():
        _background.spawn(function, *args)
    else:
        function(*args)


def background_finished(timeout: float | None = None) -> None:
    """Returns once the work `in_background` started has ended (or after `timeout` seconds)."""
    _background.join(timeout=timeout)


def new_queue(size: int):
    """A bounded queue between a stream's reader and its response body."""
    return gevent.queue.Queue(size) if cooperative() else queue.Queue(size)


_CARRIED = [_AT_REQUEST_END]  # context variables a reader inherits from the request that started it


def carry_into_readers(variable: contextvars.ContextVar) -> None:
    """Marks a context variable whose value a stream's reader must see (the global slot a
    request's admission took ahead, for its first attempt)."""
    _CARRIED.append(variable)


def start_reader(function):
    """Runs `function()` beside the request: a greenlet under gevent, else a daemon thread.
    Its context holds only the carried variables: a copy of the whole request context would keep
    Flask's request objects alive for as long as the stream runs. Returns what `stop_reader` takes."""
    context = contextvars.Context()
    for variable in _CARRIED:
        value = variable.get(None)
        if value is not None:
            context.run(variable.set, value)
    if cooperative():
        return gevent.spawn(context.run, function)
    thread = threading.Thread(target=context.run, args=(function,), name="llm-gateway-reader", daemon=True)
    thread.start()
    return thread


def start_daemon(function):
    """Runs `function()` for the life of the process, beside every request: a greenlet under
    gevent, else a daemon thread (a worker's periodic chores: flushing counts to shared files)."""
    if cooperative():
        return gevent.spawn(function)
    thread = threading.Thread(target=function, name="llm-gateway-chore", daemon=True)
    thread.start()
    return thread


def stop_reader(reader, scope: "CancelScope") -> None:
    """Stops a reader started by `start_reader`: kills the greenlet (which interrupts any wait at
    once), or cancels the thread's scope (which aborts its backend connection)."""
    if isinstance(reader, gevent.Greenlet):
        scope.cancelled = True
        if not reader.dead:
            reader.kill(block=False)
    else:
        scope.cancel()

_current = threading.local()  # greenlet-local under gevent's patching, thread-local elsewhere


class CancelScope:
    __slots__ = ("_aborts", "cancelled", "_lock", "relaying", "on_request_sent")

    def __init__(self):
        self._aborts = []
        self.cancelled = False
        self._lock = threading.Lock()
        self.relaying = False  # the reader's answer is a relay that waits on its backend's socket
        self.on_request_sent = None  # called with the socket a backend request went out on (SameTurnWake.watch)

    def __enter__(self):
        _current.scope = self
        return self

    def __exit__(self, *exc_info):
        _current.scope = None
        return False

    def add(self, abort) -> None:
        with self._lock:
            if not self.cancelled:
                self._aborts.append(abort)
                return
        abort()  # cancelled already: abort at once

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            aborts, self._aborts = self._aborts, []
        for abort in aborts:
            try:
                abort()
            except Exception:  # noqa: BLE001 - aborting is best effort; the reader ends either way
                pass


def reading_in_place(scope: "CancelScope | None", wait: "BackendWait | None") -> None:
    """Marks the current greenlet as reading a stream's backend itself (None, None: no longer):
    its failures then count as cancelled with `scope`, and its backend waits go through `wait`."""
    _current.scope = scope
    _current.backend_wait = wait


def relaying(relay: bool = True) -> None:
    """Said by a relay as it starts (and, False, as it ends), in a reader: its events come from a
    socket, one wait each, so the stream's body may read it in place. (A built answer is in
    memory: the reader runs it to the end, and the body sends its chunks in one write.)"""
    scope = getattr(_current, "scope", None)
    if scope is not None:
        scope.relaying = relay


def backend_wait() -> "BackendWait | None":
    """The wait a relay in this greenlet must use for its backend's bytes, if a stream's body is
    reading them itself (see BackendWait); None in a reader greenlet or thread."""
    return getattr(_current, "backend_wait", None)


WOKEN = "backend still silent"  # what a relay read in place yields when its wait was ended for a keep-alive


class BackendWait:
    """A stream's body reading its backend itself, under gevent: no reader greenlet and no queue
    between them, which saves a hand-off per event (a fifth of the relay's CPU at a model's pace).

    The relay waits for the backend's next bytes with `until_readable` instead of inside a read:
    the worker's watchdog can end that wait (`wake`) when a keep-alive is due, and the relay then
    yields WOKEN and waits again; a wait inside http.client could not be ended without losing
    bytes it had read."""

    __slots__ = ("_hub", "_waiter", "_watcher", "_fd", "_wake_pending")

    def __init__(self):
        self._hub = get_hub()
        self._waiter = None
        self._watcher = None
        self._fd = -1
        self._wake_pending = False  # a wake whose wait the socket ended first: the next wait ends at once

    def until_readable(self, sock) -> bool:
        """True once `sock` has bytes (or its end); False when `wake()` ended the wait first."""
        if self._wake_pending:
            self._wake_pending = False
            return False
        fd = sock.fileno()
        if fd != self._fd:
            self.close()
            self._watcher, self._fd = self._hub.loop.io(fd, 1), fd  # 1: readable
        waiter = self._waiter = Waiter(self._hub)
        self._watcher.start(waiter.switch, True)
        try:
            readable = waiter.get()
        finally:
            self._waiter = None
            self._watcher.stop()
        if not readable:
            self._wake_pending = False  # this wait took the wake
        return readable

    def wake(self) -> bool:
        """Ends the current wait, if the body is in one (from another greenlet); False if it is
        not waiting (writing, or inside a read), so the caller tries again later."""
        waiter, self._waiter = self._waiter, None
        if waiter is None:
            return False
        # A Waiter is switched from the event loop. If the socket ends the wait first, this switch
        # only leaves a value in a Waiter nobody reads again: the flag carries the wake over.
        self._wake_pending = True
        self._hub.loop.run_callback(waiter.switch, False)
        return True

    def forget_wake(self) -> None:
        """Bytes went out since: a wake still pending is no longer needed."""
        self._wake_pending = False

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.close()
            self._watcher, self._fd = None, -1


def request_sent(sock) -> None:
    """Said by a backend connection once it has sent a request on `sock`: the stream whose reader
    this is may watch that socket (SameTurnWake)."""
    scope = getattr(_current, "scope", None)
    if scope is not None and scope.on_request_sent is not None:
        scope.on_request_sent(sock)


_system_poll = monkey.get_original("select", "poll")


def readable_now(fd: int) -> bool:
    """Whether `fd` has something to read (data, or the peer's close), asked of the system's own
    poll: it never waits at timeout 0, where gevent's would set up io watchers and a timeout."""
    poller = _system_poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


_QUEUE_RELEASES = ("26.9.0",)  # gevent releases whose Queue._unlock SameTurnWake calls


class SameTurnWake:
    """Wakes a stream's body, waiting for its first event, in the same turn of the event loop in
    which its reader handed that event over (under gevent).

    The reader reads the backend and puts what it read in the queue; gevent wakes the waiting
    body with a callback, which runs at the loop's next turn. A worker relaying a thousand streams
    takes about a second per turn, and meanwhile the backend's next events wait in the socket,
    every one of them late by that second (measured: the hand-over took 1.1 s at the median, 2 s
    at p90). So while the body waits on the queue (`waiting`), it also watches the socket its
    reader's request went out on (`watch`), at the lowest priority: when bytes arrive, the reader
    (at the normal priority) reads them first, and later in the same turn this watch wakes the
    body if the queue holds something, as gevent's own callback would (`Queue._unlock`: the gevent
    releases it was checked against are listed; another release keeps gevent's callback alone).
    A wake with nothing in the queue wakes nobody.

    A watch of a readable socket that nobody reads would fire at every turn, and a closed
    socket's number may be another connection's next. So the watch is on only while the body
    waits (not while it writes to a slow client as the backend's next events arrive), only on a
    socket still open, and it stops when bytes wait that nobody waits to read (the reader busy
    elsewhere, or gone): gevent's own wake-up then does the rest, a turn later. (Found by an
    independent review, which measured 814,245 turns in 2 s of a body's blocked write.)"""

    __slots__ = ("_queue", "_loop", "_watcher", "_sock", "_fd", "_waiting")

    def __init__(self, queue):
        self._queue = queue
        self._loop = get_hub().loop
        self._watcher = None
        self._sock = None  # the socket the reader's latest request went out on
        self._fd = -1
        self._waiting = False

    @staticmethod
    def available(queue) -> bool:
        return isinstance(queue, gevent.queue.Queue) and gevent.__version__ in _QUEUE_RELEASES

    def watch(self, sock) -> None:
        """The reader sent its request on `sock` (a failover's next connection replaces the last)."""
        self._sock, self._fd = sock, sock.fileno()
        if self._waiting:
            self._arm()

    @contextlib.contextmanager
    def waiting(self):
        """Around the body's wait on the queue."""
        self._waiting = True
        self._arm()
        try:
            yield
        finally:
            self._waiting = False
            self._disarm()

    def close(self) -> None:
        self._waiting = False
        self._sock = None
        self._disarm()

    def _arm(self) -> None:
        self._disarm()
        if self._sock is not None and self._sock.fileno() == self._fd >= 0:
            watcher = self._watcher = self._loop.io(self._fd, 1, priority=-2)  # 1: readable; -2: after every other ready socket
            watcher.start(self._woken)

    def _woken(self) -> None:
        if self._sock is None or self._sock.fileno() != self._fd:
            self._disarm()  # closed since: its number is no longer the reader's
        elif self._queue.qsize():
            self._queue._unlock()  # what gevent's callback would do, now
        elif readable_now(self._fd) and not self._sock._read_event.active:
            # Bytes are waiting and nobody waits to read them (the reader is busy elsewhere, or
            # gone): the watch would fire at every turn. gevent's own wake-up does the rest.
            self._disarm()

    def _disarm(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.close()


def cancelled() -> bool:
    """Whether the reader this runs in was cancelled (its failures are ours, not the backend's)."""
    scope = getattr(_current, "scope", None)
    return scope is not None and scope.cancelled


def on_cancel(abort) -> None:
    """Registers `abort()` with the scope the current reader runs in, if any."""
    scope = getattr(_current, "scope", None)
    if scope is not None:
        scope.add(abort)
