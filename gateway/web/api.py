"""The OpenAI-compatible API blueprint: /chat/completions and /models (served with and without /v1).

The chat view reads like the contract: validate, pick the model and its backend, build the
backend call, take a slot, then answer with one JSON completion or a stream.
"""

from flask import Blueprint, Response, g, request

from ..backends.failover import Attempts
from ..chat.request_schema import validate_chat_request
from ..limits.web import admit_request
from ..streaming.chat_stream import ChatStream
from ..streaming.client_watch import ClientLeft, abandoned_if_client_leaves
from ..telemetry import metrics
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
    settings = models.settings
    record.chat = True
    raw = read_body(settings)
    chat = off_loop.run_if_large(len(raw), parse_chat_request, raw)
    model = models.model(chat["model"])
    models.require_kind(model, "chat")  # an embeddings model is a 400 here, naming its kind
    record.model, record.backend, record.stream = model.id, model.backend, bool(chat.get("stream"))
    asker = who_is_asking(request.headers, chat, settings.user_jwt_secret, settings.user_jwt_leeway)
    request_id = g.request_id  # a stream's attempts run outside the request context

    def call_for(backend):  # per attempt: fresh {uuid}s, the backend's own upstream name
        return off_loop.run_if_large(len(raw), build_call, chat, model, backend.config, asker, request_id)

    # [limits] (gateway/limits/): 429 user_rate_limit, or 503 while Redis is away ("closed"); the
    # first backend's global slot is taken in the same round trip, for its first attempt.
    backends = models.backends_for(model)
    admit_request(asker, backends[0])
    attempts = Attempts(model.id, backends, call_for, on_failover=lambda name: metrics.count_failover(model.id, name))
    record.attempts = attempts

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
        return _answered_by(json_response(completion), attempts)

    stream = ChatStream(
        attempts.events(),
        heartbeat=settings.heartbeat_seconds,
        record=record,
        secrets=models.config.secrets,
        client_socket=request.environ.get("gunicorn.socket"),
        stalled_after=settings.stalled_client_seconds,
    )
    stream.start()  # the first event or heartbeat: a failure by then is still a real HTTP status
    return _answered_by(sse_response(stream), attempts)


def _answered_by(response: Response, attempts: Attempts) -> Response:
    """Names the backend whose answer this is (unknown yet when a keep-alive went out first)."""
    if attempts.answered_by is not None:
        response.headers["X-Gateway-Backend"] = attempts.answered_by.name
    return response


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
