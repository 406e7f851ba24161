"""One client request's way through its model's backends, in order: `Attempts`.

The order is the model's routing strategy's for this request (strategies.py): the config's list
(`ordered`), or its own choice first (`round_robin`, `least_busy`, `affinity`); failover is the
same under every strategy.

A model usually has one backend; with `backends = [...]` the request goes to the first that can
take it. Until the first content event has gone out, a backend whose failure is its own (see
`BackendError.passes_on`: unreachable, TLS, timeout, 5xx, 429, 401/403, an invalid answer), that
is cooling down, or that has no free slot, passes the request to the next, with fresh headers
(the call is built again per attempt). After the first content event, never: the answer the user
started to see is not repeated by another backend. Other 4xx answers are about the request and
are returned at once.

Each attempt holds its own backend slot while it runs, and tells the backend's circuit breaker
how it went. With one backend, its failure is raised as it is; with several, one error names each
backend and why.
"""

import math

from ..chat.chunks import UsageNote, shows_nothing
from ..concurrency import cancelled
from ..errors import AllBackendsFailed, BackendCoolingDown, BackendError, GatewayBusy, GatewayError


class Attempts:
    __slots__ = ("_model_id", "_backends", "_build", "_on_failover", "_on_call_ended", "answered_by", "tried")

    def __init__(self, model_id: str, backends: list, build, on_failover=None, on_call_ended=None):
        """`build(backend)` makes the UpstreamCall for one attempt; `on_failover(backend_name)` is
        told each time a request is passed on from a backend to the next; `on_call_ended(backend_name,
        error_kind)` once per call made to a backend, as it ends (`error_kind` None: it answered, or
        the client left), whether or not another backend then took the request."""
        self._model_id = model_id
        self._backends = backends
        self._build = build
        self._on_failover = on_failover
        self._on_call_ended = on_call_ended or _ignore
        self.answered_by = None  # the backend whose answer the client gets
        self.tried = []  # (backend name, "ok" or the failure's kind), for the access log

    def complete(self, method: str = "complete") -> dict:
        """The first whole answer a backend gives: `stream: false` chat, or (method "embed")
        embeddings."""
        failures = []
        for backend in self._backends:
            slot = self._take(backend, failures)
            if slot is None:
                continue
            try:
                call = self._call_for(backend)
                try:
                    answer = getattr(backend, method)(call)
                except BackendError as error:
                    if not self._passed_on(backend, error, failures):
                        raise
                    continue
                except BaseException:
                    self._undecided(backend, called=True)
                    raise
            finally:
                slot.release()
            self._succeeded(backend)
            return answer
        raise self._all_failed(failures)

    def events(self):
        """The payloads of the first backend that sends a content event; then only that one's.
        Until its first content event, what a backend sends that shows nothing (a role-only
        chunk, which vLLM and OpenAI send first) is held back, so a backend that fails after it
        still passes the request on. The last backend's go out at once: there is no next one."""
        failures = []
        for backend in self._backends:
            slot = self._take(backend, failures)
            if slot is None:
                continue
            payloads = None
            try:
                call = self._call_for(backend)
                try:
                    payloads = backend.events(call)
                    opening = _opening(payloads, hold=backend is not self._backends[-1])
                except BackendError as error:
                    if self._passed_on(backend, error, failures):
                        continue
                    raise
                except BaseException:
                    self._undecided(backend, called=True)
                    raise
                self.answered_by = backend
                if opening:
                    try:
                        yield from opening
                        yield from payloads
                    except BackendError as error:  # after the first event: the stream ends with it
                        self._judge(backend, error)
                        raise
                    except BaseException:  # the client left
                        self._undecided(backend, called=True)
                        raise
                self._succeeded(backend)
                return
            finally:
                if payloads is not None:
                    payloads.close()
                slot.release()
        raise self._all_failed(failures)

    @property
    def only_backend(self):
        """The model's one backend, when it has no other; else None."""
        return self._backends[0] if len(self._backends) == 1 else None

    # --- one attempt ---------------------------------------------------------------------------

    def _take(self, backend, failures):
        """The backend's slot, or None (and the reason noted) when it must be skipped."""
        if not backend.breaker.allows():
            failures.append((backend.name, _cooling_down(backend)))
            self.tried.append((backend.name, "cooling_down"))
            self._note_failover(backend)
            return None
        try:
            return backend.acquire()
        except GatewayBusy as busy:  # its max_concurrency, or global_max_concurrency (GlobalBusy)
            backend.breaker.undecided()
            failures.append((backend.name, busy))
            self.tried.append((backend.name, busy.kind))
            self._note_failover(backend)
            return None
        except BaseException:  # shared limits unavailable (503): not the backend's failure
            backend.breaker.undecided()
            raise

    def _call_for(self, backend):
        """This attempt's backend call (fresh headers, the backend's own upstream name); a call
        that cannot even be built (a user value too long for a header) leaves no verdict."""
        try:
            return self._build(backend)
        except BaseException:
            self._undecided(backend, called=False)
            raise

    def _judge(self, backend, error: BackendError) -> bool:
        """Tells the backend's breaker and the call counts what `error` says about it, notes the
        attempt, and says whether the error is the backend's own (it may pass the request on)."""
        if cancelled():  # a reader thread we aborted (the client left): no verdict
            self._undecided(backend, called=True)
            return False
        self.tried.append((backend.name, error.kind))
        self._on_call_ended(backend.name, error.kind)
        if not error.passes_on:
            backend.breaker.succeeded()  # the backend answered: it is alive, the request was wrong
            return False
        backend.breaker.failed(error.reason)
        return True

    def _undecided(self, backend, called: bool) -> None:
        """The attempt ended with no verdict on the backend (the client left, or the call could
        not even be built): another request may try it."""
        backend.breaker.undecided()
        if called:
            self._on_call_ended(backend.name, None)

    def _passed_on(self, backend, error: BackendError, failures: list) -> bool:
        """Whether the request goes on to the next backend after `error` (True) or fails with it."""
        if not self._judge(backend, error):
            return False
        failures.append((backend.name, error))
        self._note_failover(backend)
        return True

    def _note_failover(self, backend) -> None:
        if self._on_failover is not None and backend is not self._backends[-1]:
            self._on_failover(backend.name)

    def _succeeded(self, backend) -> None:
        backend.breaker.succeeded()
        self.answered_by = backend
        self.tried.append((backend.name, "ok"))
        self._on_call_ended(backend.name, None)

    def _all_failed(self, failures: list) -> GatewayError:
        if len(failures) == 1:
            return failures[0][1]  # one backend: its own error, exactly as without failover
        return AllBackendsFailed(self._model_id, failures)


