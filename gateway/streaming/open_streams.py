"""Every stream open in this worker, and the one watchdog that looks after them all.

One greenlet per worker, not a timer per stream (with a thousand streams open, per-stream timers
add up, and a timed wait per relayed event starts and cancels one each time). Every TICK it wakes
the streams whose backend has been silent for a heartbeat (`: keep-alive`), and once a second it
looks for stalled clients:
- A client that accepts no bytes for `stalled_client_seconds` while a write is pending is
  dropped: one warning line, its socket shut, its backend request closed. gunicorn's gevent
  worker writes without a timeout; a socket timeout would surface there as a traceback.
- When the worker's graceful stop begins (SIGTERM, or a reload retiring it), streams still open
  one second before `GATEWAY_GRACEFUL_TIMEOUT` ends get an error event ("the gateway is shutting
  down"), `[DONE]` and their access-log line, instead of being cut mid-answer.
"""

import logging
import time

import gevent

from ..errors import ShuttingDown
from ..telemetry import lifecycle

log = logging.getLogger("gateway")

TICK = 0.05  # seconds: how late a keep-alive may be, at most, on an idle worker
STALL_CHECK_EVERY = 20  # ticks: stalled clients are looked for once a second
_streams = set()
_watchdog = None


def add(stream) -> None:
    global _watchdog
    _streams.add(stream)
    if _watchdog is None or _watchdog.dead:
        _watchdog = gevent.spawn(_watch)


def discard(stream) -> None:
    _streams.discard(stream)


def count() -> int:
    return len(_streams)


def _watch():
    ticks = 0
    while True:
        gevent.sleep(TICK)
        ticks += 1
        now = time.monotonic()
        streams = list(_streams)
        stall_check = ticks % STALL_CHECK_EVERY == 0
        for stream in streams:
            try:
                stream.heartbeat_if_due(now)
                if stall_check:
                    stream.check_stalled(now)
            except Exception:  # noqa: BLE001 - one stream's bug must not end every stream's keep-alives
                log.exception("the stream watchdog failed on one stream")


def _end_before_deadline(graceful_timeout: float) -> None:
    gevent.spawn_later(max(0.0, graceful_timeout - 1.0), end_all)


lifecycle.on_shutdown(_end_before_deadline)  # at import: a stream may open after SIGTERM too


def end_all() -> None:
    """Ends every open stream now with a shutdown error event (the worker is about to stop)."""
    streams = list(_streams)
    if streams:
        log.warning("ending %d stream(s) still open as the graceful timeout runs out", len(streams))
    for stream in streams:
        stream.interrupt(ShuttingDown("The gateway is shutting down; the answer was cut short. Please retry."))
