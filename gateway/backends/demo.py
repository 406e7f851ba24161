"""The built-in demo backend: echoes the conversation back, streaming word by word, and gives
each embeddings input a small vector made from its hash (the same text, the same vector).

It goes through the same pipeline as every other backend (schema, upstream call, streams,
errors), so `make run` on a fresh machine shows the gateway working end to end before any config
exists.
"""

import hashlib
import json

from ..chat.answers import complete_envelope
from ..chat.chunks import chunk, chunk_head, usage_chunk
from ..embeddings.answers import complete_embeddings, input_items
from ..upstream.call import UpstreamCall
from ..upstream.conversation import text_of
from .base import Backend

DEMO_DIMENSIONS = 16


class EchoBackend(Backend):
    def _reply(self, call: UpstreamCall) -> str:
        messages = call.body["messages"]
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        said = text_of(last_user.get("content")) if last_user else ""
        return (
            f"Hello from the llm-gateway demo. I received {len(messages)} message(s) for model "
            f"'{call.model_id}'. You said: {said}"
        )

    def _usage(self, call: UpstreamCall, reply: str) -> dict:
        prompt = sum(len(text_of(m.get("content")).split()) for m in call.body["messages"])
        completion = len(reply.split())
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def complete(self, call: UpstreamCall) -> dict:
        reply = self._reply(call)
        answer = {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
            "usage": self._usage(call, reply),
        }
        return complete_envelope(answer, call.model_id)

    def stream(self, call: UpstreamCall):
        reply = self._reply(call)
        head = chunk_head(call.model_id)
        yield chunk(head, {"role": "assistant", "content": ""})
        words = reply.split(" ")
        for position, word in enumerate(words):
            yield chunk(head, {"content": word if position == len(words) - 1 else word + " "})
        yield chunk(head, {}, "stop")
        if call.include_usage:
            yield usage_chunk(head, self._usage(call, reply))

    def embed(self, call) -> dict:
        items = input_items(call.body["input"])
        data = []
        for index, item in enumerate(items):
            digest = hashlib.sha256(json.dumps(item).encode()).digest()
            data.append({"object": "embedding", "index": index, "embedding": [round(b / 255 - 0.5, 4) for b in digest[:DEMO_DIMENSIONS]]})
        tokens = sum(len(i.split()) if isinstance(i, str) else len(i) if isinstance(i, list) else 1 for i in items)
        answer = {"object": "list", "model": call.model_id, "data": data, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        return complete_embeddings(answer, call.model_id, call.wants_base64)[0]