def _ignore(*args) -> None:
    pass


_HELD_AT_MOST = 16  # opening events held back before the first content event; more are taken as content


def _opening(payloads, hold: bool) -> list:
    """A backend's first payloads, up to and including its first content event (all of them if
    the stream ends first). Without `hold`, only the first."""
    opening = []
    for payload in payloads:
        opening.append(payload)
        if not hold or len(opening) >= _HELD_AT_MOST or not _may_wait(payload):
            break
    return opening


def _may_wait(payload) -> bool:
    """Whether a payload may be held back for the first content event: a chunk that shows
    nothing, or a whole answer's token counts (UsageNote)."""
    return isinstance(payload, UsageNote) if payload.__class__ is not bytes else shows_nothing(payload)


def _cooling_down(backend) -> BackendCoolingDown:
    """Why a backend is skipped: its failing health probes (health.py), or its breaker's cooldown."""
    breaker = backend.breaker
    if breaker.probe_failing is not None:
        # The soonest it can be back: healthy_after passing probes from now.
        wait = backend.config.health_interval_seconds * backend.config.healthy_after
        return BackendCoolingDown(
            backend.name, f"is cooling down: its health check fails ({breaker.probe_failing})", headers={"Retry-After": str(max(1, math.ceil(wait)))}
        )
    _, left = breaker.state()
    return BackendCoolingDown(
        backend.name, f"is cooling down after repeated failures (for {math.ceil(left)} s more)", headers={"Retry-After": str(max(1, math.ceil(left)))}
    )
