"""CPU-heavy steps of one request kept off the event loop, and deadlines that work under gevent.

Under gevent's cooperative runtime a 10 MB `json.loads` (~0.2 s) would stall every stream of the
worker. Large inputs go to the hub's native thread pool instead; small ones are cheaper inline.
Outside gevent (another WSGI server) each request has its own thread already: run inline.
"""

import contextlib

import gevent

from ..concurrency import cooperative

LARGE_BYTES = 256 * 1024  # above this, parsing, validating or serialising leaves the loop


def run_if_large(size: int, function, *args):
    if size > LARGE_BYTES and cooperative():
        return gevent.get_hub().threadpool.apply(function, args)
    return function(*args)


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
