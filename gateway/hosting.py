"""How this process is hosted, for the status page: the WSGI server, its concurrency model, and
whether the numbers shown are every worker's or this process's alone.

Read from the WSGI environ of the request asking, so it is true under any server (gunicorn,
waitress, uWSGI, mod_wsgi). Imports neither Flask nor gevent: whether gevent has patched the
standard library is asked only when gevent is already loaded.
"""

import functools
import os
import sys
from importlib import metadata


def describe_server(environ) -> dict:
    """{"software": "gunicorn 27.0.1", "worker": "gevent" | "threads" | "sync", "figures": ...}"""
    return {"software": _software(environ), "worker": _worker(environ), "figures": figures()}


def figures() -> str:
    """Whose numbers /metrics and the status page show: prometheus_client adds up every worker's
    only in multiprocess mode, which PROMETHEUS_MULTIPROC_DIR turns on (gunicorn.conf.py sets it)."""
    return "all workers" if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else "this process"


def _worker(environ) -> str:
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("socket"):
        return "gevent"
    # gunicorn's gevent worker also says multithread; without patching, threads are what serve.
    if environ.get("wsgi.multithread"):
        return "threads"
    return "sync"


def _software(environ) -> str:
    if "uwsgi.version" in environ:  # uWSGI sets no SERVER_SOFTWARE
        version = environ["uwsgi.version"]
        return f"uWSGI {version.decode() if isinstance(version, bytes) else version}"
    if "mod_wsgi.version" in environ:
        return "mod_wsgi " + ".".join(str(part) for part in environ["mod_wsgi.version"])
    software = environ.get("SERVER_SOFTWARE")
    if not software:
        return "unknown"
    if "/" not in software and " " not in software:  # waitress says only its name
        return _with_version(software)
    return software.replace("/", " ")  # "gunicorn/27.0.1" -> "gunicorn 27.0.1"


@functools.lru_cache(maxsize=8)  # reading package metadata costs a directory scan
def _with_version(name: str) -> str:
    try:
        return f"{name} {metadata.version(name)}"
    except (metadata.PackageNotFoundError, ValueError):
        return name
