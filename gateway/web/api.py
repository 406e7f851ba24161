"""The OpenAI-compatible API blueprint: /chat/completions and /models (served with and without /v1).

The chat view reads like the contract: validate, pick the model and its backend, build the
backend call, take a slot, then answer with one JSON completion or a stream.
"""

from flask import Blueprint, g, request

from ..chat.request_schema import validate_chat_request
from ..streaming.chat_stream import ChatStream
from ..upstream.call import build_call
from ..upstream.identity import who_is_asking
from .access import require_api_key
from . import off_loop
from .request_body import parse_json, read_body
from .responses import json_response, registry, sse_response

bp = Blueprint("api", __name__)
bp.before_request(require_api_key)

def parse_chat_request(raw: bytes) -> dict:
    return validate_chat_request(parse_json(raw))


@bp.post("/chat/completions")
def chat_completions():
    models, record = registry(), g.record
    record.chat = True
    raw = read_body(models.settings)
    chat = off_loop.run_if_large(len(raw), parse_chat_request, raw)
    model = models.model(chat["model"])
    models.require_kind(model, "chat")  # an embeddings model is a 400 here, naming its kind
    backend = models.backend_for(model)
    record.model, record.backend, record.stream = model.id, backend.name, bool(chat.get("stream"))
    settings = models.settings
    asker = who_is_asking(request.headers, chat, settings.user_jwt_secret, settings.user_jwt_leeway)
    call = off_loop.run_if_large(len(raw), build_call, chat, model, backend.config, asker, g.request_id)
    slot = backend.acquire()  # 429 when the backend already has max_concurrency in flight here

    if not record.stream:
        try:
            completion = backend.complete(call)
        finally:
            slot.release()
        record.note_usage(completion.get("usage"))
        return json_response(completion)

    stream = ChatStream(
        backend.events(call),
        slot.release,
        heartbeat=settings.heartbeat_seconds,
        record=record,
        secrets=models.config.secrets,
        client_socket=request.environ.get("gunicorn.socket"),
        stalled_after=settings.stalled_client_seconds,
    )
    stream.start()  # the first event or heartbeat: a failure by then is still a real HTTP status
    return sse_response(stream)


def _model_entry(model, created: int) -> dict:
    entry = {"id": model.id, "object": "model", "created": created, "owned_by": "llm-gateway"}
    if model.name:
        entry["name"] = model.name
    return entry


@bp.get("/models")
def list_models():
    models = registry()
    created = int(models.started)
    return json_response({"object": "list", "data": [_model_entry(m, created) for m in models.listed_models()]})


@bp.get("/models/<path:model_id>")
def get_model(model_id):
    models = registry()
    return json_response(_model_entry(models.model(model_id), int(models.started)))
