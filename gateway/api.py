"""The OpenAI-compatible API blueprint: /chat/completions and /models (served with and without /v1)."""

import json

from flask import Blueprint, Response, current_app, g, request

from .completions import completion_chunks
from .errors import InvalidRequest
from .forwarding import build_call
from .identity import client_values
from .jsonio import dumps
from .runtime import Gateway
from .schemas import validate_chat_request
from .streams import ClientWatch, EventSource, sse_body

bp = Blueprint("api", __name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
STALLED_CLIENT_SECONDS = 60  # a streaming client that accepts no bytes for this long is dropped


def gateway() -> Gateway:
    return current_app.extensions["gateway"]


def json_response(data, status=200) -> Response:
    return Response(dumps(data), status=status, mimetype="application/json")


def _request_json():
    raw = request.get_data(cache=False)  # over max_request_bytes: Werkzeug raises 413 here
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        reason = "it is not UTF-8" if isinstance(exc, UnicodeDecodeError) else "it is not valid JSON"
        if isinstance(exc, RecursionError):
            reason = "it is nested too deeply"
        raise InvalidRequest(f"Invalid request: the body could not be read as JSON: {reason}.") from None


@bp.before_request
def require_api_key():
    current_app.extensions["api_keys"].check(request.headers.get("Authorization"))


@bp.post("/chat/completions")
def chat_completions():
    gw = gateway()
    record = g.record
    record.chat = True
    chat = validate_chat_request(_request_json())
    model = gw.model(chat["model"])
    backend = gw.backend_for(model)
    record.model, record.backend, record.stream = model.id, backend.name, bool(chat.get("stream"))
    values = client_values(request.headers, chat, gw.settings.user_jwt_secret)
    values["request_id"] = g.request_id
    call = build_call(chat, model, backend.config, values)
    slot = backend.acquire()  # 429 when the backend already has max_concurrency in flight here

    if not record.stream:
        try:
            completion = backend.complete(call)
        finally:
            slot.release()
        record.note_usage(completion.get("usage"))
        return json_response(completion)

    return _stream(gw, backend, call, slot, record)


def _stream(gw: Gateway, backend, call, slot, record) -> Response:
    """The SSE response. The backend call starts at once; the first heartbeat is awaited here,
    so a failure by then is still a real HTTP status."""
    if backend.streaming:
        produce = lambda: backend.stream(call)  # noqa: E731
    else:
        produce = lambda: completion_chunks(backend.complete(call), call.include_usage)  # noqa: E731
    source = EventSource(produce, slot.release)
    heartbeat = gw.settings.heartbeat_seconds
    client_socket = request.environ.get("gunicorn.socket")
    cleanups = [source.close]  # a body generator that never started does not run its `finally`
    if client_socket is not None:
        # Watched from now on, the first wait included: a client gone early stops the backend too.
        cleanups.append(ClientWatch(client_socket, source.abandon).stop)
        # gunicorn's gevent worker writes with no timeout: a client that stops reading without
        # closing would hold the stream, its backend connection and its slot until TCP gives up.
        client_socket.settimeout(max(STALLED_CLIENT_SECONDS, 3 * heartbeat))
        cleanups.append(lambda: client_socket.settimeout(None))
    try:
        first = source.next(heartbeat)
    except BaseException:
        for cleanup in cleanups:
            cleanup()
        raise
    response = Response(sse_body(source, first, heartbeat, record, gw.config.secrets), mimetype="text/event-stream", headers=SSE_HEADERS)
    for cleanup in cleanups:
        response.call_on_close(cleanup)
    return response


def _model_entry(model, created: int) -> dict:
    entry = {"id": model.id, "object": "model", "created": created, "owned_by": "llm-gateway"}
    if model.name:
        entry["name"] = model.name
    return entry


@bp.get("/models")
def list_models():
    gw = gateway()
    created = int(gw.started)
    return json_response({"object": "list", "data": [_model_entry(m, created) for m in gw.config.models.values()]})


@bp.get("/models/<path:model_id>")
def get_model(model_id):
    gw = gateway()
    return json_response(_model_entry(gw.model(model_id), int(gw.started)))
