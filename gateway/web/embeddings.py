"""The Embeddings blueprint: POST /embeddings (served with and without /v1), for Open WebUI's
document search (RAG) and the openai SDK's `embeddings.create`.

It reads like the chat view: validate, pick the model (an `embeddings` one), then its backends
in order (failover, each attempt with its own call and slot), relay the first answer. Limits,
errors, the access log and the metrics are the chat path's own.
"""

from flask import Blueprint, g, request

from ..backends.failover import Attempts
from ..embeddings.request_schema import validate_embeddings_request
from ..limits.web import admit_request
from ..telemetry import metrics
from ..upstream.embeddings import build_embeddings_call
from ..upstream.identity import who_is_asking
from . import off_loop
from .access import require_api_key
from .request_body import parse_json, read_body
from .responses import json_response, registry

bp = Blueprint("embeddings", __name__)
bp.before_request(require_api_key)


def parse_embeddings_request(raw: bytes) -> dict:
    return validate_embeddings_request(parse_json(raw))


@bp.post("/embeddings")
def embeddings():
    models, record = registry(), g.record
    record.chat = True  # counted in the metrics like a chat request (the `model` label tells them apart)
    record.stream = False
    raw = read_body(models.settings)
    body = off_loop.run_if_large(len(raw), parse_embeddings_request, raw)
    model = models.model(body["model"])
    models.require_kind(model, "embeddings")  # a chat model is a 400 here, naming its kind
    record.model, record.backend = model.id, model.backend
    settings = models.settings
    asker = who_is_asking(request.headers, body, settings.user_jwt_secret, settings.user_jwt_leeway)
    request_id = g.request_id

    def call_for(backend):  # per attempt, as for chat: fresh {uuid}s, the backend's upstream name
        return off_loop.run_if_large(len(raw), build_embeddings_call, body, model, backend.config, asker, request_id)

    backends = models.backends_for(model)
    admit_request(asker, backends[0])  # [limits], as for chat
    attempts = Attempts(model.id, backends, call_for, on_failover=lambda name: metrics.count_failover(model.id, name))
    record.attempts = attempts
    answer = attempts.complete(method="embed")  # failures name the backend that answered (error_handlers)
    record.note_usage(answer.get("usage"))
    response = json_response(answer)
    response.headers["X-Gateway-Backend"] = attempts.answered_by.name
    return response
