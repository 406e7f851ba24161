"""In-house CAs, client certificates, proxies and redirects, with certificates the tests make.

Every peer is on loopback: HTTPS test backends (plain, demanding a client certificate, expired,
for another host name), a TCP listener that never answers a TLS handshake, and a small
forwarding proxy that records what it carried.
"""

import socket
import time
import ssl

import pytest
import requests

from tests.backends import TestBackend, chunk_json
from tests.certificates import TestCA
from tests.configs import backend, gateway_toml, model
from tests.gunicorn_server import GatewayServer
from tests.proxy import TestProxy
from tests.sse_client import content_of, data_payloads, read_events

MESSAGES = [{"role": "user", "content": "hello over TLS"}]


def server_context(ca, name, *, require_client=False, **issue):
    cert, key = ca.issue(name, **issue)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if require_client:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(ca.path)
    return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    ca = TestCA(directory)
    client_cert, client_key = ca.issue("gateway-client", client=True)
    combined = directory / "gateway-client-combined.pem"  # cert and key in one file
    combined.write_bytes(client_cert.read_bytes() + client_key.read_bytes())
    return {"ca": ca, "client_cert": client_cert, "client_key": client_key, "combined": combined}


@pytest.fixture(scope="module")
def peers(pki):
    ca = pki["ca"]
    peers = {
        "tls": TestBackend(streaming=True, tls=server_context(ca, "backend")),
        "mtls": TestBackend(streaming=True, tls=server_context(ca, "mtls-backend", require_client=True)),
        "expired": TestBackend(streaming=True, tls=server_context(ca, "expired-backend", expired=True)),
        "wronghost": TestBackend(streaming=True, tls=server_context(ca, "other-backend", hosts=("other.example",))),
        "plain": TestBackend(streaming=False),
        "elsewhere": TestBackend(streaming=False),  # where a redirect points: must never be called
    }
    silent = socket.socket()  # accepts TCP connections and never says a word of TLS
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    peers["silent_port"] = silent.getsockname()[1]
    peers["proxy"] = TestProxy()
    yield peers
    silent.close()
    for name, peer in peers.items():
        if hasattr(peer, "stop"):
            peer.stop()


@pytest.fixture(autouse=True)
def _reset_peers(peers):
    yield
    for peer in peers.values():
        if isinstance(peer, TestBackend):
            peer.reset()
    peers["proxy"].targets.clear()


def model_per_backend(**backends):
    """A config with these backends and, for each, a model of the same name."""
    return gateway_toml(backends=backends, models=[model(name, name) for name in backends])


@pytest.fixture(scope="module")
def corporate(pki, peers, tmp_path_factory):
    ca = str(pki["ca"].path)
    config = model_per_backend(
        trusted=backend(peers["tls"].url, ca_bundle=ca, streaming=True),
        untrusted=backend(peers["tls"].url, streaming=True),
        mtls_ok=backend(peers["mtls"].url, ca_bundle=ca, client_cert=str(pki["client_cert"]), client_key=str(pki["client_key"])),
        mtls_combined=backend(peers["mtls"].url, ca_bundle=ca, client_cert=str(pki["combined"])),
        mtls_missing=backend(peers["mtls"].url, ca_bundle=ca),
        expired=backend(peers["expired"].url, ca_bundle=ca),
        wronghost=backend(peers["wronghost"].url, ca_bundle=ca),
        insecure=backend(peers["tls"].url, verify=False),
        proxied_plain=backend(peers["plain"].url, proxy=peers["proxy"].url),
        proxied_tls=backend(peers["tls"].url, ca_bundle=ca, proxy=peers["proxy"].url),
        stall_handshake=backend(f"https://127.0.0.1:{peers['silent_port']}/v1/chat/completions", ca_bundle=ca, connect_timeout=0.5),
        stall_body=backend(peers["tls"].url, ca_bundle=ca, streaming=True, read_timeout=0.5),
        redirecting=backend(peers["plain"].url),
    )
    server = GatewayServer(config, tmp_path_factory.mktemp("corporate"))
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def chat(gateway, model, stream=False):
    return requests.post(gateway.url + "/v1/chat/completions", json={"model": model, "messages": MESSAGES, "stream": stream},
                         stream=stream, timeout=30)


def assert_502(response, *words):
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    for word in words:
        assert word in error["message"], error["message"]
    assert "Traceback" not in response.text
    return error


