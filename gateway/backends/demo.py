"""The built-in demo backend: echoes the conversation back, streaming word by word.

It goes through the same pipeline as every other backend (schema, forwarding, streams, errors),
so `make run` on a fresh machine shows the gateway working end to end before any config exists.
"""

import time
import uuid

from ..completions import complete_envelope, usage_chunk
from ..forwarding import UpstreamCall
from ..jsonio import dumps
from .base import Backend


def _text(content) -> str:
    if isinstance(content, list):
        return " ".join(p.get("text", "[image]" if p.get("type") == "image_url" else "") for p in content if isinstance(p, dict))
    return content or ""


class EchoBackend(Backend):
    def _reply(self, call: UpstreamCall) -> str:
        messages = call.body["messages"]
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        said = _text(last_user.get("content")) if last_user else ""
        return (
            f"Hello from the llm-gateway demo. I received {len(messages)} message(s) for model "
            f"'{call.model_id}'. You said: {said}"
        )

    def _usage(self, call: UpstreamCall, reply: str) -> dict:
        prompt = sum(len(_text(m.get("content")).split()) for m in call.body["messages"])
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
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()), "model": call.model_id}

        def chunk(delta, finish_reason=None):
            return dumps({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})

        yield chunk({"role": "assistant", "content": ""})
        words = reply.split(" ")
        for position, word in enumerate(words):
            yield chunk({"content": word if position == len(words) - 1 else word + " "})
        yield chunk({}, "stop")
        if call.include_usage:
            yield usage_chunk(head, self._usage(call, reply))

