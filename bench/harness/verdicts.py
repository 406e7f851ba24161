"""What each soak answer should be, and the check of one answer against it.

`judge(ask, answer, recent)` gives the request's outcome (a short label the summary counts), and
for anything but the expected answer or the expected error also what was wrong. Expected are:

- no fault, or `slow`: the whole answer: a chat.completion, an embeddings list with one vector per
  input, or a stream of chunks whose words are exactly the N the backend sent, one finish chunk, a
  usage chunk last exactly when `include_usage` asked, and `data: [DONE]` at the very end; every
  answer and chunk naming the model the client asked for;
- a stream the client left on purpose: what came before it hung up is valid;
- an injected fault: its error (`5xx` backend_server_error, `drop` backend_connection_dropped,
  `stall` backend_timeout, `refused` backend_unreachable or backend_cooling_down), as a real
  status, or for a stream that already started (an event or a keep-alive went out before it) as
  an error event followed by `data: [DONE]`;
- a limit: 429 gateway_concurrency_limit, or 429 user_rate_limit when the user really sent at
  least [limits]' requests per minute in the last 60 s (`recent` counts them, with 2 s to spare);
  for `chat-failover` (first backend refusing), 502 all_backends_failed when its message says
  the second one, `fast`, was full (the contract's status when backends failed in different ways);
  these as an error event only after a keep-alive (the decision came after the first one was due:
  the contract's rule for any failure, seen when the machine is very busy);

every error OpenAI-shaped: `{"error": {"message", "type", "param", "code"}}`.
"""

import json

from bench.harness.mix import REQUESTS_PER_MINUTE

FAULT_CODES = {
    "5xx": {"backend_server_error"},
    "drop": {"backend_connection_dropped"},
    "stall": {"backend_timeout"},
    "refused": {"backend_unreachable", "backend_cooling_down"},
}
STATUS_OF = {
    "backend_server_error": 502,
    "backend_connection_dropped": 502,
    "backend_timeout": 504,
    "backend_unreachable": 502,
    "backend_cooling_down": 502,
    "gateway_concurrency_limit": 429,
    "user_rate_limit": 429,
}
PROMPT_TOKENS = 12  # what bench/backend.py reports for every soak chat