# --- in-house CA ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_backend_signed_by_an_in_house_ca_works_with_ca_bundle(corporate, peers, stream):
    response = chat(corporate, "trusted", stream)
    assert response.status_code == 200
    text = content_of(data_payloads(read_events(response))) if stream else response.json()["choices"][0]["message"]["content"]
    assert text == "echo 1: hello over TLS"
    assert peers["tls"].last.body["messages"] == MESSAGES


def test_without_ca_bundle_the_certificate_is_not_trusted(corporate, peers):
    error = assert_502(chat(corporate, "untrusted"), "Backend 'untrusted'", "does not trust", "ca_bundle")
    assert error["code"] == "backend_tls_error"
    assert peers["tls"].requests == []  # nothing was sent to a server we could not verify


@pytest.mark.parametrize("model, words", [("expired", ("expired",)), ("wronghost", ("another host name",))])
def test_expired_or_wrong_host_certificates_say_so(corporate, model, words):
    assert_502(chat(corporate, model), f"Backend '{model}'", *words)


# --- client certificates ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["mtls_ok", "mtls_combined"])
def test_client_certificate_is_presented(corporate, peers, model):
    response = chat(corporate, model)
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "echo 1: hello over TLS"


def test_missing_client_certificate_is_a_clear_502(corporate):
    error = assert_502(chat(corporate, "mtls_missing"), "Backend 'mtls_missing'", "client certificate")
    assert error["code"] == "backend_tls_error"


# --- proxies ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model, peer", [("proxied_plain", "plain"), ("proxied_tls", "tls")])
def test_configured_proxy_carries_the_backend_traffic(corporate, peers, model, peer):
    response = chat(corporate, model)
    assert response.status_code == 200, response.text
    assert peers["proxy"].targets == [f"127.0.0.1:{peers[peer].port}"]
    assert len(peers[peer].requests) == 1


def test_no_proxy_configured_means_direct(corporate, peers):
    assert chat(corporate, "trusted").status_code == 200
    assert peers["proxy"].targets == []


def environment_gateway(pki, peers, tmp_path, env):
    config = model_per_backend(env_tls=backend(peers["tls"].url, ca_bundle=str(pki["ca"].path)), env_plain=backend(peers["plain"].url))
    return GatewayServer(config, tmp_path, env=env).wait_ready()


def test_environment_proxy_variables_apply(pki, peers, tmp_path):
    server = environment_gateway(pki, peers, tmp_path, {"HTTPS_PROXY": peers["proxy"].url, "HTTP_PROXY": peers["proxy"].url})
    try:
        assert chat(server, "env_tls").status_code == 200
        assert chat(server, "env_plain").status_code == 200
        assert sorted(peers["proxy"].targets) == sorted([f"127.0.0.1:{peers['tls'].port}", f"127.0.0.1:{peers['plain'].port}"])
    finally:
        server.stop()


def test_no_proxy_covering_the_backend_bypasses_the_proxy(pki, peers, tmp_path):
    server = environment_gateway(pki, peers, tmp_path, {"HTTPS_PROXY": peers["proxy"].url, "HTTP_PROXY": peers["proxy"].url,
                                                        "NO_PROXY": "127.0.0.1"})
    try:
        assert chat(server, "env_tls").status_code == 200 and chat(server, "env_plain").status_code == 200
        assert peers["proxy"].targets == []
    finally:
        server.stop()


# --- redirects ----------------------------------------------------------------------------------------------


def test_redirect_is_never_followed(corporate, peers):
    target = f"http://127.0.0.1:{peers['elsewhere'].port}/v1/chat/completions"
    peers["plain"].respond_with(lambda ex: ex.send_raw(307, "text/plain", b"", headers={"Location": target}))
    error = assert_502(chat(corporate, "redirecting"), "Backend 'redirecting'", f"127.0.0.1:{peers['elsewhere'].port}")
    assert error["code"] == "backend_redirect"
    assert peers["elsewhere"].requests == [] and peers["elsewhere"].open_connections == 0


# --- TLS stalls are timeouts ---------------------------------------------------------------------------------


def test_stall_in_the_tls_handshake_is_504(corporate):
    response = chat(corporate, "stall_handshake")
    assert response.status_code == 504
    error = response.json()["error"]
    assert error["code"] == "backend_timeout" and "Backend 'stall_handshake'" in error["message"]


