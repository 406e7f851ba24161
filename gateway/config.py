"""The gateway's configuration: a TOML file, `${VAR}` from the environment, one marshmallow schema.

Everything is checked once, at start-up; a bad file stops start-up with one message naming the
file, each bad key and the reason. No Flask and no requests here: the gunicorn master imports this
module to check the config before any worker starts, and it must not import `ssl` or `requests`
before gevent has patched them (see STACK-NOTES).
"""

import base64
import dataclasses
import json
import os
import re
import tomllib
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate, validates_schema

from .config_problems import flatten, sentence
from .strict_fields import StrictBool, StrictNumber
from .upstream.headers import HeaderSet, HeaderTemplate, TemplateError, is_header_name
from .upstream.parameters import ParameterTable

DEMO_CONFIG_TOML = """
# Built-in demo: used when no config file is given, so a newcomer sees the gateway work first.
[backends.demo]
url = "demo://echo"
streaming = true

[[models]]
id = "demo-echo"
backend = "demo"
name = "Demo echo (no backend configured yet)"
"""
DEMO_SOURCE = "built-in demo config"
DEFAULT_CONFIG_FILE = "gateway.toml"
DATA_DIR_VARIABLE = "GATEWAY_DATA_DIR"  # the default [gateway] data_dir where the file sets none

_ENV_REFERENCE = re.compile(r"\$\{([^}]*)\}")
# Ids Open WebUI treats as OpenAI reasoning models: it renames max_tokens and changes the system role.
_REWRITTEN_BY_OPEN_WEBUI = re.compile(r"^(o\d|gpt-(\d+))", re.IGNORECASE)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# URL query keys whose values are credentials (`?key=`, `?access_token=`, `?sig=`, `?password=`).
_SECRET_KEY = re.compile(r"key|token|secret|sig|pass|pwd|auth|cred", re.IGNORECASE)


class ConfigError(Exception):
    """The config cannot be used. `str()` is the whole message for the operator."""


@dataclasses.dataclass(frozen=True)
class GatewaySettings:
    api_keys: tuple = ()
    heartbeat_seconds: float = 10.0
    cors_origins: tuple = ()
    max_request_bytes: int = 20_000_000
    body_timeout: float = 30.0  # seconds for the whole request body; then 408
    stalled_client_seconds: float = 60.0  # a streaming client that accepts no bytes this long is dropped
    user_jwt_secret: str | None = None
    user_jwt_leeway: float = 30.0  # seconds of clock skew allowed on exp / nbf / iat
    # Scale-out (gateway/limits/): shared state for every worker of every instance.
    redis_url: str | None = None
    redis_failure: str = "open"  # Redis unreachable: "open" serves with per-worker limits, "closed" answers 503
    # Local state every worker of this instance shares (gateway/responses/store.py: SQLite). Relative
    # paths are from the working directory; GATEWAY_DATA_DIR gives the default where the file sets none.
    data_dir: str = "var"
    response_store_seconds: float = 3600.0  # how long a stored Responses API answer can be continued; 0: never stored
    # The usage ledger (gateway/usage/): SQLite in data_dir, or this PostgreSQL shared by every instance.
    database_url: str | None = None
    admin_keys: tuple = ()  # Bearer (or Basic password) keys for /admin/*; none: /admin/* is 404


