"""Backends: where a model's requests go. Each kind implements `Backend`; `build_backend` picks one.

The HTTP backend (`http.py`) is imported only when a config names one, and only inside a worker,
after gevent has patched the standard library.
"""

from ..config import BackendConfig
from .base import Backend


def build_backend(config: BackendConfig, pool_size: int) -> Backend:
    if config.url.startswith("demo:"):
        from .demo import EchoBackend

        return EchoBackend(config)
    from .http import HttpBackend

    return HttpBackend(config, pool_size)
