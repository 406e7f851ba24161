"""The OpenAI-compatible API blueprint: /chat/completions and /models (served with and without /v1).

The chat view reads like the contract: validate, pick the model and its backend, build the
backend call, take a slot, then answer with one JSON completion or a stream.
"""

from flask import Blueprint, Response, g, request

from ..chat.request_schema import validate_chat_request
from ..concurrency import run_if_large
from ..streaming.chat_stream import ChatStream
from ..streaming.client_watch import ClientLeft, abandoned_if_client_leaves
from ..telemetry.record import CLIENT_GONE
from ..upstream.call import build_call
from ..errors import ModelNotFound
from .access import caller, require_api_key
from .request_body import parse_json, read_body
from .responses import answered_by, json_response, registry, sse_response
from .routing import attempts_for

bp = Blueprint("api", __name__)
bp.before_request(require_api_key)

def parse_chat_request(raw: bytes) -> dict:
    return validate_chat_request(parse_json(raw))


@bp.post("/chat/completions")
def chat_completions():
    models, record = registry(), g.record
    settings = models.settings
    record.counted = True
    record.endpoint = "chat"
    raw = read_body(settings)
    chat = run_if_large(len(raw), parse_chat_request, raw)
    record.stream = bool(chat.get("stream"))
    attempts = attempts_for(chat, len(raw), "chat", build_call)

    if not record.stream:
        try:
            # Open WebUI's title and tag tasks are such calls: when their client leaves, the
            # backend request is closed at once instead of computing an answer nobody reads.
            with abandoned_if_client_leaves(request.environ.get("gunicorn.socket")):
                completion = attempts.complete()
        except ClientLeft:
            record.outcome = CLIENT_GONE
            return Response(status=499)  # nobody reads it: the server's write fails quietly
        record.note_usage(completion.get("usage"))
        return answered_by(json_response(completion), attempts)

    stream = ChatStream(
        attempts.events(),
        heartbeat=settings.heartbeat_seconds,
        record=record,
        secrets=models.config.secrets,
        client_socket=request.environ.get("gunicorn.socket"),
        stalled_after=settings.stalled_client_seconds,
    )
    stream.start()  # the first event or heartbeat: a failure by then is still a real HTTP status
    return answered_by(sse_response(stream), attempts)


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
