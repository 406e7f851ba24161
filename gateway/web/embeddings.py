"""The Embeddings blueprint: POST /embeddings (served with and without /v1), for Open WebUI's
document search (RAG) and the openai SDK's `embeddings.create`.

It reads like the chat view: validate, pick the model (an `embeddings` one) and its backend,
build the backend call, take a slot, relay the answer. Limits, errors, the access log and the
metrics are the chat path's own.
"""

from flask import Blueprint, g, request

from ..embeddings.request_schema import validate_embeddings_request
from ..errors import (
    BackendAuthRejected,
    BackendError,
    BackendInvalidAnswer,
    BackendRateLimited,
    BackendRedirected,
    BackendRejected,
    BackendServerError,
)
from ..upstream.embeddings import build_embeddings_call
from ..upstream.identity import who_is_asking
from . import off_loop
from .access import require_api_key
from .request_body import parse_json, read_body
from .responses import json_response, registry

bp = Blueprint("embeddings", __name__)
bp.before_request(require_api_key)

BACKEND_HEADER = "X-Gateway-Backend"
# Failures that are a backend's own answer (it sent a status, or a body we could not use), as
# opposed to no answer at all (refused, timed out, TLS): only those name the backend in a header.
_BACKEND_ANSWERED = (
    BackendAuthRejected, BackendInvalidAnswer, BackendRateLimited, BackendRedirected, BackendRejected, BackendServerError,
)


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
    backend = models.backend_for(model)
    record.model, record.backend = model.id, backend.name
    settings = models.settings
    asker = who_is_asking(request.headers, body, settings.user_jwt_secret, settings.user_jwt_leeway)
    call = off_loop.run_if_large(len(raw), build_embeddings_call, body, model, backend.config, asker, g.request_id)
    slot = backend.acquire()  # 429 when the backend already has max_concurrency in flight here
    try:
        answer = backend.embed(call)
    except BackendError as error:
        if isinstance(error, _BACKEND_ANSWERED):
            error.headers[BACKEND_HEADER] = backend.name
        raise
    finally:
        slot.release()
    record.note_usage(answer.get("usage"))
    response = json_response(answer)
    response.headers[BACKEND_HEADER] = backend.name
    return response
