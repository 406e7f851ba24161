"""Noticing at once that a streaming client hung up, with a bare event-loop watcher."""

import socket

import gevent


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


class ClientLeft(BaseException):
    """Raised into a request's greenlet when its client hung up while a `stream: false` answer
    was awaited. A BaseException, like GreenletExit: no `except Exception` on the way (requests,
    urllib3, ours) may swallow it; urllib3 closes the backend connection as it passes."""


class abandoned_if_client_leaves:
    """`with abandoned_if_client_leaves(client_socket): ...`: the block is interrupted with
    ClientLeft the moment the client closes its connection (no-op without a socket to watch)."""

    __slots__ = ("_socket", "_watch", "_greenlet")

    def __init__(self, client_socket):
        self._socket = client_socket
        self._watch = None

    def __enter__(self):
        if self._socket is not None:
            self._greenlet = gevent.getcurrent()
            self._watch = ClientWatch(self._socket, self._interrupt)
        return self

    def _interrupt(self):
        # From the event loop: the throw runs as the loop's next callback, in the request's greenlet.
        if self._watch is not None:
            gevent.get_hub().loop.run_callback(self._throw)

    def _throw(self):
        if self._watch is not None:  # still inside the block
            self._greenlet.throw(ClientLeft())

    def __exit__(self, *exc_info):
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        return False
