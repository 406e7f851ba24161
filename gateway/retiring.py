"""A retiring gunicorn worker takes no new request over the connections it already has.

gunicorn retires a gevent worker (SIGTERM: a reload, a shutdown) by closing its listening socket
and letting the requests in flight finish. But its keep-alive loop (`base_async.handle`) goes on
waiting for the next request on every open connection, and serves it: a proxy that keeps
connections (nginx `keepalive`) goes on starting new, long streams on the retiring worker, which
its graceful deadline then cuts. So, once the worker starts retiring:

- every connection that is between two requests, with nothing of a next one waiting to be read,
  is shut down at once: its client (nginx, an SDK's pool) opens a new one, to a live worker;
- a connection accepted before, whose first request has not come yet, has FIRST_REQUEST_GRACE
  seconds to send it: its client has just connected and its request is on its way (a client
  retries a request whose kept connection was closed under it, but not one on a connection it has
  just opened: that closed without an answer is a failure). One still silent then is shut down
  as an idle one;
- a connection whose request is still running is closed as soon as that response ends (gunicorn
  marks responses that begin while retiring `Connection: close`; this covers the ones that began
  before);
- and it stops accepting new connections at once, not at the next tick of gunicorn's loop (up to
  a second later: every worker shares the listening socket, so a proxy's new connections would
  still land on the retiring one meanwhile);
- and it exits as soon as its last connection ends. gunicorn's loop looks once a second whether
  the worker is stopping and then whether it is done, so an idle worker lingered one to two
  seconds: a restart, a reload's handover and every stop of the test suite's gateways waited
  for it;
- and, its exit hooks done, it leaves with `os._exit` (`leave`), as a forked child should, without
  taking its interpreter apart.

Set up by gunicorn.conf.py's post_worker_init in gevent workers, before the worker starts serving.
"""

import atexit
import os
import socket
import sys
import threading

import gevent
import gevent.event
from gevent import server as gevent_server
from gevent.monkey import get_original

from .concurrency import background_finished
from .telemetry.lifecycle import on_shutdown

# The system's select and not gevent's: the check runs inside the SIGTERM handler, which may
# interrupt the event loop itself, where nothing may wait (with a zero timeout, nothing does).
_select = get_original("select", "select")


def attach(worker) -> None:
    """Wraps the worker's connection and request handlers (looked up on the instance when its
    server starts) to know which connections are between requests."""
    between_requests = set()  # client sockets waiting for their next request
    awaiting_first = set()  # client sockets accepted, their first request not come yet
    handle, handle_request = worker.handle, worker.handle_request
    servers = _servers_started_from_now_on()

    def handle_connection(listener, client, addr):
        awaiting_first.add(client)
        try:
            handle(listener, client, addr)
        finally:
            awaiting_first.discard(client)
            between_requests.discard(client)

    def handle_one_request(listener_name, req, client, addr):
        awaiting_first.discard(client)
        between_requests.discard(client)
        try:
            handle_request(listener_name, req, client, addr)
        finally:
            if worker.alive:
                between_requests.add(client)
        if not worker.alive:
            raise StopIteration("the worker is retiring")  # ends the keep-alive loop: the connection closes

    def close_idle(graceful_timeout) -> None:
        for server in servers:
            server.stop_accepting()  # gunicorn closes the listener itself, later
        _shut_idle(between_requests)
        if awaiting_first:
            gevent.spawn_later(FIRST_REQUEST_GRACE, _shut_idle, awaiting_first)

    stopping = gevent.event.Event()

    def run_until_drained():
        # gunicorn's own loop runs beside (it beats the worker's heartbeat, and at the graceful
        # deadline it stops what is left); this returns when it does, or once the worker is
        # stopping and every connection has ended, whichever comes first.
        raised = []

        def gunicorns_loop():
            try:
                run()
            except BaseException as exc:  # raised below as it was: a greenlet's would also be printed
                raised.append(exc)

        loop = gevent.spawn(gunicorns_loop)
        gevent.wait([loop, stopping], count=1)
        drained = gevent.spawn(_drain, servers)
        gevent.wait([loop, drained], count=1)
        drained.kill(block=False)
        if raised:
            raise raised[0]

    worker.handle = handle_connection
    worker.handle_request = handle_one_request
    run, worker.run = worker.run, run_until_drained  # looked up on the instance by init_process
    on_shutdown(close_idle)
    on_shutdown(lambda graceful_timeout: stopping.set())


FIRST_REQUEST_GRACE = 2.0  # seconds a connection accepted before retiring has to send its first request


def _shut_idle(clients: set) -> None:
    """Shuts every connection of `clients` with nothing of a request waiting to be read."""
    for client in list(clients):
        if not _request_waiting(client):
            _shut(client)


# How long a worker leaving by another way than SIGTERM's drain (its graceful deadline, a quick
# stop, max_requests) still gives the writes its requests left running (Redis counts, leases).
LAST_WRITES_SECONDS = 0.5


def leave() -> None:
    """The last step of gunicorn.conf.py's worker_exit, in a gevent worker on its way out (within
    the SystemExit that gunicorn raises for it): leaves with that exit status now.

    By then worker_exit has written what the worker counted, and after SIGTERM every connection
    has ended and the writes they left running are done (`_drain`); other ways out give those
    writes LAST_WRITES_SECONDS (the interpreter's exit gave them one more turn of the loop). What
    was left is the interpreter's own teardown: its ~1,000 modules taken apart one object at a
    time, memory the kernel frees at once anyway, 60-80 ms of CPU per worker exit that every
    stop, restart and reload paid. So the process ends with `os._exit`, which the os module
    names for a forked child: after the exit handlers (logging's flush among them) and a flush
    of the standard streams. Where the interpreter would do more, it is left to: a thread that
    is not a daemon (it waits for it), an exit status the system cannot take."""
    stopping = sys.exc_info()[1]
    if not isinstance(stopping, SystemExit):
        return  # not gunicorn's way out
    status = stopping.code
    if status is None:
        status = 0
    elif not isinstance(status, int):
        if sys.stderr is not None:
            print(status, file=sys.stderr)  # what the interpreter does with sys.exit("message")
        status = 1
    if not -2**31 <= status < 2**31 or _threads_to_wait_for():
        return
    background_finished(timeout=LAST_WRITES_SECONDS)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass  # none, closed, or its reader gone: nothing more can be said
    os._exit(status)


def _threads_to_wait_for() -> bool:
    main = threading.main_thread()
    return any(thread is not main and not thread.daemon and thread.is_alive() for thread in threading.enumerate())


def _drain(servers) -> None:
    """Every connection ended, then the writes their requests left running (Redis counts, leases)."""
    for server in servers:
        server.pool.join()
    background_finished()


def _servers_started_from_now_on() -> list:
    """The gevent servers this worker starts (gunicorn's gevent worker makes them in `run()` and
    keeps them to itself): remembered as they start, in this worker process only."""
    servers = []
    start = gevent_server.StreamServer.start

    def start_and_remember(server):
        servers.append(server)
        return start(server)

    gevent_server.StreamServer.start = start_and_remember
    return servers


def _request_waiting(client) -> bool:
    """Whether bytes of a next request have arrived: that request is served (with `Connection: close`)."""
    try:
        readable, _, _ = _select([client.fileno()], [], [], 0)
    except (OSError, ValueError):
        return False
    return bool(readable)


def _shut(client) -> None:
    """The real socket under gevent's: gevent's own shutdown would cancel the pending read with
    EBADF, which gunicorn logs as a traceback; this way the read sees the end quietly."""
    try:
        getattr(client, "_sock", client).shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already gone