def test_stall_in_a_tls_body_is_a_timeout(corporate, peers):
    def stall(exchange):
        exchange.start_sse()
        exchange.event(chunk_json(delta={"role": "assistant", "content": "begun"}))
        exchange.wait_for_client_close(timeout=30)

    peers["tls"].respond_with(stall)
    with chat(corporate, "stall_body", stream=True) as response:
        payloads = data_payloads(read_events(response))
    assert content_of(payloads) == "begun"
    assert payloads[-2]["error"]["code"] == "backend_timeout" and payloads[-1] == "[DONE]"


def test_stall_before_the_tls_answer_is_504(corporate, peers):
    peers["tls"].respond_with(lambda ex: ex.wait_for_client_close(timeout=30))
    response = chat(corporate, "stall_body")  # read_timeout 0.5 s, not streaming for the client
    assert response.status_code == 504 and "read_timeout" in response.json()["error"]["message"]


# --- verify = false ---------------------------------------------------------------------------------------------


def test_verify_false_works_warns_and_shows(corporate):
    assert chat(corporate, "insecure").status_code == 200
    warning = next(line for line in corporate.log().splitlines() if "verify = false" in line)
    assert "'insecure'" in warning
    page = requests.get(corporate.url + "/", timeout=10).text
    assert "NOT verified" in page
    status = requests.get(corporate.url + "/status.json", timeout=10).json()
    assert {b["name"]: b["verify"] for b in status["backends"]}["insecure"] is False


# --- files named in the config ------------------------------------------------------------------------------------


@pytest.mark.parametrize("key, value, reason", [
    ("ca_bundle", "/nonexistent/ca.pem", "does not exist"),
    ("ca_bundle", "README.md", "holds no PEM certificate"),
    ("client_cert", "README.md", "holds no PEM certificate"),
    ("client_key", "README.md", "is set without client_cert"),
])
def test_unusable_tls_files_stop_start_up_naming_the_key(peers, tmp_path, key, value, reason):
    from tests.gunicorn_server import ROOT
    path = value if value.startswith("/") else str(ROOT / value)
    server = GatewayServer(model_per_backend(b=backend(peers["tls"].url, **{key: path})), tmp_path)
    try:
        assert server.wait_exit(timeout=30) != 0
        log = server.log()
        assert f"backends.b.{key}" in log and reason in log and "Traceback" not in log
    finally:
        server.stop()


def test_a_pem_file_openssl_rejects_stops_the_worker_cleanly(peers, tmp_path):
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    server = GatewayServer(model_per_backend(b=backend(peers["tls"].url, ca_bundle=str(broken))), tmp_path / "run")
    try:
        assert server.wait_exit(timeout=30) != 0
        log = server.log()
        assert "backends.b.ca_bundle: not a usable CA bundle" in log
    finally:
        server.stop()


# --- a relay over TLS, read in place after its first event ---------------------------------------------


@pytest.fixture(scope="module")
def tls_relay(pki, peers, tmp_path_factory):
    config = gateway_toml(
        gateway={"heartbeat_seconds": 0.3},
        backends={"trusted": backend(peers["tls"].url, ca_bundle=str(pki["ca"].path), streaming=True)},
        models=[model("trusted", "trusted")],
    )
    server = GatewayServer(config, tmp_path_factory.mktemp("tls-relay"))
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "until-close"])
def test_a_tls_relay_pauses_gets_keepalives_and_delivers_every_event(tls_relay, peers, chunked):
    def pause_then_burst(exchange):
        exchange.start_sse(chunked=chunked)
        exchange.event(chunk_json(delta={"role": "assistant", "content": "a"}))
        time.sleep(1.0)  # silent for three heartbeats: the body waits on the TLS socket itself
        for piece in "bcdef":  # then several events at once, which TLS may hand over in one record
            exchange.event(chunk_json(delta={"content": piece}))
        exchange.event(chunk_json(delta={}, finish_reason="stop"))
        exchange.event("[DONE]")
        exchange.end_sse()

    peers["tls"].respond_with(pause_then_burst)
    with chat(tls_relay, "trusted", stream=True) as response:
        items = read_events(response)
    kinds = [kind for kind, _ in items]
    first_data = kinds.index("data")
    assert "comment" in kinds[first_data + 1 :], items  # keep-alives between "a" and "b"
    assert content_of(data_payloads(items)) == "abcdef"
    assert data_payloads(items)[-1] == "[DONE]"
