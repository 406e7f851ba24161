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
from .backends.health import shown_url
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
    lines = [f"{config.source}: OK, the gateway starts with this config.", "", "gateway:"]
    lines += [f"  {line}" for line in _gateway_settings(config)]
    lines += ["", "models (id → backend → upstream name):"]
    for m in config.models.values():
        lines.append(f"  {m.id} → {m.backend} → {m.upstream_for(m.backend)}")
        # a failover list: the others, in the order they are tried
        if m.strategy == "ordered":
            lines += [f"  {m.id} → {name} → {m.upstream_for(name)} (failover {n})" for n, name in enumerate(m.backends[1:], 2)]
        else:
            lines += [f"  {m.id} → {name} → {m.upstream_for(name)}" for name in m.backends[1:]]
        if m.strategy != "ordered":  # ordered: "(failover n)" above says it
            lines.append(f"      {_routing(m, config)}")
        if m.kind == "embeddings":
            lines.append("      embeddings model (POST /v1/embeddings)")
        elif m.defaults or m.overrides:
            lines.append(f"      {parameters.describe(m.defaults, m.overrides)}")
        if m.system_prompt:
            lines.append(f"      system prompt: {len(m.system_prompt)} characters, first in the leading system message")
    lines += ["", "stored Responses API answers (previous_response_id, GET /v1/responses/<id>):", f"  {stored_responses(config)}"]
    lines += ["", "usage, keys and budgets:"] + [f"  {line}" for line in usage_settings(config)]
    lines += ["", "Headers of a sample request, per backend: ${VAR} values as ***, a fresh {uuid}, and the user",
              "  " + ", ".join(f"{key} {value}" for key, value in SAMPLE_USER.items())]
    for name, backend in config.backends.items():
        lines += ["", f"backend {name}: {backend.location}, {_how(backend)}"]
        lines += [f"  {line}" for line in _backend_settings(backend, config)]
        models = [m for m in config.models.values() if name in m.backends]
        model = models[0] if models else ModelConfig(id="", backends=(name,), upstream={})
        headers = sample_headers(backend, shown_headers[name], model)
        lines.append(f"  headers sent with a request for {model.id}:" if models else "  headers sent (no model uses this backend):")
        lines += [f"    {header}: {value}" for header, value in headers.items()] or ["    (none configured)"]
    warnings = warnings_for(config)
    if warnings:
        lines += ["", "warnings (logged at every start):"] + [f"  - {warning}" for warning in warnings]
    return "\n".join(lines) + "\n"


def _gateway_settings(config: Config) -> list:
    """[gateway] and [limits] as they take effect, defaults included."""
    g, limits = config.gateway, config.limits
    keys, named = len(g.api_keys), len(config.keys)
    counted = ", ".join(part for part in (f"{keys} key{'s' if keys != 1 else ''}" if keys else "",
                                          f"{named} named key{'s' if named != 1 else ''}" if named else "") if part)
    lines = [
        f"inbound auth: on ({counted})" if counted else "inbound auth: OFF (no api_keys: anyone who can reach the gateway may use it)",
        f"CORS origins: {', '.join(g.cors_origins)}" if g.cors_origins else "CORS origins: none (browsers may not call the API from other origins)",
        "who is asking: " + (f"only a verified X-OpenWebUI-User-Jwt (HS256, leeway {g.user_jwt_leeway:g} s)" if g.user_jwt_secret
                             else "Open WebUI's X-OpenWebUI-User-* headers as sent (trust the network path), else the body's user"),
        f"keep-alive every {g.heartbeat_seconds:g} s; bodies up to {g.max_request_bytes} bytes within {g.body_timeout:g} s; "
        f"a client that reads nothing for {g.stalled_client_seconds:g} s is dropped",
    ]
    if g.redis_url:
        redis = urlsplit(g.redis_url)
        where = f"{redis.scheme}://{redis.hostname}:{redis.port or 6379}" if redis.hostname else f"{redis.scheme}://{redis.path}"
        lines.append(f"redis: {where} (shared limits; unreachable: {'serve with per-worker limits' if g.redis_failure == 'open' else 'answer 503'})")
    else:
        lines.append("redis: none (concurrency and [limits] hold per worker)")
    per_user = [f"{limits.per_user_requests_per_minute} requests" if limits.per_user_requests_per_minute else "",
                f"{limits.per_user_tokens_per_minute} tokens" if limits.per_user_tokens_per_minute else ""]
    lines.append("limits per user per minute: " + (", ".join(p for p in per_user if p) or "off"))
    return lines


