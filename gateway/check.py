"""`python -m gateway check [CONFIG]` (`make check`): the config checked exactly as start-up checks
it, then what it means: each model → backend → upstream name, and for each backend the headers a
sample request would send (literal parts as written, `${VAR}` parts as `***`, the sample user's
values encoded as they are sent, a fresh `{uuid}`), and the warnings start-up logs.

Exit status 0 for a config the gateway would start with; 1, with start-up's one-line message on
stderr, for one it would refuse.
"""

import dataclasses
import os
import sys
import uuid
from urllib.parse import urlsplit

from .config import BackendConfig, Config, ConfigError, ModelConfig, headers_as_shown, parse_config, read_config_text
from .errors import redact
from .registry import ModelRegistry
from .startup import warnings_for
from .upstream import parameters
from .upstream.call import build_call

# Who the sample request comes from, as Open WebUI forwards a user; a Korean name shows how a
# value that is not ASCII is sent (percent-encoded UTF-8).
SAMPLE_USER = {
    "user.id": "u-123",
    "user.email": "kim@example.com",
    "user.name": "김민수",
    "user.role": "user",
    "chat_id": "c-456",
}
SAMPLE_CHAT = {"messages": [{"role": "user", "content": "hello"}], "stream": True}


def run(path: str | None = None, out=None, err=None) -> int:
    """Checks the config at `path` (default: the one `make run` would use) and reports on `out`."""
    out, err = out or sys.stdout, err or sys.stderr
    environ = dict(os.environ)
    if path:
        environ["GATEWAY_CONFIG"] = path
    try:
        text, source = read_config_text(environ)
        config = parse_config(text, source, environ)  # what the gunicorn master checks
        ModelRegistry(config).close()  # what only a worker checks: each backend's TLS context
    except ConfigError as exc:
        print(f"Error: llm-gateway cannot start: {exc}", file=err)
        return 1
    # Nothing below prints a ${VAR} value; redacting is the second lock on that door.
    out.write(redact(report(config, headers_as_shown(text)), config.secrets))
    return 0


def report(config: Config, shown_headers: dict) -> str:
    lines = [f"{config.source}: OK, the gateway starts with this config.", "", "models (id → backend → upstream name):"]
    for m in config.models.values():
        lines.append(f"  {m.id} → {m.backend} → {m.upstream_for(m.backend)}")
        # a failover list: the others, in the order they are tried
        lines += [f"  {m.id} → {name} → {m.upstream_for(name)} (failover {n})" for n, name in enumerate(m.backends[1:], 2)]
        if m.kind == "embeddings":
            lines.append("      embeddings model")
        elif m.defaults or m.overrides:
            lines.append(f"      {parameters.describe(m.defaults, m.overrides)}")
    lines += ["", "stored Responses API answers (previous_response_id, GET /v1/responses/<id>):", f"  {stored_responses(config)}"]
    lines += ["", "Headers of a sample request, per backend: ${VAR} values as ***, a fresh {uuid}, and the user",
              "  " + ", ".join(f"{key} {value}" for key, value in SAMPLE_USER.items())]
    for name, backend in config.backends.items():
        lines += ["", f"backend {name}: {backend.location}, {_how(backend)}"]
        models = [m for m in config.models.values() if name in m.backends]
        model = models[0] if models else ModelConfig(id="", backends=(name,), upstream={})
        headers = sample_headers(backend, shown_headers[name], model)
        lines.append(f"  headers sent with a request for {model.id}:" if models else "  headers sent (no model uses this backend):")
        lines += [f"    {header}: {value}" for header, value in headers.items()] or ["    (none configured)"]
    warnings = warnings_for(config)
    if warnings:
        lines += ["", "warnings (logged at every start):"] + [f"  - {warning}" for warning in warnings]
    return "\n".join(lines) + "\n"


def stored_responses(config: Config) -> str:
    """Where /v1/responses keeps answers, and for how long (Redis by host and port only: its URL may hold a password)."""
    gateway = config.gateway
    if not gateway.response_store_seconds:
        return "not stored (response_store_seconds = 0)"
    if gateway.redis_url:
        parts = urlsplit(gateway.redis_url)
        where = f"in Redis at {parts.path if parts.scheme == 'unix' else f'{parts.hostname}:{parts.port or 6379}'}, shared by every instance"
    else:
        where = f"in SQLite under {os.path.abspath(gateway.data_dir)} (data_dir), shared by this instance's workers"
    return f"kept {gateway.response_store_seconds:g} s, {where}"


def sample_headers(backend: BackendConfig, shown, model: ModelConfig) -> dict:
    """The headers a request for `model` sends, rendered by the same code as a real request's,
    with `shown` (the templates with `***` for `${VAR}`) in place of the real templates."""
    request_id = uuid.uuid4().hex
    chat = {**SAMPLE_CHAT, "model": model.id}
    sent = build_call(chat, model, backend, SAMPLE_USER, request_id).headers
    as_shown = build_call(chat, model, dataclasses.replace(backend, headers=shown), SAMPLE_USER, request_id).headers
    # What is really sent, in order; a header whose real value renders empty is not sent.
    headers = {header: as_shown.get(header, "***") for header in sent}
    headers.update({header: "(renders empty: not sent)" for header in as_shown if header not in sent})
    return headers


def _how(backend: BackendConfig) -> str:
    streaming = "streams" if backend.streaming else "does not stream"
    if backend.url.startswith("demo:"):
        return "the built-in echo backend"
    if not backend.url.startswith("https:"):
        return f"{streaming}, plain HTTP (not encrypted)"
    if not backend.verify:
        return f"{streaming}, HTTPS with the certificate NOT verified (verify = false)"
    return f"{streaming}, HTTPS with the certificate verified" + (f" against {backend.ca_bundle}" if backend.ca_bundle else "")
