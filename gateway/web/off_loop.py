"""CPU-heavy steps of one request kept off the event loop, and deadlines that work under gevent.

Under gevent's cooperative runtime a 10 MB `json.loads` (~0.2 s) would stall every stream of the
worker. Large inputs go to the hub's native thread pool instead; small ones are cheaper inline.
Outside gevent (another WSGI server) each request has its own thread already: run inline.
"""

import contextlib

import gevent

from ..concurrency import cooperative, run_if_large  # noqa: F401 - the views' name for it


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
