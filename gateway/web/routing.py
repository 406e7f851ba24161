"""From a validated request to its `Attempts`, the same for chat, embeddings and the Responses API
(whose request is a chat request by then): the model and its kind, who is asking, the order its
backends are tried in (the model's strategy), its key's models, the limits and budgets, and a backend call built fresh
for each attempt."""

from flask import g, request

from ..backends.failover import Attempts
from ..concurrency import run_if_large
from ..errors import ModelNotAllowed
from ..limits.web import admit_request
from ..telemetry import metrics
from ..upstream.identity import who_is_asking
from ..usage.ledger import user_of
from .access import caller
from .responses import registry


def attempts_for(body: dict, raw_size: int, kind: str, build) -> Attempts:
    """`build(body, model, backend_config, asker, request_id)` makes one attempt's backend call
    (large bodies are serialised off the event loop)."""
    models, record = registry(), g.record
    settings = models.settings
    model = models.model(body["model"])
    record.model, record.backend, record.upstream_of = model.id, model.backend, model.upstream_for
    models.require_kind(model, kind, request.path)  # a model of the other kind is a 400, naming its kind
    who = caller()
    if who.named is not None and not who.named.allows(model.id):
        raise ModelNotAllowed(
            f"The API key '{who.named.name}' may not use the model '{model.id}'; GET /v1/models lists the ones it may use.",
            param="model",
        )
    asker = who_is_asking(request.headers, body, settings.user_jwt_secret, settings.user_jwt_leeway)
    record.user = user_of(asker, who.label, request.remote_addr)  # whom the usage ledger counts it for
    request_id = g.request_id  # a stream's attempts run outside the request context

    def call_for(backend):  # per attempt: fresh {uuid}s, the backend's own upstream name
        return run_if_large(raw_size, build, body, model, backend.config, asker, request_id)

    # The model's strategy orders its backends for this request (backends/strategies.py).
    backends, key, strategy = models.route(model, asker, body)
    record.backend = backends[0].name
    if len(backends) > 1:
        record.route = (strategy.name, backends, key)
    # [limits], the key's requests_per_minute and the budgets (gateway/limits/, gateway/usage/): 429,
    # or 503 while Redis is away ("closed"); the first backend's global slot is taken in the same
    # round trip, for its first attempt.
    admit_request(asker, backends[0], who, record.user)
    record.attempts = Attempts(
        model.id, backends, call_for, on_failover=lambda name: metrics.count_failover(model.id, name), on_call_ended=metrics.call_ended
    )
    return record.attempts
