"""The Responses API blueprint: POST /responses, GET and DELETE /responses/<id> (with and without /v1).

It reads like the chat view, because it is the chat view with a translation on each side:
validate, find the conversation (stored history, item references), turn it into a chat request
(gateway/responses/to_chat.py), then the chat path as it is: the model, its backends in order,
limits, a slot, one JSON answer or a `ChatStream`, whose framing is the Responses events
(gateway/responses/events.py). The final Response is stored, unless the request said
`store: false`, before the client gets its last byte. (`web/responses.py` is something else: the
JSON and SSE responses every view answers with.)
"""

from flask import Blueprint, Flask, current_app, g, request

from ..concurrency import run_if_large
from ..errors import NotFound
from ..responses.events import ResponseEvents
from ..responses.from_chat import response_from_completion, response_shell
from ..responses.request_schema import ignored_fields, unknown_fields, validate_responses_request
from ..responses.store import Stored, conversation, open_store, owner_of
from ..responses.to_chat import chat_request, input_items
from ..upstream.call import build_call
from ..upstream.identity import who_is_asking
from .access import require_api_key
from .request_body import read_request
from .responses import answered_by, json_response, nobody_reads, registry, sse_response, started_stream, whole_answer
from .routing import attempts_for

bp = Blueprint("responses_api", __name__)
bp.before_request(require_api_key)


def init_app(app: Flask, config) -> None:
    """This worker's response store: Redis through the limits' client when redis_url is set."""
    app.extensions["response_store"] = open_store(config.gateway, app.extensions["limits"].store)


@bp.post("/responses")
def create_response():
    record = g.record
    raw, body = read_request(record, registry().settings, "responses", validate_responses_request)
    record.stream = bool(body.get("stream"))
    record.unknown_fields, record.ignored_fields = unknown_fields(body), ignored_fields(body)
    registry().model(body["model"])  # an unknown model is a 404 before any stored history is looked up
    store, owner = _store(), _owner()
    items = conversation(store, body, owner)
    bridge = run_if_large(len(raw), chat_request, body, items)
    record.dropped_tools = bridge.dropped_tools
    attempts = attempts_for(bridge.chat, len(raw), "chat", build_call)
    storing = store.storing and body.get("store") is not False  # Codex sends store: false
    shell = response_shell(body, stored=storing)
    own_input = items[len(items) - len(input_items(body)):]

    def keep(response: dict) -> None:  # before the client has the answer: it may continue at once
        if storing:
            store.save(Stored(response, items), owner, own_input)

    if not record.stream:
        completion = whole_answer(attempts, record)
        if completion is None:
            return nobody_reads()
        response = response_from_completion(completion, shell, bridge.tools)
        keep(response)
        return answered_by(json_response(response), attempts)

    events = ResponseEvents(shell, bridge.tools, on_finished=keep, backend_name=lambda: getattr(attempts.answered_by, "name", "?"))
    return answered_by(sse_response(started_stream(attempts, record, framing=events)), attempts)


@bp.get("/responses/<response_id>")
def get_response(response_id):
    stored = _store().load(response_id, _owner())
    if stored is None:
        raise _not_found(response_id)
    return json_response(stored.response)


@bp.delete("/responses/<response_id>")
def delete_response(response_id):
    if not _store().delete(response_id, _owner()):
        raise _not_found(response_id)
    return json_response({"id": response_id, "object": "response.deleted", "deleted": True})


def _store():
    return current_app.extensions["response_store"]


def _owner() -> str:
    """Whose stored responses this request may see: its key and the user its headers name."""
    settings = registry().settings
    asker = who_is_asking(request.headers, {}, settings.user_jwt_secret, settings.user_jwt_leeway)
    return owner_of(asker, request.headers.get("Authorization"), request.remote_addr)


def _not_found(response_id: str) -> NotFound:
    return NotFound(
        f"No response '{response_id}' is stored for you: it is unknown, expired or deleted, or another key or user created it.",
        code="response_not_found",
    )