@dataclasses.dataclass(frozen=True)
class BackendConfig:
    name: str
    url: str
    headers: HeaderSet
    streaming: bool = False
    connect_timeout: float = 5.0
    read_timeout: float = 300.0
    max_concurrency: int = 64
    failure_threshold: int = 5  # consecutive failures before the backend is skipped ...
    cooldown_seconds: float = 30.0  # ... for this long; then one trial request decides
    tools: str = "pass"
    content: str = "parts"
    drop_params: tuple = ()
    ca_bundle: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    proxy: str | None = None
    verify: bool = True
    embeddings_url: str | None = None  # where kind = "embeddings" models of this backend are sent
    discover_models: bool = False  # list what the backend's GET .../models reports (discovery.py)
    models_url: str | None = None  # that list's URL, when it is not `url` with /chat/completions -> /models
    model_prefix: str = ""  # put before each discovered id, to keep them apart from other backends'
    # Replicas (backends/strategies.py, backends/health.py)
    weight: float = 1  # share of a model's requests under round_robin, least_busy and affinity
    health_url: str | None = None  # probed with GET by one worker per instance; failing -> cooling_down
    health_interval_seconds: float = 10.0  # between probes (jittered)
    health_timeout_seconds: float = 2.0  # to connect, and to answer
    healthy_after: int = 2  # passing probes in a row before a failing backend takes requests again

    @property
    def discovery_url(self) -> str | None:
        """Where discovery asks for the model list: `models_url`, else `url` with its trailing
        /chat/completions as /models (query kept: it may carry the backend's key), else None."""
        if self.models_url:
            return self.models_url
        parts = urlsplit(self.url)
        if not parts.path.rstrip("/").endswith("/chat/completions"):
            return None
        path = parts.path.rstrip("/").removesuffix("/chat/completions") + "/models"
        return parts._replace(path=path).geturl()
    global_max_concurrency: int | None = None  # across every worker sharing [gateway] redis_url (gateway/limits/)

    @property
    def location(self) -> str:
        """Scheme, host and port only: what may be shown or logged (never path, query or userinfo)."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    id: str
    backends: tuple  # backend names, tried in this order (failover); one for most models
    upstream: dict  # backend name -> the model's name there (the id where the config names none)
    name: str | None = None
    system_prompt: str | None = None
    kind: str = "chat"  # or "embeddings": which endpoint serves it
    strategy: str = "ordered"  # the order its backends are tried in, per request (backends/strategies.py)
    defaults: dict = dataclasses.field(default_factory=dict)  # sampling fields the client left out or sent as null
    overrides: dict = dataclasses.field(default_factory=dict)  # sampling fields always set to these

    @property
    def backend(self) -> str:
        """The first (primary) backend."""
        return self.backends[0]

    def upstream_for(self, backend: str) -> str:
        return self.upstream.get(backend, self.id)


@dataclasses.dataclass(frozen=True)
class KeyConfig:
    """[keys.NAME]: a named inbound key. Its NAME is what logs, the ledger and pages show; the key
    itself is a secret. 0 is off (no budget, no rate limit)."""

    name: str
    key: str
    models: tuple | None = None  # the model ids it may use; None: every model
    tokens_per_day: int = 0
    tokens_per_month: int = 0
    requests_per_minute: int = 0

    def allows(self, model_id: str) -> bool:
        return self.models is None or model_id in self.models


# The per-user settings an exception in [limits.users."x"] may set (without the per_user_ prefix).
USER_LIMIT_KEYS = ("requests_per_minute", "tokens_per_minute", "tokens_per_day", "tokens_per_month")


@dataclasses.dataclass(frozen=True)
class LimitsSettings:
    """[limits]: per-user limits over the last 60 s and per-user budgets per UTC day and month
    (gateway/limits/, gateway/usage/budgets.py); 0 is off. `users`: exceptions, user -> {setting: value}."""

    per_user_requests_per_minute: int = 0
    per_user_tokens_per_minute: int = 0
    per_user_tokens_per_day: int = 0
    per_user_tokens_per_month: int = 0
    users: dict = dataclasses.field(default_factory=dict)

    @property
    def on(self) -> bool:
        """Whether a per-minute limit applies to anyone."""
        return bool(self.per_user_requests_per_minute or self.per_user_tokens_per_minute) or any(
            settings.get(key) for settings in self.users.values() for key in USER_LIMIT_KEYS[:2]
        )

    def for_user(self, names) -> dict:
        """The four per-user settings for a user known by any of `names` (email, id...): the first
        name with an exception in `users` overrides the defaults it names."""
        values = {key: getattr(self, f"per_user_{key}") for key in USER_LIMIT_KEYS}
        for name in names:
            if name and name in self.users:
                values.update(self.users[name])
                break
        return values


@dataclasses.dataclass(frozen=True)
class Config:
    gateway: GatewaySettings
    backends: dict  # name -> BackendConfig
    models: dict  # id -> ModelConfig, in file order
    source: str  # the file it came from, or DEMO_SOURCE
    secrets: frozenset  # every form of every secret (see _secret_forms): redacted wherever text leaves us
    limits: LimitsSettings = LimitsSettings()  # [limits] (gateway/limits/)
    keys: dict = dataclasses.field(default_factory=dict)  # [keys.NAME]: name -> KeyConfig

    @property
    def budgets_on(self) -> bool:
        """Whether any token budget per UTC day or month applies (gateway/usage/budgets.py)."""
        limits = self.limits
        return bool(limits.per_user_tokens_per_day or limits.per_user_tokens_per_month) or any(
            settings.get("tokens_per_day") or settings.get("tokens_per_month") for settings in limits.users.values()
        ) or any(key.tokens_per_day or key.tokens_per_month for key in self.keys.values())

    @property
    def demo(self) -> bool:
        return self.source == DEMO_SOURCE


# --- the schema -------------------------------------------------------------------------------


class _Strict(Schema):
    class Meta:
        unknown = RAISE


def _url(value):
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
        host = parts.hostname
    except ValueError as exc:
        raise ValidationError(f"is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValidationError("must be an http:// or https:// URL with a host")


def _backend_url(value):
    if not value.startswith("demo:"):  # demo://echo: the built-in echo backend
        _url(value)


def _redis_url(value):
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise ValidationError(f"is not a valid Redis URL ({exc})") from None
    if parts.scheme == "unix" and parts.path:
        return
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValidationError("must be a redis://, rediss:// or unix:// URL")


def _database_url(value):
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise ValidationError(f"is not a valid database URL ({exc})") from None
    if parts.scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise ValidationError("must be a postgresql:// URL (without it the ledger is SQLite in data_dir)")


def _header_template(value):
    try:
        HeaderTemplate(value)
    except TemplateError as exc:
        raise ValidationError(str(exc)) from None


def _header_name(value):
    if not is_header_name(value):
        raise ValidationError(f"{value!r} is not a valid HTTP header name")


class GatewaySchema(_Strict):
    api_keys = fields.List(fields.String(validate=validate.Length(min=1)))
    heartbeat_seconds = StrictNumber(minimum=0, exclusive=True)
    cors_origins = fields.List(fields.String(validate=validate.Length(min=1)))
    max_request_bytes = StrictNumber(integer=True, minimum=1)
    body_timeout = StrictNumber(minimum=0, exclusive=True)
    stalled_client_seconds = StrictNumber(minimum=0, exclusive=True)
    user_jwt_secret = fields.String(validate=validate.Length(min=1))
    user_jwt_leeway = StrictNumber(minimum=0)
    redis_url = fields.String(validate=_redis_url)
    redis_failure = fields.String(validate=validate.OneOf(["open", "closed"]))
    data_dir = fields.String(validate=validate.Length(min=1))
    response_store_seconds = StrictNumber(minimum=0)
    database_url = fields.String(validate=_database_url)
    admin_keys = fields.List(fields.String(validate=validate.Length(min=1)))


class BackendSchema(_Strict):
    url = fields.String(required=True, validate=_backend_url)
    streaming = StrictBool()
    connect_timeout = StrictNumber(minimum=0, exclusive=True)
    read_timeout = StrictNumber(minimum=0, exclusive=True)
    max_concurrency = StrictNumber(integer=True, minimum=1)
    failure_threshold = StrictNumber(integer=True, minimum=1)
    cooldown_seconds = StrictNumber(minimum=0, exclusive=True)
    tools = fields.String(validate=validate.OneOf(["pass", "drop"]))
    content = fields.String(validate=validate.OneOf(["parts", "text"]))
    drop_params = fields.List(fields.String())
    ca_bundle = fields.String()
    client_cert = fields.String()
    client_key = fields.String()
    proxy = fields.String(validate=_url)
    verify = StrictBool()
    embeddings_url = fields.String(validate=_backend_url)
    discover_models = StrictBool()
    models_url = fields.String(validate=_url)
    model_prefix = fields.String()
    global_max_concurrency = StrictNumber(integer=True, minimum=1)
    weight = StrictNumber(minimum=0, exclusive=True, validate=validate.Range(max=1_000_000))
    health_url = fields.String(validate=_url)
    health_interval_seconds = StrictNumber(minimum=0, exclusive=True)
    health_timeout_seconds = StrictNumber(minimum=0, exclusive=True)
    healthy_after = StrictNumber(integer=True, minimum=1)
    headers = fields.Dict(
        keys=fields.String(validate=_header_name), values=fields.String(validate=_header_template)
    )


class _Upstream(fields.Field):
    """The model's name at its backend: one string, or a table {backend name: its name there}."""

    default_error_messages = {"invalid": "Must be a non-empty string or a table of backend name = model name."}

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str) and value:
            return value
        if isinstance(value, dict) and value and all(isinstance(v, str) and v for v in value.values()):
            return value
        raise self.make_error("invalid")


