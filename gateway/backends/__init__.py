"""Backends: where a model's requests go. Each kind implements `Backend` (base.py).

- `http.py`         a real endpoint, called with requests (`transport.py` sets up its session,
                    `wire_errors.py` translates what goes wrong)
- `demo.py`         the built-in echo model (`url = "demo://echo"`), and deterministic embeddings
- `failover.py`     one request's way through a model's backends, in order
- `strategies.py`   the order a model's backends are tried in, per request (its `strategy`)
- `health.py`       active health checks: one prober per instance, verdicts shared by file
- `breaker.py`      each backend's circuit breaker (held out, too, by failing health checks)
- `silence.py`      read_timeout for relayed streams under gevent, from one watchdog per worker

The HTTP backend is imported only when a config names one, and only inside a worker, after
gevent has patched the standard library.
"""

from ..config import BackendConfig
from .base import Backend


def build_backend(config: BackendConfig, pool_size: int, on_slot_change=None, on_cooldown=None) -> Backend:
    if config.url.startswith("demo:"):
        from .demo import EchoBackend

        return EchoBackend(config, on_slot_change, on_cooldown)
    from .http import HttpBackend

    return HttpBackend(config, pool_size, on_slot_change, on_cooldown)
