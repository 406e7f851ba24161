"""What is wrong with a config file, in sentences an operator can act on: every problem of the
file in one run, each naming its key (a model by its `id`), a typo with "did you mean", a wrong
type with the value it got, and in our words rather than marshmallow's.

No Flask, requests or ssl here (the gunicorn master checks configs with it).
"""

import difflib
import json

# marshmallow's wording -> ours
_WORDING = {
    "Unknown field.": "unknown key",
    "Missing data for required field.": "is required",
    "Field may not be null.": "must have a value",
    "Not a valid string.": "must be a string",
    "Not a valid list.": "must be a list",
    "Not a valid mapping type.": "must be a table",
    "Not a valid integer.": "must be an integer",
    "Not a valid number.": "must be a number",
    "Not a valid boolean.": "must be true or false",
    "Invalid input type.": "must be a table",
    "Shorter than minimum length 1.": "must not be empty",
}
_SHOWS_THE_VALUE = ("must be", "must not be empty", "must have a value")


def flatten(messages, path="", in_entry=False):
    """marshmallow's nested error map as ("models.0.backend", "reason") pairs."""
    if isinstance(messages, dict):
        for key, value in messages.items():
            # "_schema" is a whole-object error; "key" and "value" are how a Dict field nests its
            # entries, except right inside a "value" (a table's own field named `key`: [keys.NAME] key)
            marker = key == "_schema" or (key in ("value", "key") and not in_entry)
            name = "" if marker else str(key)
            yield from flatten(value, f"{path}.{name}" if path and name else path or name, in_entry=key == "value" and marker)
    elif isinstance(messages, list) and messages and all(isinstance(m, str) for m in messages):
        for message in messages:
            yield path, message
    elif isinstance(messages, list):
        for item in messages:
            yield from flatten(item, path, in_entry)
    else:
        yield path, str(messages)


def _lookup(raw, path: str):
    """The raw TOML value at a dotted error path (a backend name may itself hold dots); a tuple
    (found, value)."""
    node, tokens = raw, path.split(".") if path else []
    while tokens:
        for size in range(1, len(tokens) + 1):  # the shortest key that exists at this level
            key = ".".join(tokens[:size])
            if isinstance(node, dict) and key in node:
                node, tokens = node[key], tokens[size:]
                break
            if isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node, tokens = node[int(key)], tokens[size:]
                break
        else:
            return False, None
    return True, node


def _shown(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return (text[:60] + '…"' if len(text) > 62 else text) + ", a string"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _model_named(raw, path: str) -> str:
    """`models.1.backend` as `models."Gauss2-37b".backend`: a model is known by its id."""
    tokens = path.split(".")
    if len(tokens) >= 2 and tokens[0] == "models" and tokens[1].isdigit():
        models = raw.get("models") if isinstance(raw, dict) else None
        index = int(tokens[1])
        if isinstance(models, list) and index < len(models) and isinstance(models[index], dict):
            model_id = models[index].get("id")
            if isinstance(model_id, str) and model_id:
                return ".".join(["models", json.dumps(model_id, ensure_ascii=False), *tokens[2:]])
    return path


def _suggestion(path: str, known_keys) -> str:
    """" (did you mean `read_timeout`?)" for a key one typo away from a known one, else ""."""
    parent, _, key = path.rpartition(".")
    keys = known_keys(parent)
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6) if keys else []
    return f" (did you mean `{close[0]}`?)" if close else ""


def sentence(raw, path: str, message: str, known_keys) -> str:
    """One problem as the operator reads it: `key: reason`. `known_keys(parent_path)` lists the
    keys allowed at a path (for "did you mean")."""
    reason = _WORDING.get(message, message.rstrip("."))
    if reason[:5] in ("Must ", "Lengt"):
        reason = reason[0].lower() + reason[1:]
    if reason == "unknown key":
        reason += _suggestion(path, known_keys)
    elif reason.startswith(_SHOWS_THE_VALUE) and reason != "is required":
        found, value = _lookup(raw, path)
        if found:
            reason += f" (got {_shown(value)})"
    path = _model_named(raw, path)
    return f"{path}: {reason}" if path else reason
