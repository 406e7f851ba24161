"""One requests `Session` per backend: its TLS context, proxies and connection pool, set up once.

Backends on the same host and port with different TLS settings must not share a pool, and
requests would otherwise re-read the environment (proxies, CA bundle) and certificate files on
every call or connection: all of that is resolved here, at start-up.
"""

import os
import ssl

import certifi
import requests
from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from ..concurrency import readable_now, request_sent
from ..config import BackendConfig, ConfigError


def _proxies(config: BackendConfig) -> dict:
    """The backend's proxy: its own `proxy`, else HTTPS_PROXY/HTTP_PROXY unless NO_PROXY covers it.
    Resolved once at start-up: requests would read the environment again on every call."""
    if config.proxy:
        return {"http": config.proxy, "https": config.proxy}
    return get_environ_proxies(config.url) or {}


def _tls_context(config: BackendConfig) -> ssl.SSLContext:
    """Everything TLS for one backend, loaded once: urllib3 would re-read the CA and client
    certificate files on every new connection, blocking the worker for milliseconds each time."""
    try:
        context = ssl.create_default_context(cafile=config.ca_bundle or os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE") or certifi.where())
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"backends.{config.name}.ca_bundle: not a usable CA bundle ({exc})") from None
    if config.client_cert:
        try:
            # No pass phrase: OpenSSL would otherwise prompt on the worker's terminal and hang it.
            context.load_cert_chain(config.client_cert, config.client_key, password=lambda: b"")
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"backends.{config.name}.client_cert: not a usable certificate and key ({exc})") from None
    if not config.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _BackendConnection:
    """What the gateway's connections (plain and TLS) add to urllib3's."""

    @property
    def is_connected(self) -> bool:
        # urllib3 asks before reusing a pooled connection, with a zero-timeout `select.poll`: under
        # gevent, gevent's poll (io watchers and a zero Timeout that fires, about a tenth of a
        # millisecond per backend call), where the system's answers at once (readable_now). An
        # idle pooled connection with anything to read was closed (or broken) by the backend.
        return self.sock is not None and not readable_now(self.sock.fileno())

    def request(self, *args, **kwargs):
        super().request(*args, **kwargs)
        if self.sock is not None:
            request_sent(self.sock)  # a stream waiting for its first event may watch it (concurrency.SameTurnWake)


class _Connection(_BackendConnection, HTTPConnection):
    pass


class _TLSConnection(_BackendConnection, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


_POOLS = {"http": _Pool, "https": _TLSPool}


class _BackendAdapter(HTTPAdapter):
    """requests' adapter with the backend's own SSLContext, and nothing re-read per connection."""

    def __init__(self, tls: ssl.SSLContext | None, **kwargs):
        self._tls = tls
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        if self._tls is not None:
            kwargs["ssl_context"] = self._tls
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy, **kwargs):
        if self._tls is not None:
            kwargs["ssl_context"] = self._tls
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = _POOLS
        return manager

    def cert_verify(self, conn, url, verify, cert):
        # The context already holds the CA and client certificate; requests would otherwise have
        # urllib3 load certifi's bundle into it again for every connection.
        conn.cert_reqs = "CERT_REQUIRED" if verify else "CERT_NONE"
        conn.ca_certs = conn.ca_cert_dir = None


def backend_session(config: BackendConfig, pool_size: int) -> tuple[requests.Session, HTTPAdapter]:
    """The backend's session (it owns the pool and the proxies) and its adapter, to send through."""
    session = requests.Session()
    session.trust_env = False  # proxies and CA are resolved once, here
    # Every URL of the backend (chat, embeddings, model list, health probe) uses its TLS settings.
    urls = (config.url, config.embeddings_url or "", config.models_url or "", config.health_url or "")
    tls = _tls_context(config) if any(url.startswith("https:") for url in urls) else None
    adapter = _BackendAdapter(tls, pool_connections=1, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.proxies = _proxies(config)
    return session, adapter
