"""JSON out as UTF-8 bytes, compact, whatever strings it holds."""

import json


def dumps(obj) -> bytes:
    """Compact UTF-8 JSON. A lone surrogate (legal as a JSON escape, not as UTF-8) is sent escaped."""
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":")).encode("ascii")