_STRATEGY_WORDS = {
    "round_robin": "round_robin: each request starts at the next backend, by weight",
    "least_busy": "least_busy: the backend with the fewest requests in flight for its capacity and weight",
    "affinity": "affinity: a conversation stays on one backend (chat id, else user, else its start), by weight",
}


def _routing(model: ModelConfig, config: Config) -> str:
    """A model's strategy and its backends' weights (backends/strategies.py)."""
    weights = ", ".join(f"{name}={config.backends[name].weight:g}" for name in model.backends)
    line = f"strategy {_STRATEGY_WORDS[model.strategy]}"
    if model.strategy == "least_busy":
        shared = [name for name in model.backends if config.backends[name].global_max_concurrency]
        line += f" ({'in flight across instances for ' + ', '.join(shared) if shared else 'in flight per worker'})"
    return f"{line}; weights {weights}"


def _backend_settings(backend: BackendConfig, config: Config) -> list:
    """A backend's effective settings, defaults included, in the order a request meets them."""
    lines = [
        f"timeouts: connect {backend.connect_timeout:g} s, read {backend.read_timeout:g} s (longest silence)",
        f"concurrency: {backend.max_concurrency} in flight per worker"
        + (f", {backend.global_max_concurrency} across all instances" if backend.global_max_concurrency else ""),
        f"circuit breaker: {backend.failure_threshold} failures in a row → skipped for {backend.cooldown_seconds:g} s",
        f"body: tools {backend.tools}, content {backend.content}"
        + (f", dropped fields: {', '.join(backend.drop_params)}" if backend.drop_params else ""),
    ]
    if backend.health_url:
        lines.append(
            f"health check: GET {shown_url(backend.health_url)} every {backend.health_interval_seconds:g} s (±10 %), "
            f"timeout {backend.health_timeout_seconds:g} s; failing → skipped at once, back after {backend.healthy_after} passes in a row"
        )
    if backend.weight != 1:
        lines.append(f"weight: {backend.weight:g}")
    if backend.proxy:
        lines.append(f"proxy: {_location(backend, backend.proxy)}")
    if backend.embeddings_url:
        users = [m.id for m in config.models.values() if backend.name in m.backends and m.kind == "embeddings"]
        lines.append(f"embeddings: {_location(backend, backend.embeddings_url)}" + (f" (for {', '.join(users)})" if users else " (no embeddings model uses it)"))
    if backend.discover_models:
        prefix = f', ids prefixed "{backend.model_prefix}"' if backend.model_prefix else ""
        lines.append(f"discovers its models: {_location(backend, backend.discovery_url)} at start-up and every 5 minutes{prefix}")
    return lines


def _location(backend: BackendConfig, url: str) -> str:
    """Scheme, host and port of another URL of the backend: never its path or query."""
    return dataclasses.replace(backend, url=url).location


def _tokens(value: int) -> str:
    return f"{value:,}" if value else "no budget"


def usage_settings(config: Config) -> list:
    """Where the ledger is kept, the named keys (names, models, budgets: never the key), the
    per-user budgets and their exceptions, and who may read /admin/usage."""
    from .usage.storage import describe  # the worker's side, never the master's

    gateway, limits = config.gateway, config.limits
    lines = [f"ledger: {describe(gateway)}"]
    admins = len(gateway.admin_keys)
    lines.append(f"/admin/usage: {admins} admin key{'s' if admins != 1 else ''}" if admins else "/admin/usage: off (no admin_keys: /admin/* is 404)")
    for key in config.keys.values():
        models = ", ".join(key.models) if key.models is not None else "every model"
        rate = f"{key.requests_per_minute} requests per minute" if key.requests_per_minute else "no request limit"
        lines.append(f"key {key.name}: {models}; tokens per day {_tokens(key.tokens_per_day)}, per month {_tokens(key.tokens_per_month)}; {rate}")
    if not config.keys:
        lines.append("named keys: none ([keys.NAME])")
    lines.append(f"per user: tokens per day {_tokens(limits.per_user_tokens_per_day)}, per month {_tokens(limits.per_user_tokens_per_month)}")
    for user, settings in limits.users.items():
        lines.append(f"  {user}: " + ", ".join(f"{name.replace('_', ' ')} {value if value else 'unlimited'}" for name, value in settings.items()))
    if config.budgets_on:
        where = "Redis counters, checked in the limits' one round trip" if gateway.redis_url else "the ledger's counts: a used-up budget binds on every worker within 3 s"
        lines.append(f"budgets are checked against {where}")
    return lines


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
