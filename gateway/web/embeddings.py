"""The Embeddings blueprint: POST /embeddings (served with and without /v1), for Open WebUI's
document search (RAG) and the openai SDK's `embeddings.create`.

It reads like the chat view: validate, pick the model (an `embeddings` one), then its backends
in order (failover, each attempt with its own call and slot), relay the first answer. Limits,
errors, the access log and the metrics are the chat path's own.
"""

from flask import Blueprint, g

from ..embeddings.answers import answer_size
from ..embeddings.request_schema import validate_embeddings_request
from ..upstream.embeddings import build_embeddings_call
from .access import require_api_key
from .request_body import read_request
from .responses import answered_by, json_response, registry
from .routing import attempts_for

bp = Blueprint("embeddings", __name__)
bp.before_request(require_api_key)


@bp.post("/embeddings")
def embeddings():
    record = g.record
    record.stream = False
    raw, body = read_request(record, registry().settings, "embeddings", validate_embeddings_request)
    attempts = attempts_for(body, len(raw), "embeddings", build_embeddings_call)
    answer = attempts.complete(method="embed")  # failures name the backend that answered (error_handlers)
    record.note_usage(answer.get("usage"))
    return answered_by(json_response(answer, size_hint=answer_size(answer)), attempts)
