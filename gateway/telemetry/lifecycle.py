"""The worker's life: whether it is shutting down (readiness turns 503), and who must hear when
it starts to. Set by gunicorn.conf.py's post_worker_init; imports nothing of ours."""

import signal

_worker = None
_on_shutdown = []  # called with the graceful timeout (seconds) when SIGTERM arrives


def attach_worker(worker) -> None:
    """Called from gunicorn.conf.py's post_worker_init, in the worker process. Wraps gunicorn's
    own SIGTERM handler (graceful stop) so listeners hear of it the moment it starts, and its
    quick stop (SIGINT, SIGQUIT) so that it runs once."""
    global _worker
    _worker = worker
    graceful_stop = worker.handle_exit

    def handle_term(signum, frame):
        # Once stopping, another SIGTERM (`pkill gunicorn` signals the master, which passes it on,
        # and each worker) changes nothing. Ignored, it cannot kill the worker at its very end,
        # where Python has put the default action back ("Worker was sent SIGTERM!").
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        graceful_stop(signum, frame)
        for listener in list(_on_shutdown):
            listener(worker.cfg.graceful_timeout)

    signal.signal(signal.SIGTERM, handle_term)

    # A quick stop acts once. Ctrl-C reaches a worker twice, from the terminal (SIGINT, to the whole
    # process group) and from the master (SIGQUIT): gunicorn's gevent worker would exit twice, and
    # the second exit, raised while the first is unwinding, prints a SystemExit traceback.
    quick_stop, stopping = worker.handle_quit, []

    def handle_quit_once(signum, frame):
        if not stopping:
            stopping.append(signum)
            quick_stop(signum, frame)

    signal.signal(signal.SIGINT, handle_quit_once)
    signal.signal(signal.SIGQUIT, handle_quit_once)


def on_shutdown(listener) -> None:
    """`listener(graceful_timeout)` runs when this worker starts its graceful stop."""
    _on_shutdown.append(listener)


def shutting_down() -> bool:
    return _worker is not None and not _worker.alive
