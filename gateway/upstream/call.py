"""One backend call for one client request: the body and the headers, built in one place.

The whole conversation, in order, with every role and field; the model the user picked mapped to
its `upstream` name; the model's system prompt first in the one leading system message; sampling
and unknown fields passed on, with the model's `defaults` and `overrides` (parameters.py), minus
the backend's `drop_params`; `stream` set to what the backend is asked for, a stream's usage
asked for whether or not the client did (`usage_hidden`); tools and content
parts fitted to what the backend takes (conversation.py); headers rendered from the backend's
templates with this request's values (who is asking, its id, the model). The client's dict is
never changed: the body is a shallow copy with new values.
"""

import dataclasses

from ..config import BackendConfig, ModelConfig
from ..errors import InvalidRequest
from ..jsonio import dumps
from . import parameters
from .conversation import content_as_text, drop_tools, merge_system_prompt
from .headers import HeaderTooLong

# Where a per-request value comes from when the asker does not say, for the `param` of a 400 about it.
_SOURCE_OF = {"user.id": "user", "model": "model"}


@dataclasses.dataclass(slots=True)
class UpstreamCall:
    body: dict  # the JSON body for the backend
    data: bytes  # the same, serialized once
    headers: dict  # rendered from the backend's templates
    include_usage: bool  # the client asked for a usage chunk at the end of its stream
    model_id: str  # the model id the client picked (not the upstream name)
    usage_hidden: bool = False  # the gateway asked the backend for a usage chunk the client did not: noted, not sent

    @property
    def streams(self) -> bool:
        """Whether the backend is asked to stream (the client asked, and the backend can)."""
        return self.body["stream"]


def build_call(chat: dict, model: ModelConfig, backend: BackendConfig, asker: dict, request_id: str) -> UpstreamCall:
    """The backend's request for a validated client request. `asker` holds the values identity.py
    found for who is asking; this request's id and the model complete the template values."""
    client_stream = bool(chat.get("stream"))
    backend_stream = client_stream and backend.streaming
    body = dict(chat)
    body["model"] = model.upstream_for(backend.name)
    if model.system_prompt:
        body["messages"] = merge_system_prompt(chat["messages"], model.system_prompt)
    if backend.tools == "drop":
        drop_tools(body)
    if backend.content == "text":
        content_as_text(body)
    parameters.apply(body, model.defaults, model.overrides)  # before drop_params: what a backend rejects stays out
    for name in backend.drop_params:
        body.pop(name, None)
    body["stream"] = backend_stream
    if not backend_stream:
        # stream_options is only valid with stream: true; a non-streaming call never carries it
        body.pop("stream_options", None)
    options = chat.get("stream_options")
    include_usage = bool(client_stream and isinstance(options, dict) and options.get("include_usage"))
    usage_hidden = backend_stream and not include_usage and "stream_options" not in backend.drop_params
    if usage_hidden:
        # The usage ledger, budgets and token limits count every answer, and a streaming backend
        # reports usage only when asked (Open WebUI asks only where a model's usage capability is
        # on): asked here, its usage is noted and never sent to the client that did not ask.
        # Usage on every chunk (vLLM's continuous_usage_stats) is only for a client that asked.
        own = {k: v for k, v in options.items() if k != "continuous_usage_stats"} if isinstance(options, dict) else {}
        body["stream_options"] = {**own, "include_usage": True}
    headers = rendered_headers(backend, model, asker, request_id)
    return UpstreamCall(body, serialized(body), headers, include_usage, model.id, usage_hidden)


def without_usage_ask(call: UpstreamCall) -> UpstreamCall:
    """The same call without the `stream_options` the gateway added, for a backend that refuses
    it (a strict server that forbids unknown fields)."""
    body = {key: value for key, value in call.body.items() if key != "stream_options"}
    return dataclasses.replace(call, body=body, data=serialized(body), usage_hidden=False)


def serialized(body: dict) -> bytes:
    """The backend's JSON body: UTF-8, as RFC 8259 asks and as the openai SDK sends. A body with a
    lone surrogate (a valid JSON escape, invalid UTF-8) is sent ASCII, with escapes."""
    try:
        return dumps(body)  # with orjson; a large one in pieces (jsonio.py)
    except RecursionError:  # parsed near the recursion limit, too deep to write out again
        raise InvalidRequest("Invalid request: the body is nested too deeply.") from None


def rendered_headers(backend: BackendConfig, model: ModelConfig, asker: dict, request_id: str) -> dict:
    """The backend's headers for one call: the template values are assembled here, and only here."""
    values = {**asker, "request_id": request_id, "model": model.id}
    try:
        return backend.headers.render(values)
    except HeaderTooLong as exc:
        longest = max(exc.placeholders, key=lambda name: len(str(values.get(name) or "")))
        param = getattr(asker, "sources", {}).get(longest) or _SOURCE_OF.get(longest)
        raise InvalidRequest(f"Invalid request: {exc}.", param=param) from None
