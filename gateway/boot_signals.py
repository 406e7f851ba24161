"""A stop signal that reaches a gunicorn worker while it boots is kept, not lost.

gunicorn installs a worker's own signal handlers only once the worker has patched gevent and set
itself up: hundreds of milliseconds, seconds on a busy host. Until then the new process runs the
master's handlers, which put the signal in the master's queue, of which the worker has a copy
nothing reads. A SIGTERM (a shutdown, `docker stop`, a reload retiring the worker) or a Ctrl-C in
that window was lost: the worker went on to serve, and the master waited out the whole graceful
timeout for it (benoitc/gunicorn#1910).

So the master blocks the stop signals for the instant of the fork; the new worker, first thing,
holds any that arrive until its own handlers are in place, and then sends them to itself again.
Used by gunicorn.conf.py; imports nothing (the master loads it).
"""

import signal

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})

_held = []  # in a booting worker: the stop signals that arrived, in order


def forking_with_stop_signals_blocked(spawn_worker):
    """Wraps the arbiter's `spawn_worker`: a stop signal sent during the fork waits, in the master
    (handled a moment later, as usual) or in the child (see `hold_stop_signals`)."""

    def spawn_with_signals_blocked():
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            return spawn_worker()
        finally:  # the child never returns from spawn_worker (it exits through here; harmless)
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    return spawn_with_signals_blocked


def hold_stop_signals() -> None:
    """In the new worker, from post_fork: from here until gunicorn installs the worker's handlers,
    a stop signal is noted (those blocked since the fork arrive now)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _hold)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def deliver_held_signals() -> None:
    """From post_worker_init, the worker's own handlers in place: each held signal, once, to them."""
    held = list(dict.fromkeys(_held))
    _held.clear()
    for signum in held:
        signal.raise_signal(signum)


def _hold(signum, frame) -> None:
    _held.append(signum)