STRATEGIES = ("ordered", "round_robin", "least_busy", "affinity")  # backends/strategies.py


class UserLimitsSchema(_Strict):
    """[limits.users."x"]: any of the per-user settings, for this user; 0 = unlimited. Named as in
    the example (`tokens_per_day`) or as in [limits] itself (`per_user_tokens_per_day`): an error
    names the key as the file has it."""

    requests_per_minute = StrictNumber(integer=True, minimum=0)
    tokens_per_minute = StrictNumber(integer=True, minimum=0)
    tokens_per_day = StrictNumber(integer=True, minimum=0)
    tokens_per_month = StrictNumber(integer=True, minimum=0)
    per_user_requests_per_minute = StrictNumber(integer=True, minimum=0)
    per_user_tokens_per_minute = StrictNumber(integer=True, minimum=0)
    per_user_tokens_per_day = StrictNumber(integer=True, minimum=0)
    per_user_tokens_per_month = StrictNumber(integer=True, minimum=0)

    @validates_schema
    def _one_name_each(self, data, **kwargs):
        both = {f"per_user_{key}": [f"is also set as '{key}': keep one"] for key in USER_LIMIT_KEYS if key in data and f"per_user_{key}" in data}
        if both:
            raise ValidationError(both)


def _without_prefix(settings: dict) -> dict:
    """A [limits.users."x"] table with `per_user_tokens_per_day` read as `tokens_per_day`."""
    return {key.removeprefix("per_user_"): value for key, value in settings.items()}


