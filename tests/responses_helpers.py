"""Helpers for the Responses API tests: their gateway config, reading event streams, and the
chunks backends send."""

import json

from tests.backends import chunk_json, closed_port
from tests.configs import backend, gateway_toml, model
from tests.conftest import CORP_HEADERS, INBOUND_KEY, NO_BREAKER

OTHER_KEY = "sk-inbound-other-2c9d"  # a second inbound key: stored responses are not shared across keys


def responses_config(openai_url: str, corp_url: str, **gateway) -> str:
    """A streaming backend (`gpt-stream`), a non-streaming one with headers, a system prompt,
    defaults and overrides (`gauss`), an embeddings model, and a failover pair whose first backend
    refuses connections (`gpt-failover`); two inbound keys."""
    return gateway_toml(
        gateway={"heartbeat_seconds": 2, "api_keys": [INBOUND_KEY, OTHER_KEY], **gateway},
        backends={
            "openai": backend(openai_url, streaming=True, read_timeout=20, **NO_BREAKER),
            "corp": backend(corp_url, streaming=False, headers=CORP_HEADERS, **NO_BREAKER),
            "embed": backend(openai_url, embeddings_url=openai_url.replace("/chat/completions", "/embeddings")),
            "nowhere": backend(f"http://127.0.0.1:{closed_port()}/v1/chat/completions", **NO_BREAKER),
        },
        models=[
            model("gpt-stream", "openai", upstream="upstream-stream-model"),
            model("gauss", "corp", upstream="Gauss2-37b", system_prompt="아는 것에 대해서만 대답해주세요.",
                  defaults={"temperature": 0.4, "max_tokens": 1024}, overrides={"top_p": 0.9}),
            model("bge-m3", "embed", kind="embeddings"),
            {"id": "gpt-failover", "backends": ["nowhere", "openai"]},
        ],
    )


def parse_events(data: bytes) -> list:
    """(`event:` name, parsed `data:`) per event of a Responses stream, keep-alive comments left out;
    fails on anything a Responses client could not read (`[DONE]` included)."""
    events = []
    assert data.endswith(b"\n\n") or not data, data[-200:]
    for block in data.decode("utf-8").split("\n\n"):
        if not block:
            continue
        lines = [line for line in block.split("\n") if not line.startswith(":")]
        if not lines:
            continue
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        events.append((lines[0][7:], json.loads(lines[1][6:])))
    return events


def check_framing(events: list) -> list:
    """The invariants every stream keeps: each event's name is its data's type, sequence numbers
    count from 0 without gaps, response.created first, one ending event last. Returns the data."""
    assert events, "no events"
    for position, (name, data) in enumerate(events):
        assert name == data["type"], (name, data["type"])
        assert data["sequence_number"] == position, (position, data)
    assert events[0][0] == "response.created"
    endings = [name for name, _ in events if name in ("response.completed", "response.incomplete", "response.failed")]
    assert endings == [events[-1][0]], endings
    return [data for _, data in events]


def sdk_final_response(events: list, text_format=None):
    """Replays the events through the openai SDK's own stream state (what `responses.stream()`
    does with them) and returns its final response: the SDK's consistency checks run on ours."""
    from openai._models import construct_type_unchecked
    from openai.lib.streaming.responses._responses import ResponseStreamState
    from openai.types.responses import ResponseStreamEvent

    from openai import omit

    state = ResponseStreamState(input_tools=omit, text_format=text_format if text_format is not None else omit)
    for _, data in events:
        state.handle_event(construct_type_unchecked(type_=ResponseStreamEvent, value=data))
    return state._completed_response


def text_chunks(text: str, finish="stop", role=True) -> list:
    """A streaming backend's chunks for `text`, word by word."""
    chunks = [chunk_json(delta={"role": "assistant", "content": ""})] if role else []
    words = text.split(" ")
    chunks += [chunk_json(delta={"content": word if i == len(words) - 1 else word + " "}) for i, word in enumerate(words)]
    chunks.append(chunk_json(delta={}, finish_reason=finish))
    return [c.encode() for c in chunks]


def tool_call_chunks(calls: list, pieces: int = 3, finish="tool_calls") -> list:
    """`calls` as vLLM streams them: id, type and name in the first delta of each index, then the
    arguments in `pieces` parts."""
    chunks = [chunk_json(delta={"role": "assistant", "content": None})]
    for index, (call_id, name, arguments) in enumerate(calls):
        chunks.append(chunk_json(delta={"tool_calls": [{"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}]}))
        size = max(1, -(-len(arguments) // pieces))
        for start in range(0, len(arguments), size):
            chunks.append(chunk_json(delta={"tool_calls": [{"index": index, "function": {"arguments": arguments[start:start + size]}}]}))
    chunks.append(chunk_json(delta={}, finish_reason=finish))
    return [c.encode() for c in chunks]


def usage_chunk(prompt=7, completion=3) -> bytes:
    return chunk_json(usage={"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}).encode()
