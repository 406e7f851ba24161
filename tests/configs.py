"""Small builders for the gateway's TOML config, so a test says only what matters to it.

    gateway_toml(
        gateway={"heartbeat_seconds": 2},
        backends={"corp": backend(corp.url, read_timeout=5, headers={"x-dep-ticket": "${CORP_TICKET}"})},
        models=[model("Gauss", "corp", upstream="Gauss2")],
    )
"""


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {value!r}")


def _key(key: str) -> str:
    return key if key.replace("-", "").replace("_", "").isalnum() else _value(key)


def _table(header: str, values: dict) -> list:
    return [f"[{header}]", *(f"{_key(k)} = {_value(v)}" for k, v in values.items()), ""]


def backend(url: str, **settings) -> dict:
    """One `[backends.X]` table: its url and any other settings (`headers` becomes its own table)."""
    return {"url": url, **settings}


def model(id: str, backend: str, **settings) -> dict:
    return {"id": id, "backend": backend, **settings}


def gateway_toml(*, gateway: dict | None = None, backends: dict, models: list, limits: dict | None = None, keys: dict | None = None) -> str:
    """`keys`: named inbound keys, NAME -> {"key": ..., "models": [...], ...} ([keys.NAME])."""
    lines = _table("gateway", gateway) if gateway else []
    lines += _table("limits", limits) if limits else []
    for name, settings in (keys or {}).items():
        lines += _table(f"keys.{_key(name)}", settings)
    for name, settings in backends.items():
        settings = dict(settings)
        headers = settings.pop("headers", None)
        lines += _table(f"backends.{name}", settings)
        if headers:
            lines += _table(f"backends.{name}.headers", headers)
    for entry in models:
        lines += ["[[models]]", *(f"{_key(k)} = {_value(v)}" for k, v in entry.items()), ""]
    return "\n".join(lines)