class LimitsSchema(_Strict):
    per_user_requests_per_minute = StrictNumber(integer=True, minimum=0)
    per_user_tokens_per_minute = StrictNumber(integer=True, minimum=0)
    per_user_tokens_per_day = StrictNumber(integer=True, minimum=0)
    per_user_tokens_per_month = StrictNumber(integer=True, minimum=0)
    users = fields.Dict(keys=fields.String(validate=validate.Length(min=1)), values=fields.Nested(UserLimitsSchema))


class KeySchema(_Strict):
    """[keys.NAME]: a named inbound key."""

    key = fields.String(required=True, validate=validate.Length(min=1))
    models = fields.List(fields.String(validate=validate.Length(min=1)))
    tokens_per_day = StrictNumber(integer=True, minimum=0)
    tokens_per_month = StrictNumber(integer=True, minimum=0)
    requests_per_minute = StrictNumber(integer=True, minimum=0)


class ModelSchema(_Strict):
    id = fields.String(required=True, validate=validate.Length(min=1))
    backend = fields.String()
    backends = fields.List(fields.String(), validate=validate.Length(min=1))
    upstream = _Upstream()
    name = fields.String()
    system_prompt = fields.String()
    kind = fields.String(validate=validate.OneOf(["chat", "embeddings"]))
    strategy = fields.String(validate=validate.OneOf(STRATEGIES))
    defaults = ParameterTable()
    overrides = ParameterTable()


