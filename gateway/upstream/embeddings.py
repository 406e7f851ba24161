"""One backend call for one Embeddings request: the body and the headers, as `call.py` builds chat's.

The client's fields go as sent, with `model` mapped to the model's `upstream` name and the
backend's `drop_params` removed; headers come from the same templates as chat (who is asking,
the request id, the model). What the answer must hold is noted here too: how many embeddings,
and in which form the client wants them.
"""

import dataclasses
import json

from ..config import BackendConfig, ModelConfig
from ..embeddings.answers import input_items
from ..errors import InvalidRequest
from .headers import HeaderTooLong

_SOURCE_OF = {"user.id": "user", "model": "model"}  # as in call.py: the `param` of a 400 about a value


@dataclasses.dataclass(slots=True)
class EmbeddingsCall:
    body: dict  # the JSON body for the backend
    data: bytes  # the same, serialized once
    headers: dict  # rendered from the backend's templates
    model_id: str  # the model id the client picked (not the upstream name)
    expected: int  # how many embeddings a valid answer holds
    wants_base64: bool  # the client asked for encoding_format "base64"


def build_embeddings_call(request: dict, model: ModelConfig, backend: BackendConfig, asker: dict, request_id: str) -> EmbeddingsCall:
    """The backend's request for a validated Embeddings request (the client's dict is not changed)."""
    body = dict(request)
    body["model"] = model.upstream_for(backend.name)
    for name in backend.drop_params:
        body.pop(name, None)
    try:
        data = json.dumps(body, separators=(",", ":")).encode("ascii")
    except RecursionError:
        raise InvalidRequest("Invalid request: the body is nested too deeply.") from None
    values = {**asker, "request_id": request_id, "model": model.id}
    try:
        headers = backend.headers.render(values)
    except HeaderTooLong as exc:
        raise InvalidRequest(f"Invalid request: {exc}.", param=_SOURCE_OF.get(exc.placeholders[0])) from None
    wants_base64 = request.get("encoding_format") == "base64"
    return EmbeddingsCall(body, data, headers, model.id, len(input_items(request["input"])), wants_base64)
