"""The error tree, and the one place failures become OpenAI-shaped answers.

Every failure the gateway knows about is a `GatewayError` carrying its HTTP status, OpenAI's
`type`, `code` and `param`, and a message that says which side failed: the client, the gateway, or
backend 'name'. Before a stream's first byte it becomes a JSON answer with that status; after it,
an in-stream error event. Text is redacted on the way out, so a backend that echoes our ticket in
its error message cannot leak it.
"""

from .jsonio import dumps


class GatewayError(Exception):
    """Base of every failure we answer on purpose. `kind` is a short label for logs and metrics."""

    status = 500
    type = "server_error"
    code = None
    kind = "gateway_error"
    # The request's body was not read to its end: the connection cannot carry another request.
    closes_connection = False

    def __init__(self, message, *, param=None, code=None, headers=None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# --- the client's side --------------------------------------------------------------------------


class InvalidRequest(GatewayError):
    """Malformed JSON or a schema violation; `param` names the field (e.g. `messages.2.role`)."""

    status = 400
    type = "invalid_request_error"
    kind = "invalid_request"


class Unauthorized(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"
    kind = "unauthorized"


class Forbidden(GatewayError):
    """The caller is known, but this is not theirs to use (a named key outside its models, an API
    key on /admin)."""

    status = 403
    type = "permission_error"
    code = "forbidden"
    kind = "forbidden"


class ModelNotAllowed(Forbidden):
    """A named key ([keys.NAME]) asked for a model outside its `models`."""

    code = "model_not_allowed"
    kind = "model_not_allowed"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"
    kind = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"
    kind = "model_not_found"


class WrongModelKind(InvalidRequest):
    """A chat request for an embeddings model, or the reverse: the message says which kind it is."""

    code = "wrong_model_kind"
    kind = "wrong_model_kind"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"
    kind = "method_not_allowed"


class RequestTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"
    kind = "request_too_large"
    closes_connection = True


class UnreadableBody(InvalidRequest):
    """Malformed chunked framing, or a body that ended before its Content-Length."""

    code = "invalid_body"
    closes_connection = True


class BodyTimeout(GatewayError):
    """The client did not send its whole body within `body_timeout`."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"
    kind = "body_timeout"
    closes_connection = True


# --- the gateway's side -------------------------------------------------------------------------


class GatewayBusy(GatewayError):
    """This worker already runs `max_concurrency` requests for the backend: safe to retry later."""

    status = 429
    type = "rate_limit_error"
    code = "gateway_concurrency_limit"
    kind = "concurrency_limit"


# Scale-out limits (gateway/limits/): refusals before any backend is called.


class GlobalBusy(GatewayBusy):
    """The backend already has `global_max_concurrency` requests in flight across every instance."""

    kind = "global_concurrency_limit"


class UserRateLimited(GatewayError):
    """The user's requests or tokens in the last 60 s are at a [limits] limit. `kind` says which."""

    status = 429
    type = "rate_limit_error"
    code = "user_rate_limit"
    kind = "user_requests_limit"  # or "user_tokens_limit"


class KeyRateLimited(GatewayError):
    """A named key's requests in the last 60 s are at its `requests_per_minute`."""

    status = 429
    type = "rate_limit_error"
    code = "key_rate_limit"
    kind = "key_requests_limit"


class BudgetExceeded(GatewayError):
    """A token budget per UTC day or month is used up; Retry-After is the time to its reset."""

    status = 429
    type = "rate_limit_error"


class KeyBudgetExceeded(BudgetExceeded):
    code = "key_budget_exceeded"
    kind = "key_budget"


class UserBudgetExceeded(BudgetExceeded):
    code = "user_budget_exceeded"
    kind = "user_budget"


class LimitsUnavailable(GatewayError):
    """Redis, which holds the shared limits, is unreachable and `redis_failure = "closed"`."""

    status = 503
    code = "limits_unavailable"
    kind = "limits_unavailable"


class ShuttingDown(GatewayError):
    """This worker is stopping (SIGTERM, or a reload retiring it) and could not finish the answer."""

    status = 503
    code = "gateway_shutting_down"
    kind = "shutting_down"


class PreviousResponseNotFound(InvalidRequest):
    """`previous_response_id` names no response this client stored (unknown, expired, or another's)."""

    code = "previous_response_not_found"
    kind = "previous_response_not_found"


class ResponseStoreUnavailable(GatewayError):
    """The store of Responses API answers (Redis) did not answer: a lookup that cannot be made is
    not a "not found"."""

    status = 503
    code = "response_store_unavailable"
    kind = "response_store_unavailable"


class UsageUnavailable(GatewayError):
    """The usage ledger's database cannot be read just now (the admin pages; requests never wait for it)."""

    status = 503
    code = "usage_unavailable"
    kind = "usage_unavailable"


class InternalError(GatewayError):
    """A bug of ours. The client gets the request id to quote; the log gets the traceback."""

    kind = "internal_error"


# --- the backend's side -------------------------------------------------------------------------


class BackendError(GatewayError):
    """The backend failed us. `kind` is what happened, as counted in logs and metrics.

    `passes_on`: the failure is the backend's, not the request's, so a model with several
    backends tries the next one (until the first content event went out) and the backend's
    circuit breaker counts it. `answered`: the backend sent an HTTP answer (it is named in
    X-Gateway-Backend), as opposed to never answering (refused, timed out, TLS)."""

    status = 502
    type = "backend_error"
    code = "backend_error"
    passes_on = True
    answered = False

    def __init__(self, backend, message, **kwargs):
        super().__init__(f"Backend '{backend}' {message}", **kwargs)
        self.backend = backend
        self.reason = message  # the message without the backend's name: for a list of several


class BackendUnreachable(BackendError):
    code = "backend_unreachable"
    kind = "refused"


class BackendDropped(BackendError):
    """The connection broke before the answer was complete."""

    code = "backend_connection_dropped"
    kind = "dropped"


class BackendTimeout(BackendError):
    status = 504
    code = "backend_timeout"
    kind = "timeout"


class BackendServerError(BackendError):
    """A 5xx from the backend."""

    code = "backend_server_error"
    kind = "5xx"
    answered = True


class BackendInvalidAnswer(BackendError):
    """A 2xx that is not a chat completion (HTML, truncated JSON, a stream that stopped short)."""

    code = "backend_invalid_answer"
    kind = "invalid_answer"
    answered = True


class BackendAuthRejected(BackendError):
    """The backend said 401/403 to the credentials from our config: the operator must fix them."""

    code = "backend_auth_rejected"
    kind = "auth_rejected"
    answered = True


class BackendRateLimited(BackendError):
    status = 429
    type = "rate_limit_error"
    code = "backend_rate_limited"
    kind = "rate_limited"
    answered = True


class BackendRejected(BackendError):
    """Another 4xx: the backend did not like the request; its status and message are passed on."""

    code = "backend_rejected_request"
    kind = "rejected"
    passes_on = False  # about the request: no other backend would answer it differently
    answered = True

    def __init__(self, backend, message, *, status, **kwargs):
        super().__init__(backend, message, **kwargs)
        self.status = status
        self.type = "invalid_request_error"


class BackendRedirected(BackendError):
    code = "backend_redirect"
    kind = "redirect"
    answered = True


class BackendCoolingDown(BackendError):
    """Skipped: the backend's circuit breaker is open after consecutive failures."""

    code = "backend_cooling_down"
    kind = "cooling_down"


class AllBackendsFailed(GatewayError):
    """Every backend of a model failed or was skipped. The status is the failures' own when they
    all agree (429: all rate limited or full; 504: all timed out), else 502."""

    type = "backend_error"

    def __init__(self, model_id: str, failures: list):
        reasons = "; ".join(f"{name}: {getattr(error, 'reason', error.message)}" for name, error in failures)
        last = failures[-1][1]
        kinds = {type(error) for _, error in failures}
        retry_after = [error.headers["Retry-After"] for _, error in failures if "Retry-After" in error.headers]
        super().__init__(f"Every backend of model '{model_id}' failed: {reasons}", headers={"Retry-After": min(retry_after, key=_seconds)} if retry_after else None)
        # Refused before any backend was called (every one full or cooling down), or not.
        self.backends_failed = any(isinstance(e, BackendError) and not isinstance(e, BackendCoolingDown) for _, e in failures)
        if all(issubclass(kind, (BackendRateLimited, GatewayBusy)) for kind in kinds):
            self.status, self.type, self.code = 429, "rate_limit_error", last.code
        elif kinds == {BackendTimeout}:
            self.status, self.code = 504, BackendTimeout.code
        else:
            self.status, self.code = 502, "all_backends_failed"
        self.kind = last.kind


def _seconds(retry_after: str) -> float:
    try:
        return float(retry_after)
    except ValueError:
        return float("inf")  # an HTTP date: prefer any number of seconds


class BackendTLSError(BackendError):
    code = "backend_tls_error"
    kind = "tls"


# --- rendering ----------------------------------------------------------------------------------


def redact(text: str, secrets) -> str:
    # Longest first: a secret that starts another would otherwise leave the other's tail behind.
    for secret in sorted(secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "[redacted]")
    return text


MESSAGE_LIMIT = 2000  # a backend's error page is not passed on whole


def redacted_body(error: GatewayError, secrets=()) -> dict:
    """`error.body()` with its message redacted and shortened, as every answer carries it."""
    body = error.body()
    # Redacted before it is shortened: a secret cut in half would no longer match.
    body["error"]["message"] = redact(body["error"]["message"], secrets)[:MESSAGE_LIMIT]
    return body


def error_json(error: GatewayError, secrets=()) -> bytes:
    return dumps(redacted_body(error, secrets))
