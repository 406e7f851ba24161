"""A write the kernel takes whole, made in one system call: gevent's `sendall` without its toll.

gevent's `socket.sendall` (26.9) asks the kernel for the socket's send-buffer size
(`getsockopt(SO_SNDBUF)`, a system call) on every call, to cut large writes into pieces, and wraps
the data in memoryviews and a deadline before its first `send`. A relayed event is one small write
(gunicorn writes each chunk of a streamed body with `sendall`), which the kernel takes whole
almost always: that toll was about a tenth of a streaming worker's CPU per event (124 against
113 µs in an A/B). So a plain gevent
socket's `sendall` first tries one `send` on the real socket; what the kernel did not take (a full
buffer, a slow client) goes on through gevent's own `sendall`, which waits as it always did.

Only the plain socket class (gevent's TLS socket reuses the same `sendall`, and must not send
around its encryption), only bytes, and only what gevent would send the same way: empty data
(gevent sends nothing) and a socket in non-blocking mode (gevent raises its timeout error where
the kernel takes part) go gevent's way from the start. Installed by create_app where gevent has
patched; another gevent release keeps its own, untouched.
"""

GEVENT_RELEASES = ("26.9.0",)  # whose socket.sendall this was checked against


def install() -> None:
    import gevent
    from gevent import _socket3

    plain = _socket3.socket
    gevents_sendall = plain.sendall
    if gevent.__version__ not in GEVENT_RELEASES or getattr(gevents_sendall, "one_call_first", False):
        return

    def sendall(self, data, flags=0):
        if self.__class__ is plain and data.__class__ is bytes and data and self.timeout != 0.0:
            try:
                sent = self._sock.send(data, flags)
            except BlockingIOError:  # the buffer is full: gevent waits for room
                sent = 0
            if sent == len(data):
                return None
            data = memoryview(data)[sent:]
        return gevents_sendall(self, data, flags)

    sendall.one_call_first = True
    plain.sendall = sendall
