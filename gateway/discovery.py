"""Model discovery: backends with `discover_models = true` list their own models (vLLM, llama.cpp,
TGI and Ollama answer `GET .../models`), and the gateway serves them beside the configured ones.

Each worker asks at start-up and then every `REFRESH_SECONDS`, with the backend's headers, TLS,
proxy and timeouts. Start-up waits for the first answer at most the backend's `connect_timeout`:
an answer that comes later is still taken, it just was not waited for. A backend that does not
answer keeps its last list (the status page says since when and why); an empty answer is an
answer, and empties the list.

What is served is published as one new dict at a time (`registry.discovered`), so a request
never sees half a refresh. Configured ids win over discovered ones, and a backend earlier in the
config over a later one; `model_prefix` keeps ids apart. A discovered model routes to its
backend with `upstream` = the id the backend reported, and is a chat model.

The refresher is a `threading.Thread`: under gunicorn's gevent worker, gevent's patching makes it
a greenlet; under any other server it is a real thread (a greenlet would block that server's
thread while it waits on the network).
"""

import dataclasses
import logging
import os
import threading
import time
import uuid

from .config import ModelConfig
from .errors import BackendError, BackendInvalidAnswer, redact

log = logging.getLogger("gateway")

REFRESH_SECONDS = 300.0
# Tests shorten the interval of a real server with this variable; operators have no reason to.
_INTERVAL_VARIABLE = "GATEWAY_DISCOVERY_INTERVAL"
MAX_MODELS = 1000  # per backend: a list longer than this is cut, and the status page says so


@dataclasses.dataclass
class BackendDiscovery:
    """What one backend's model list looks like from this worker."""

    backend: str
    prefix: str
    ids: tuple = ()  # as the backend reported them (without the prefix)
    reported: int = 0  # how many the backend listed (more than `ids` when cut at MAX_MODELS)
    last_attempt: float | None = None
    last_success: float | None = None
    last_error: str | None = None  # why the last attempt failed; None when it succeeded
    last_error_at: float | None = None
    running: bool = False  # a refresh is in flight (a slow one is not started twice)


def ids_in(data) -> list | None:
    """The model ids in a backend's model list, or None when it is not one. OpenAI's shape (and
    vLLM's, llama.cpp's, Ollama's) is `{"data": [{"id": ...}]}`; TGI answers one model object."""
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        entries = data["data"]
    elif isinstance(data, dict) and isinstance(data.get("id"), str):
        entries = [data]
    else:
        return None
    ids = {}  # a dict keeps the backend's order and drops repeats
    for entry in entries:
        model_id = entry.get("id") if isinstance(entry, dict) else None
        if isinstance(model_id, str) and model_id.strip():
            ids[model_id] = None  # entries without a usable id are skipped, not fatal
    return list(ids)


