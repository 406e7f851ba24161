"""The worker's life: whether it is shutting down (readiness turns 503), and who must hear when
it starts to. Set by gunicorn.conf.py's post_worker_init; imports nothing of ours."""

import signal

_worker = None
_on_shutdown = []  # called with the graceful timeout (seconds) when SIGTERM arrives


def attach_worker(worker) -> None:
    """Called from gunicorn.conf.py's post_worker_init, in the worker process. Wraps gunicorn's
    own SIGTERM handler (graceful stop) so listeners hear of it the moment it starts."""
    global _worker
    _worker = worker
    graceful_stop = worker.handle_exit

    def handle_term(signum, frame):
        graceful_stop(signum, frame)
        for listener in list(_on_shutdown):
            listener(worker.cfg.graceful_timeout)

    signal.signal(signal.SIGTERM, handle_term)


def on_shutdown(listener) -> None:
    """`listener(graceful_timeout)` runs when this worker starts its graceful stop."""
    _on_shutdown.append(listener)


def shutting_down() -> bool:
    return _worker is not None and not _worker.alive