def _pem_file_problem(path: str, wanted: tuple) -> str | None:
    """Why `path` cannot be the PEM file a TLS setting needs, or None. No `ssl` here (see above):
    the worker builds the real SSLContext and reports what this structural check cannot see."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(10_000_000)
    except FileNotFoundError:
        return f"file {path} does not exist"
    except OSError as exc:
        return f"file {path} cannot be read ({exc.strerror})"
    marker, what = wanted
    if marker not in data:
        return f"file {path} holds no PEM {what}"
    return None


_CERTIFICATE = (b"-----BEGIN CERTIFICATE-----", "certificate")
_PRIVATE_KEY = (b"PRIVATE KEY-----", "private key")


class ConfigSchema(_Strict):
    gateway = fields.Nested(GatewaySchema)
    backends = fields.Dict(keys=fields.String(), values=fields.Nested(BackendSchema), required=True)
    models = fields.List(fields.Nested(ModelSchema), required=True, validate=validate.Length(min=1))
    limits = fields.Nested(LimitsSchema)
    keys = fields.Dict(keys=fields.String(validate=validate.Length(min=1)), values=fields.Nested(KeySchema))

    # Every check runs even when a field is wrong (skip_on_field_errors=False): the operator gets
    # every problem of the file in one run. `data` then holds only the fields that were valid.

    @validates_schema(skip_on_field_errors=False)
    def _global_limits_need_redis(self, data, **kwargs):
        """A limit across instances needs the Redis they share (gateway/limits/); [limits] alone
        is allowed and holds per worker."""
        if data.get("gateway", {}).get("redis_url"):
            return
        problems = {
            f"backends.{name}.global_max_concurrency": ["needs [gateway] redis_url (the Redis every instance shares)"]
            for name, backend in data.get("backends", {}).items()
            if "global_max_concurrency" in backend
        }
        if problems:
            raise ValidationError(problems)

    @validates_schema(skip_on_field_errors=False)
    def _inbound_keys_are_distinct(self, data, **kwargs):
        """Each key value belongs to one place: one named key, api_keys, or admin_keys (an admin
        key that also opens the API, or two names for one key, would make the name a lie). The
        messages name where, never the key."""
        places = {}
        gateway = data.get("gateway", {})
        for index, key in enumerate(gateway.get("api_keys", [])):
            places.setdefault(key, []).append(f"gateway.api_keys.{index}")
        for index, key in enumerate(gateway.get("admin_keys", [])):
            places.setdefault(key, []).append(f"gateway.admin_keys.{index}")
        for name, entry in data.get("keys", {}).items():
            if "key" in entry:
                places.setdefault(entry["key"], []).append(f"keys.{name}.key")
        problems = {}
        for where in places.values():
            for path in where[1:]:
                problems[path] = [f"is the same key as {where[0]}: every inbound key needs its own value"]
        if problems:
            raise ValidationError(problems)

    @validates_schema(skip_on_field_errors=False)
    def _keys_name_real_models(self, data, **kwargs):
        """A key's `models` names configured ids, unless a backend discovers models (whose ids
        are known only at run time)."""
        backends = data.get("backends", {})
        if any(backend.get("discover_models") for backend in backends.values()):
            return
        known = {model.get("id") for model in data.get("models", [])}
        problems = {}
        for name, entry in data.get("keys", {}).items():
            for index, model_id in enumerate(entry.get("models", [])):
                if model_id not in known:
                    problems[f"keys.{name}.models.{index}"] = [f"names model {model_id!r}, which is not defined"]
        if problems:
            raise ValidationError(problems)

    @validates_schema(skip_on_field_errors=False)
    def _models_name_real_backends(self, data, **kwargs):
        backends = data.get("backends", {})
        seen = set()
        known = ", ".join(sorted(backends)) or "none"
        problems = {}
        for index, model in enumerate(data.get("models", [])):
            if ("backend" in model) == ("backends" in model):
                problems[f"models.{index}.backend"] = ["needs exactly one of backend (one) or backends (a failover list), not both or neither"]
                continue
            key = "backend" if "backend" in model else "backends"
            names = [model["backend"]] if key == "backend" else model["backends"]
            missing = [name for name in names if name not in backends]
            if missing:
                problems[f"models.{index}.{key}"] = [f"names backend {missing[0]!r}, which is not defined (defined: {known})"]
            elif len(set(names)) != len(names):
                problems[f"models.{index}.backends"] = ["names a backend twice"]
            upstream = model.get("upstream")
            if isinstance(upstream, dict):
                for name in upstream:
                    if name not in names:
                        problems[f"models.{index}.upstream"] = [f"names backend {name!r}, which this model does not use ({', '.join(names)})"]
            if model.get("id") in seen:
                problems[f"models.{index}.id"] = [f"duplicate model id {model['id']!r}"]
            seen.add(model.get("id"))
        if problems:
            raise ValidationError(problems)

    @validates_schema(skip_on_field_errors=False)
    def _embeddings_models_have_an_endpoint(self, data, **kwargs):
        problems = {}
        backends = data.get("backends", {})
        for name, backend in backends.items():
            if "embeddings_url" in backend and backend["embeddings_url"].startswith("demo:") != backend.get("url", "").startswith("demo:"):
                problems[f"backends.{name}.embeddings_url"] = ["must be an http:// or https:// URL (demo:// only beside a demo:// url)"]
        for index, model in enumerate(data.get("models", [])):
            if model.get("kind") != "embeddings":
                continue
            for name in model.get("backends") or [model.get("backend")]:
                backend = backends.get(name, {})
                if backend and not backend.get("embeddings_url"):
                    problems[f"models.{index}.kind"] = [f"an embeddings model needs its backend '{name}' to have embeddings_url"]
            for key in ("defaults", "overrides"):
                if key in model:
                    problems[f"models.{index}.{key}"] = ["applies to chat models only"]
        if problems:
            raise ValidationError(problems)

    @validates_schema(skip_on_field_errors=False)
    def _discovery_knows_where_to_ask(self, data, **kwargs):
        problems = {}
        for name, backend in data.get("backends", {}).items():
            if backend.get("discover_models"):
                derivable = urlsplit(backend.get("url", "")).path.rstrip("/").endswith("/chat/completions")
                if backend.get("url", "").startswith("demo:"):
                    problems[f"backends.{name}.discover_models"] = ["the built-in demo backend has no model list to discover"]
                elif not backend.get("models_url") and not derivable:
                    problems[f"backends.{name}.discover_models"] = ["needs models_url: url does not end in /chat/completions, so its /models cannot be derived"]
            else:
                for key in ("models_url", "model_prefix"):
                    if key in backend:
                        problems[f"backends.{name}.{key}"] = ["is set without discover_models = true"]
        if problems:
            raise ValidationError(problems)

    @validates_schema(skip_on_field_errors=False)
    def _health_checks_have_a_url(self, data, **kwargs):
        """Probe settings mean nothing without `health_url`; the demo backend has nothing to probe."""
        problems = {}
        for name, backend in data.get("backends", {}).items():
            if "health_url" not in backend:
                for key in ("health_interval_seconds", "health_timeout_seconds", "healthy_after"):
                    if key in backend:
                        problems[f"backends.{name}.{key}"] = ["is set without health_url"]
            elif backend.get("url", "").startswith("demo:"):
                problems[f"backends.{name}.health_url"] = ["the built-in demo backend has no health endpoint to probe"]
        if problems:
            raise ValidationError(problems)

    @validates_schema(skip_on_field_errors=False)
    def _tls_files_are_usable(self, data, **kwargs):
        problems = {}
        for name, backend in data.get("backends", {}).items():
            checks = [("ca_bundle", _CERTIFICATE), ("client_cert", _CERTIFICATE), ("client_key", _PRIVATE_KEY)]
            if backend.get("client_cert") and not backend.get("client_key"):
                checks.append(("client_cert", _PRIVATE_KEY))  # then the key must be in the same file
            for key, wanted in checks:
                if backend.get(key):
                    problem = _pem_file_problem(backend[key], wanted)
                    if problem:
                        problems.setdefault(f"backends.{name}.{key}", []).append(problem)
            if backend.get("client_key") and not backend.get("client_cert"):
                problems.setdefault(f"backends.{name}.client_key", []).append("is set without client_cert")
        if problems:
            raise ValidationError(problems)

    @post_load
    def _build(self, data, **kwargs):
        gateway = data.get("gateway", {})
        gateway = GatewaySettings(
            **{
                **gateway,
                **{k: tuple(gateway[k]) for k in ("api_keys", "cors_origins", "admin_keys") if k in gateway},
            }
        )
        backends = {}
        for name, raw in data["backends"].items():
            raw = dict(raw)
            raw["headers"] = HeaderSet(raw.get("headers", {}))
            if "drop_params" in raw:
                raw["drop_params"] = tuple(raw["drop_params"])
            backends[name] = BackendConfig(name=name, **raw)
        models = {}
        for m in data["models"]:
            names = tuple(m["backends"]) if "backends" in m else (m["backend"],)
            upstream = m.get("upstream", m["id"])
            table = dict(upstream) if isinstance(upstream, dict) else {name: upstream for name in names}
            extra = {k: v for k, v in m.items() if k not in ("id", "backend", "backends", "upstream")}
            models[m["id"]] = ModelConfig(id=m["id"], backends=names, upstream=table, **extra)
        return gateway, backends, models


# --- loading ----------------------------------------------------------------------------------


def _expand_env(value, path, environ, errors, secrets):
    """Replaces ${VAR} in every string of the parsed TOML, recording each key whose VAR is unset.
    In header templates the value is literal text: its braces are doubled, so a ticket holding
    `{` or `{uuid}` is sent as it is, never read as a placeholder."""
    if isinstance(value, str):
        in_template = ".headers." in f".{path}"

        def substitute(match):
            name = match.group(1)
            if not _ENV_NAME.match(name):
                errors.append((path, f"${{{name}}} is not a valid environment variable reference"))
                return ""
            if name not in environ:
                errors.append((path, f"environment variable {name} is not set"))
                return ""
            secrets.add(environ[name])
            text = environ[name]
            return text.replace("{", "{{").replace("}", "}}") if in_template else text

        return _ENV_REFERENCE.sub(substitute, value)
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{path}.{k}" if path else k, environ, errors, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, f"{path}.{i}", environ, errors, secrets) for i, v in enumerate(value)]
    return value


def headers_as_shown(text: str) -> dict:
    """Each backend's header templates with every `${VAR}` part as `***`: `make check` renders
    them to show what a request sends without printing a secret. Literal parts and placeholders
    are compiled exactly as parse_config compiles them; call it on text parse_config accepted."""
    shown = {}
    for name, backend in tomllib.loads(text).get("backends", {}).items():
        templates = backend.get("headers", {}) if isinstance(backend, dict) else {}
        shown[name] = HeaderSet({header: _ENV_REFERENCE.sub("***", value) for header, value in templates.items()})
    return shown


def _known_keys(parent: str) -> list:
    """The keys the schema allows at `parent` (a dotted path), for "did you mean"."""
    tokens = parent.split(".") if parent else []
    if not tokens:
        schema = ConfigSchema
    elif tokens[0] in ("gateway", "limits") and len(tokens) == 1:
        schema = GatewaySchema if tokens[0] == "gateway" else LimitsSchema
    elif tokens[:2] == ["limits", "users"] and len(tokens) >= 3:
        schema = UserLimitsSchema
    elif tokens[0] == "keys" and len(tokens) >= 2:
        schema = KeySchema
    elif tokens[0] == "backends" and len(tokens) >= 2:
        schema = BackendSchema
    elif tokens[0] == "models" and len(tokens) == 2:
        schema = ModelSchema
    else:
        return []
    return list(schema._declared_fields)


def parse_config(text: str, source: str, environ=None) -> Config:
    """Validates config text; raises ConfigError naming `source` and every problem: each bad key
    and why (config_problems.py)."""
    environ = os.environ if environ is None else environ
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    env_errors, secrets = [], set()
    raw = _expand_env(raw, "", environ, env_errors, secrets)
    problems = [(path, reason) for path, reason in env_errors]
    built = None
    try:
        built = ConfigSchema().load(raw)
    except ValidationError as exc:
        unset = {path for path, _ in env_errors}  # an unset ${VAR} left "": its key's other errors follow from that
        problems += [(path, reason) for path, reason in flatten(exc.messages) if path not in unset]
    if problems:
        # A wrong value may be a secret from ${VAR}: "got ..." must not print it.
        forms = {form for secret in secrets if len(secret) >= 4 for form in _secret_forms(secret)}
        sentences = [redact_text(sentence(raw, path, reason, _known_keys), forms) for path, reason in problems]
        raise ConfigError(f"{source}: " + "; ".join(dict.fromkeys(sentences)))
    gateway, backends, models = built
    if "data_dir" not in raw.get("gateway", {}) and environ.get(DATA_DIR_VARIABLE):
        # The deployment's state directory (deploy/: the systemd unit's StateDirectory, the image's
        # volume), unless the file names one itself.
        gateway = dataclasses.replace(gateway, data_dir=environ[DATA_DIR_VARIABLE])
    keys = {
        name: KeyConfig(name=name, key=entry["key"], models=tuple(entry["models"]) if "models" in entry else None,
                        **{k: v for k, v in entry.items() if k not in ("key", "models")})
        for name, entry in raw.get("keys", {}).items()
    }  # [keys.NAME], checked by KeySchema above
    secrets |= {key for key in gateway.api_keys} | {key for key in gateway.admin_keys} | {key.key for key in keys.values()}
    # [gateway] database_url: its password (and a ?password= value) is a secret even when written into the file.
    database = urlsplit(gateway.database_url or "")
    secrets |= {database.password or "", unquote(database.password or "")}
    secrets |= {value for key, value in parse_qsl(database.query) if _SECRET_KEY.search(key)}
    # [gateway] redis_url: its password (and a ?password= value) is a secret even when written
    # into the file; its host and port are not (gateway/limits/).
    redis = urlsplit(gateway.redis_url or "")
    secrets |= {redis.password or "", unquote(redis.password or "")}
    secrets |= {value for key, value in parse_qsl(redis.query) if _SECRET_KEY.search(key)}
    if gateway.user_jwt_secret:
        secrets.add(gateway.user_jwt_secret)
    for backend in backends.values():
        # A URL's password, and query values whose key names a secret (?api_key=...), are secrets
        # even when written into the file; a backend's name, host, port and model ids are not.
        for url in (backend.url, backend.proxy or "", backend.embeddings_url or "", backend.models_url or "", backend.health_url or ""):
            parts = urlsplit(url)
            secrets |= {value for key, value in parse_qsl(parts.query) if _SECRET_KEY.search(key)} | {parts.password or ""}
    # Very short values (a "1" from ${DEBUG}) would blank out unrelated text: not worth redacting.
    forms = {form for secret in secrets if len(secret) >= 4 for form in _secret_forms(secret)}
    limits = dict(raw.get("limits", {}))  # [limits], checked by LimitsSchema above
    limits["users"] = {user: _without_prefix(settings) for user, settings in limits.get("users", {}).items()}
    limits = LimitsSettings(**limits)
    return Config(gateway, backends, models, source, frozenset(forms), limits, keys)


def redact_text(text: str, forms) -> str:
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "[redacted]")
    return text


def _secret_forms(secret: str) -> set:
    """A secret as it may appear in text we send: raw, percent-encoded, JSON-escaped, and
    base64-encoded on its own (standard and URL-safe, with and without padding, as a backend that
    echoes our ticket in a token may write it). Inside a longer encoded text it cannot be found."""
    raw = secret.encode("utf-8")
    encoded = {base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}
    encoded |= {form.rstrip("=") for form in encoded}
    return {secret, quote(secret, safe=""), quote_plus(secret, safe=""), json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
            *encoded, *(quote(form, safe="") for form in encoded)}


def ids_open_webui_rewrites(config: Config) -> list:
    """Model ids for which Open WebUI rewrites requests (`o1`..., `gpt-5` and up): worth a warning."""
    risky = []
    for model_id in config.models:
        match = _REWRITTEN_BY_OPEN_WEBUI.match(model_id)
        if match and (match.group(2) is None or int(match.group(2)) >= 5):
            risky.append(model_id)
    return risky


def unverified_backends(config: Config) -> list:
    """Backends with `verify = false`: worth a loud warning at every start."""
    return [name for name, backend in config.backends.items() if not backend.verify]


def limits_warnings(config: Config) -> list:
    """Start-up warnings about [limits], named keys' requests_per_minute and Redis (gateway/limits/)."""
    warnings = []
    if config.limits.on and not config.gateway.redis_url:
        warnings.append("[limits] hold per worker: without [gateway] redis_url each worker process counts its own users' "
                        "requests and tokens, so a user may get up to (workers x instances) times the limit")
    if any(key.requests_per_minute for key in config.keys.values()) and not config.gateway.redis_url:
        warnings.append("[keys.*] requests_per_minute hold per worker: without [gateway] redis_url a key may send up to "
                        "(workers x instances) times its limit")
    return warnings


