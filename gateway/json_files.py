"""Small JSON files the workers of one gateway share in its run directory (health verdicts, the
status page's per-minute history): written whole or not at all, read without ever failing."""

import json
import os
import threading


def write_atomically(path: str, data) -> None:
    """Readers see the old file or the new one, never half of one (a temporary file, renamed)."""
    temporary = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(data, handle, separators=(",", ":"))
    os.replace(temporary, path)


def read_object(path: str) -> dict:
    """The file's JSON object; {} when it is gone (meanwhile), unreadable or not an object."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
