"""A backend's Embeddings answer: is it one, and the form the client asked for.

Open WebUI reads `data[i].embedding` in list order and pairs it with its i-th text chunk, so an
answer with the wrong number of embeddings, or indexes that do not match the inputs, would put
wrong vectors in a document index without any error: that is an invalid answer (502), never
relayed. Items are returned in `index` order.

`encoding_format = "base64"` means little-endian float32 bytes, base64-encoded (what OpenAI and
the openai SDK use). Many in-house servers ignore the field, or reject it and have it in
`drop_params`; the client still gets the form it asked for.
"""

import base64
import binascii
import struct


def input_items(inputs) -> list:
    """The inputs of a valid request's `input`, one per embedding it asks for."""
    if isinstance(inputs, str) or not isinstance(inputs[0], (str, list)):
        return [inputs]  # one string, or one list of token ids
    return inputs


def _is_number(value) -> bool:
    # type() rather than isinstance: twice as fast over a million values, and True is no number here
    return type(value) is float or type(value) is int


def embeddings_problem(data, expected: int) -> str | None:
    """What makes `data` not a usable answer for `expected` inputs, or None if it is one."""
    if not isinstance(data, dict):
        return "is not a JSON object"
    items = data.get("data")
    if not isinstance(items, list):
        return "has no data list"
    if len(items) != expected:
        return f"has {len(items)} embeddings for {expected} inputs"
    for item in items:
        if not isinstance(item, dict):
            return "has a data item that is not an object"
        embedding = item.get("embedding")
        if isinstance(embedding, list):
            if not all(_is_number(value) for value in embedding):
                return "has an embedding that is not a list of numbers"
        elif not isinstance(embedding, str):
            return "has a data item without an embedding (a list of numbers or a base64 string)"
    indexes = [item.get("index") for item in items]
    if all(type(i) is int for i in indexes) and not _in_order(indexes) and not _permutation(indexes):
        return "has data items whose indexes do not match the inputs"
    return None


# Loops in Python rather than one sort: a C call over half a million items would hold the GIL
# throughout (answers this large are checked in a thread, which must let the event loop run).


def _in_order(indexes: list) -> bool:
    """Whether the indexes are 0, 1, 2, ... (what every backend we know sends)."""
    return all(index == position for position, index in enumerate(indexes))


def _permutation(indexes: list) -> bool:
    """Whether the indexes are 0..n-1, each once, in some order."""
    seen = bytearray(len(indexes))
    for index in indexes:
        if not 0 <= index < len(seen) or seen[index]:
            return False
        seen[index] = 1
    return True


def _as_base64(vector: list) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def _as_floats(text: str) -> list | None:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) % 4:
        return None
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def answer_size(answer: dict) -> int:
    """About how many bytes the answer makes as JSON, without writing it: items × the first one."""
    items = answer["data"]
    if not items:
        return 0
    first = items[0]["embedding"]
    return len(items) * (64 + (len(first) if isinstance(first, str) else 12 * len(first)))


def complete_embeddings(data: dict, model_id: str, wants_base64: bool) -> tuple[dict | None, str | None]:
    """The answer as the client gets it: in index order, each embedding in the form asked for,
    what a lax backend left out filled in. Returns (answer, None), or (None, problem)."""
    items = data["data"]
    if all(isinstance(item.get("index"), int) for item in items):
        if not _in_order([item["index"] for item in items]):
            items = sorted(items, key=lambda item: item["index"])
    answer_items = []
    for position, item in enumerate(items):
        embedding = item["embedding"]
        if wants_base64 and isinstance(embedding, list):
            embedding = _as_base64(embedding)
        elif not wants_base64 and isinstance(embedding, str):
            embedding = _as_floats(embedding)
            if embedding is None:
                return None, "has an embedding that is not base64-encoded float32 values"
        answer_items.append({**item, "object": "embedding", "index": position, "embedding": embedding})
    answer = {
        "object": "list",
        "model": model_id,  # the id the client asked for; the backend's own name is in the access log
        **{k: v for k, v in data.items() if k not in ("object", "model", "data")},
        "data": answer_items,
    }
    return answer, None
