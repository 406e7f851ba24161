"""The OpenAI-compatible API blueprint: /chat/completions and /models (served with and without /v1).

The chat view reads like the contract: validate, pick the model and its backend, build the
backend call, take a slot, then answer with one JSON completion or a stream.
"""

from flask import Blueprint, g

from ..chat.request_schema import validate_chat_request
from ..upstream.call import build_call
from ..errors import ModelNotFound
from .access import caller, require_api_key
from .request_body import read_request
from .responses import answered_by, json_response, nobody_reads, registry, sse_response, started_stream, whole_answer
from .routing import attempts_for

bp = Blueprint("api", __name__)
bp.before_request(require_api_key)

@bp.post("/chat/completions")
def chat_completions():
    record = g.record
    raw, chat = read_request(record, registry().settings, "chat", validate_chat_request)
    record.stream = bool(chat.get("stream"))
    attempts = attempts_for(chat, len(raw), "chat", build_call)

    if not record.stream:
        completion = whole_answer(attempts, record)
        if completion is None:
            return nobody_reads()
        return answered_by(json_response(completion), attempts)
    return answered_by(sse_response(started_stream(attempts, record)), attempts)


def _model_entry(model, created: int) -> dict:
    entry = {"id": model.id, "object": "model", "created": created, "owned_by": "llm-gateway"}
    if model.name:
        entry["name"] = model.name
    return entry


@bp.get("/models")
def list_models():
    """Every model, or a named key's `models` only ([keys.NAME])."""
    models, key = registry(), caller().named
    created = int(models.started)
    listed = [m for m in models.listed_models() if key is None or key.allows(m.id)]
    return json_response({"object": "list", "data": [_model_entry(m, created) for m in listed]})


@bp.get("/models/<path:model_id>")
def get_model(model_id):
    models, key = registry(), caller().named
    if key is not None and not key.allows(model_id):  # as it is for that key: not there
        raise ModelNotFound(f"The model '{model_id}' is not available to the API key '{key.name}'; GET /v1/models lists the ones it may use.", param="model")
    return json_response(_model_entry(models.model(model_id), int(models.started)))
