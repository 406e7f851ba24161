"""The worker's life: whether it is shutting down (readiness turns 503), set by gunicorn's hook."""

_worker = None


def attach_worker(worker) -> None:
    """Called from gunicorn.conf.py's post_worker_init, in the worker process."""
    global _worker
    _worker = worker


def shutting_down() -> bool:
    return _worker is not None and not _worker.alive
