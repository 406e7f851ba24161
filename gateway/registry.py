"""The models and backends one worker serves, built once from the config: `ModelRegistry`."""

import os
import time

from .backends import Backend, build_backend
from .backends.strategies import Ordered, strategy_for
from .config import Config, ModelConfig
from .errors import ModelNotFound, WrongModelKind

_KIND_WORDS = {"chat": "a chat model", "embeddings": "an embeddings model"}
_ENDPOINT = {"chat": "/v1/chat/completions", "embeddings": "/v1/embeddings"}


class ModelRegistry:
    def __init__(self, config: Config, on_slot_change=None, on_cooldown=None):
        """`on_slot_change(backend_name)` gives the callback a backend calls with +1/-1 as its
        slots are taken and freed (the in-flight metric); `on_cooldown(backend_name)` the one its
        circuit breaker calls as it opens and closes. None counts nothing outside."""
        self.config = config
        self.settings = config.gateway
        # A backend never has more requests in flight per worker than max_concurrency, so that
        # is all the pooled connections it can use.
        self.backends = {
            name: build_backend(
                cfg, cfg.max_concurrency, on_slot_change(name) if on_slot_change else None, on_cooldown(name) if on_cooldown else None
            )
            for name, cfg in config.backends.items()
        }
        # Each configured model's routing strategy (backends/strategies.py): the order of its
        # backends for one request. A discovered model has one backend, so `ordered`.
        self.routes = {
            model.id: strategy_for(model.strategy, [self.backends[name] for name in model.backends]) for model in config.models.values()
        }
        self.health = None  # the health probes' verdicts as this worker applies them (backends/health.py)
        # Set by gunicorn.conf.py in the master, so every worker tells the same uptime and the
        # same `created` for the models; without gunicorn, this process's start.
        self.started = float(os.environ.get("GATEWAY_STARTED_AT") or time.time())
        # Models the backends list themselves (discovery.py), replaced whole at each refresh;
        # configured ids never appear here.
        self.discovered = {}
        self.discovery = None  # the refresher, when a backend has discover_models

    def model(self, model_id: str) -> ModelConfig:
        found = self.config.models.get(model_id) or self.discovered.get(model_id)
        if found is None:
            raise ModelNotFound(
                f"The model '{model_id}' does not exist on this gateway; GET /v1/models lists the ones it serves.",
                param="model",
            )
        return found

    def listed_models(self) -> list:
        """What /v1/models lists: the configured models in file order, then the discovered ones."""
        return [*self.config.models.values(), *self.discovered.values()]

    def require_kind(self, model: ModelConfig, kind: str, path: str | None = None) -> None:
        """A 400 naming the model's kind when it is not served by this endpoint's `kind` (`path`:
        where the request went, /v1/responses serves chat models too)."""
        if model.kind != kind:
            raise WrongModelKind(
                f"The model '{model.id}' is {_KIND_WORDS[model.kind]}: send it to {_ENDPOINT[model.kind]}, not {path or _ENDPOINT[kind]}.",
                param="model",
            )

    def backends_for(self, model: ModelConfig) -> list[Backend]:
        """The model's backends, in the config's order."""
        return [self.backends[name] for name in model.backends]

    def route(self, model: ModelConfig, asker: dict, body: dict) -> tuple:
        """(the model's backends in the order this request tries them, what its strategy keyed
        the choice on or None), and the strategy (backends/strategies.py)."""
        strategy = self.routes.get(model.id)
        if strategy is None:  # discovered
            strategy = Ordered(self.backends_for(model))
        order, key = strategy.route(asker, body)
        return order, key, strategy

    def close(self) -> None:
        if self.discovery is not None:
            self.discovery.stop()
        if self.health is not None:
            self.health.stop()
        for backend in self.backends.values():
            backend.close()
