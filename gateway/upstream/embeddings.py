"""One backend call for one Embeddings request: the body and the headers, as `call.py` builds chat's.

The client's fields go as sent, with `model` mapped to the model's `upstream` name and the
backend's `drop_params` removed; headers come from the same templates as chat (who is asking,
the request id, the model). What the answer must hold is noted here too: how many embeddings,
and in which form the client wants them.
"""

import dataclasses

from ..config import BackendConfig, ModelConfig
from ..embeddings.answers import input_items
from .call import rendered_headers, serialized



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
    data, headers = serialized(body), rendered_headers(backend, model, asker, request_id)
    wants_base64 = request.get("encoding_format") == "base64"
    return EmbeddingsCall(body, data, headers, model.id, len(input_items(request["input"])), wants_base64)