class Discovery:
    def __init__(self, registry, interval: float | None = None):
        self.registry = registry
        self.interval = interval or float(os.environ.get(_INTERVAL_VARIABLE) or REFRESH_SECONDS)
        self.states = {
            name: BackendDiscovery(name, cfg.model_prefix)
            for name, cfg in registry.config.backends.items() if cfg.discover_models
        }
        self._stopped = threading.Event()
        self._publishing = threading.Lock()  # outside gevent, two backends' answers may land at once
        self._thread = None

    # --- running ----------------------------------------------------------------------------------

    def start(self) -> None:
        """One first attempt per backend, side by side, waited for at most its connect_timeout;
        then the refresher. Returns at once when no backend discovers."""
        if not self.states:
            return
        started = time.monotonic()
        for name, attempt in self._ask_all():
            attempt.join(max(0.0, started + self.registry.config.backends[name].connect_timeout - time.monotonic()))
        self._thread = threading.Thread(target=self._refresh_forever, name="discovery", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _refresh_forever(self) -> None:
        while not self._stopped.wait(self.interval):
            self.refresh_all()  # a backend still busy with an earlier round is skipped (`refresh`)

    def refresh_all(self) -> None:
        """Asks every discovering backend once and returns when all have answered or failed
        (the refresher's round; tests call it directly instead of waiting for one)."""
        for _name, attempt in self._ask_all():
            attempt.join()

    def _ask_all(self) -> list:
        """Every backend asked side by side: a slow one does not hold up the others' lists."""
        attempts = []
        for name in self.states:
            attempt = threading.Thread(target=self.refresh, args=(name,), name=f"discovery-{name}", daemon=True)
            attempt.start()
            attempts.append((name, attempt))
        return attempts

    def refresh(self, name: str) -> None:
        state = self.states[name]
        if state.running:
            return
        state.running = True
        try:
            self._ask(state)
        finally:
            state.running = False

    def _ask(self, state: BackendDiscovery) -> None:
        backend = self.registry.backends[state.backend]
        state.last_attempt = time.time()
        headers = backend.config.headers.render({"request_id": uuid.uuid4().hex})
        try:
            ids = ids_in(backend.fetch_model_list(headers))
            if ids is None:
                raise BackendInvalidAnswer(state.backend, "answered its model list with JSON that is not one (no data list of models with ids)")
        except BackendError as error:
            message = redact(error.message, self.registry.config.secrets)
            if state.last_error is None:  # one line when it starts failing, not one per attempt
                kept = f"still serving the {len(state.ids)} models it listed before" if state.last_success else "no models from it yet"
                log.warning("model discovery: %s; %s", message, kept)
            state.last_error, state.last_error_at = message, time.time()
            return
        except Exception:  # noqa: BLE001 - a bug of ours must not stop the refresher for good
            log.exception("model discovery of backend '%s' failed unexpectedly", state.backend)
            state.last_error, state.last_error_at = f"Backend '{state.backend}': discovery failed unexpectedly (see the log)", time.time()
            return
        if state.last_error is not None and state.last_success is not None:
            log.info("model discovery: backend '%s' answers again (%d models)", state.backend, len(ids))
        state.ids, state.reported = tuple(ids[:MAX_MODELS]), len(ids)
        state.last_success, state.last_error, state.last_error_at = time.time(), None, None
        self._publish()

    def _publish(self) -> None:
        configured = self.registry.config.models
        with self._publishing:
            discovered = {}
            for state in self.states.values():  # config order: an earlier backend wins a clash
                for upstream in state.ids:
                    model_id = state.prefix + upstream
                    if model_id not in configured and model_id not in discovered:
                        discovered[model_id] = ModelConfig(id=model_id, backends=(state.backend,), upstream={state.backend: upstream})
            self.registry.discovered = discovered  # one assignment: a request sees the old or the new

    # --- showing ----------------------------------------------------------------------------------

    def status(self, name: str) -> dict | None:
        """For the status page and /status.json: None for a backend that does not discover."""
        state = self.states.get(name)
        if state is None:
            return None
        served = self.registry.discovered
        ids = [state.prefix + i for i in state.ids]
        if state.last_error is not None:
            condition = "failing"
        elif state.last_success is None:
            condition = "waiting"  # the first answer has not come yet
        else:
            condition = "ok"
        return {
            "state": condition,
            "models": [i for i in ids if served.get(i) is not None and served[i].backend == name],
            "shadowed": [i for i in ids if served.get(i) is None or served[i].backend != name],
            "reported": state.reported,
            "limit": MAX_MODELS,
            "last_success": state.last_success,
            "last_attempt": state.last_attempt,
            "last_error": state.last_error,
            "last_error_at": state.last_error_at,
            "interval_seconds": self.interval,
        }


def start(registry) -> Discovery:
    """Starts discovery for `registry` (see `Discovery.start`) and hangs it on the registry."""
    discovery = Discovery(registry)
    registry.discovery = discovery
    discovery.start()
    return discovery