def config_path(environ=None) -> str | None:
    """The file GATEWAY_CONFIG names, else gateway.toml if it exists, else None (demo mode)."""
    environ = os.environ if environ is None else environ
    path = environ.get("GATEWAY_CONFIG")
    if path:
        return path
    return DEFAULT_CONFIG_FILE if os.path.exists(DEFAULT_CONFIG_FILE) else None


# The last good config text, kept by the gunicorn master in its environment (which every worker
# it spawns inherits): not in a file, which a tmp cleaner could remove under a running service.
SNAPSHOT_VARIABLE = "GATEWAY_CONFIG_SNAPSHOT"


def read_config_text(environ=None) -> tuple[str, str]:
    """The config file's text and its name (the demo's, without a file); raises ConfigError."""
    environ = os.environ if environ is None else environ
    path = config_path(environ)
    if path is None:
        return DEMO_CONFIG_TOML, DEMO_SOURCE
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read(), path
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the config file is not UTF-8 text") from None


def load_config(environ=None, use_snapshot=True) -> Config:
    """The config the environment names. Under gunicorn, workers load the master's snapshot of
    the last good file instead (a reload with a bad file must not stop new workers)."""
    environ = os.environ if environ is None else environ
    if use_snapshot and environ.get(SNAPSHOT_VARIABLE) is not None:
        return parse_config(environ[SNAPSHOT_VARIABLE], config_path(environ) or DEMO_SOURCE, environ)
    text, source = read_config_text(environ)
    return parse_config(text, source, environ)