class Unexpected(Exception):
    """kind: what went wrong, the same words for every request it happens to; detail: this one."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(kind)
        self.kind, self.detail = kind, detail


def judge(ask, answer, recent: int) -> tuple:
    """(outcome, None) for an expected answer, ("unexpected", Unexpected) otherwise."""
    try:
        return _outcome(ask, answer, recent), None
    except Unexpected as problem:
        return "unexpected", problem


def _outcome(ask, answer, recent: int) -> str:
    if answer.broken and not answer.left:
        raise Unexpected(f"{ask.shape}: no whole answer ({answer.broken.split(':')[0]})", answer.broken)
    if answer.status != 200:
        return _refusal(ask, answer, recent)
    if not ask.stream:
        document = _json(answer)
        (_embeddings if ask.embeddings else _completion)(ask, document)
        return _answered(ask)
    if not answer.streamed:
        raise Unexpected(f"{ask.shape}: 200 without an event stream", _shown(answer))
    error = _stream(ask, answer)
    if error is not None:
        return _error_event(ask, answer, error, recent)
    if answer.left:
        return "left mid-stream (on purpose)"
    return _answered(ask)


def _error_event(ask, answer, error: dict, recent: int) -> str:
    """A stream that ended with an error event: only once something went out before it (until the
    first event or keep-alive, a failure is a real HTTP status)."""
    code = error["code"]
    first_kind, first = answer.items[0]
    if first_kind == "data" and b'"error"' in first:
        raise Unexpected(f"{ask.shape}: an error event as the first byte ({code}), not an HTTP status", _shown(answer))
    if code in FAULT_CODES.get(ask.fault, set()):
        return f"fault {ask.fault}: error event {code}"
    # A limit decided after the first keep-alive was due: the stream had started (a busy machine).
    if first_kind == "comment" and code in ("gateway_concurrency_limit", "user_rate_limit"):
        if code == "user_rate_limit" and recent < REQUESTS_PER_MINUTE:
            raise Unexpected(f"{ask.shape}: user_rate_limit below the limit", f"{recent} requests of this user in the last 62 s; {_shown(answer)}")
        return f"429 {code} (on purpose) as an error event after a keep-alive"
    if first_kind == "comment" and ask.model == "chat-failover" and code == "all_backends_failed" and _fast_was_full(error["message"]):
        return "failover: all_backends_failed (gone refused, fast full) as an error event after a keep-alive"
    raise Unexpected(f"{ask.shape}: error event {code}" + (f" for fault {ask.fault}" if ask.fault else ""), _shown(answer))


def _answered(ask) -> str:
    if ask.fault not in (None, "slow"):
        raise Unexpected(f"{ask.shape}: a whole answer although the backend failed ({ask.fault})")
    return "answered" + (" after a slow first byte" if ask.fault == "slow" else "")


def _refusal(ask, answer, recent: int) -> str:
    error = _json(answer).get("error")
    code = _error(error, answer)
    if ask.model == "chat-failover" and code == "all_backends_failed" and answer.status == 502 and _fast_was_full(error["message"]):
        return "failover: 502 all_backends_failed (gone refused, fast full)"
    if code not in STATUS_OF or code not in FAULT_CODES.get(ask.fault, set()) | {"gateway_concurrency_limit", "user_rate_limit"}:
        raise Unexpected(f"{ask.shape}: HTTP {answer.status} {code}" + (f" for fault {ask.fault}" if ask.fault else ""), _shown(answer))
    if answer.status != STATUS_OF[code]:
        raise Unexpected(f"{ask.shape}: {code} with HTTP {answer.status}", _shown(answer))
    if answer.status == 429:
        if "retry-after" not in answer.headers:
            raise Unexpected(f"{ask.shape}: 429 {code} without Retry-After", _shown(answer))
        if code == "user_rate_limit" and recent < REQUESTS_PER_MINUTE:
            raise Unexpected(f"{ask.shape}: 429 user_rate_limit below the limit", f"{recent} requests of this user in the last 62 s; {_shown(answer)}")
        return f"429 {code} (on purpose)"
    return f"fault {ask.fault}: {answer.status} {code}"


def _fast_was_full(message: str) -> bool:
    """Whether an all_backends_failed message says `fast` (chat-failover's second backend) had no
    free slot: then 502, the contract's status when a model's backends failed in different ways
    (`gone` refused or cooling down, `fast` full); 429 only when every backend was full."""
    reasons = dict(part.split(": ", 1) for part in message.split(" failed: ", 1)[-1].split("; ") if ": " in part)
    return "in flight" in reasons.get("fast", "")


def _error(error, answer) -> str:
    """The error's code, once it is OpenAI-shaped."""
    if not isinstance(error, dict) or not {"message", "type", "param", "code"} <= set(error) or not isinstance(error["message"], str):
        raise Unexpected(f"HTTP {answer.status}: an error not OpenAI-shaped", _shown(answer))
    return error["code"]


def _json(answer):
    if not answer.headers.get("content-type", "").startswith("application/json"):
        raise Unexpected(f"HTTP {answer.status} with content-type {answer.headers.get('content-type')!r}", _shown(answer))
    try:
        document = json.loads(answer.body)
    except ValueError:
        raise Unexpected(f"HTTP {answer.status}: a body that is not JSON", _shown(answer)) from None
    if not isinstance(document, dict):
        raise Unexpected(f"HTTP {answer.status}: JSON that is not an object", _shown(answer))
    return document


def _completion(ask, document) -> None:
    try:
        choice = document["choices"][0]
        right = (document["object"] == "chat.completion" and document["model"] == ask.model
                 and choice["message"]["content"] == "word " * ask.size and choice["finish_reason"] == "stop"
                 and document["usage"]["total_tokens"] == PROMPT_TOKENS + ask.size)
    except (KeyError, IndexError, TypeError):
        right = False
    if not right:
        raise Unexpected(f"{ask.shape}: a chat.completion that is not the backend's", json.dumps(document)[:300])


def _embeddings(ask, document) -> None:
    try:
        data = document["data"]
        right = (document["object"] == "list" and document["model"] == ask.model and len(data) == ask.size
                 and all(item["index"] == i and len(item["embedding"]) == 8 for i, item in enumerate(data)))
    except (KeyError, TypeError):
        right = False
    if not right:
        raise Unexpected("embed: not one embedding per input", json.dumps(document)[:300])


def _stream(ask, answer):
    """Checks a stream's events; its error event's `error` object, if it ended with one."""
    data = [payload for kind, payload in answer.items if kind == "data"]
    if answer.left:
        if b"[DONE]" in data:
            data = data[:data.index(b"[DONE]")]  # it ended before the client could leave
    elif not data or data[-1] != b"[DONE]" or data.count(b"[DONE]") != 1:
        raise Unexpected(f"{ask.shape}: a stream that does not end with one data: [DONE]", _shown(answer))
    else:
        data = data[:-1]
    try:
        chunks = [json.loads(payload) for payload in data]
    except ValueError:
        raise Unexpected(f"{ask.shape}: an event that is not JSON", _shown(answer)) from None
    error = None
    if chunks and isinstance(chunks[-1], dict) and "error" in chunks[-1]:
        error = chunks.pop()["error"]
        _error(error, answer)  # OpenAI-shaped
    words, finishes, usage = "", 0, []
    for chunk in chunks:
        if not isinstance(chunk, dict) or chunk.get("object") != "chat.completion.chunk" or chunk.get("model") != ask.model:
            raise Unexpected(f"{ask.shape}: a chunk that is not the backend's (or an error event before the end)", json.dumps(chunk)[:300])
        if usage:
            raise Unexpected(f"{ask.shape}: a chunk after the usage chunk", _shown(answer))
        if chunk["choices"] == [] and "usage" in chunk:
            usage.append(chunk["usage"])
            continue
        for choice in chunk["choices"]:
            words += choice.get("delta", {}).get("content") or ""
            finishes += choice.get("finish_reason") is not None
    if not ("word " * ask.size).startswith(words):
        raise Unexpected(f"{ask.shape}: words the backend did not send", _shown(answer))
    if error is None and not answer.left:
        if words != "word " * ask.size:
            raise Unexpected(f"{ask.shape}: words missing", _shown(answer))
        if finishes != 1:
            raise Unexpected(f"{ask.shape}: {finishes} finish chunks", _shown(answer))
        if bool(usage) != ask.include_usage:
            raise Unexpected(f"{ask.shape}: a usage chunk {'missing' if ask.include_usage else 'nobody asked for'}", _shown(answer))
        if usage and usage[0].get("total_tokens") != PROMPT_TOKENS + ask.size:
            raise Unexpected(f"{ask.shape}: usage that is not the backend's", json.dumps(usage[0]))
    return error


def _shown(answer) -> str:
    """The answer, briefly, for an example: status, request id, the start of its body or its events."""
    head = f"HTTP {answer.status} request {answer.headers.get('x-request-id', '?')}: "
    if answer.items:
        return head + " | ".join(payload.decode(errors="replace")[:300] for _kind, payload in answer.items[-3:])
    return head + answer.body[:200].decode(errors="replace")
