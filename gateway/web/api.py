"""The OpenAI-compatible API blueprint: /chat/completions and /models (served with and without /v1).

The chat view reads like the contract: validate, pick the model and its backend, build the
backend call, take a slot, then answer with one JSON completion or a stream.
"""

from flask import Blueprint, Response, g, request

from ..chat.request_schema import validate_chat_request
from ..limits.web import admit_request
from ..streaming.chat_stream import ChatStream
from ..streaming.client_watch import ClientLeft, abandoned_if_client_leaves
from ..telemetry.record import CLIENT_GONE
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
    backend = models.backend_for(model)
    record.model, record.backend, record.stream = model.id, backend.name, bool(chat.get("stream"))
    settings = models.settings
    asker = who_is_asking(request.headers, chat, settings.user_jwt_secret, settings.user_jwt_leeway)
    call = off_loop.run_if_large(len(raw), build_call, chat, model, backend.config, asker, g.request_id)
    admit_request(asker, backend)  # [limits] (gateway/limits/): 429 user_rate_limit, or 503 while Redis is away ("closed")
    slot = backend.acquire()  # 429 when the backend already has max_concurrency in flight here

    if not record.stream:
        try:
            # Open WebUI's title and tag tasks are such calls: when their client leaves, the
            # backend request is closed at once instead of computing an answer nobody reads.
            with abandoned_if_client_leaves(request.environ.get("gunicorn.socket")):
                completion = backend.complete(call)
        except ClientLeft:
            record.outcome = CLIENT_GONE
            return Response(status=499)  # nobody reads it: the server's write fails quietly
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
    return json_response({"object": "list", "data": [_model_entry(m, created) for m in models.config.models.values()]})


@bp.get("/models/<path:model_id>")
def get_model(model_id):
    models = registry()
    return json_response(_model_entry(models.model(model_id), int(models.started)))
