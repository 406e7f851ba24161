"""The config file: what it accepts, and a bad one stopping start-up with a message naming the key."""

import pytest

from gateway.config import ConfigError, load_config, parse_config
from tests.gunicorn_server import GatewayServer

GOOD = """
[gateway]
api_keys = ["${GATEWAY_API_KEY}"]
heartbeat_seconds = 10

[backends.corp]
url = "https://llm.corp.example/ask?token=${CORP_TICKET}"
streaming = false

[backends.corp.headers]
x-dep-ticket = "${CORP_TICKET}"
User-Id = "{user.email|anonymous}"

[[models]]
id = "Gauss2-37b-instruct-v1.0"
backend = "corp"
system_prompt = "아는 것에 대해서만 대답해주세요."
"""
ENV = {"CORP_TICKET": "tkt-secret-1234", "GATEWAY_API_KEY": "sk-inbound-5678"}


def test_good_config():
    config = parse_config(GOOD, "gw.toml", ENV)
    backend = config.backends["corp"]
    assert backend.streaming is False and backend.read_timeout == 300 and backend.max_concurrency == 64
    assert backend.location == "https://llm.corp.example"  # never the path or query with its token
    assert config.models["Gauss2-37b-instruct-v1.0"].upstream_for("corp") == "Gauss2-37b-instruct-v1.0"
    assert config.gateway.api_keys == ("sk-inbound-5678",)
    assert {"tkt-secret-1234", "sk-inbound-5678"} <= config.secrets
    assert backend.headers.render({})["x-dep-ticket"] == "tkt-secret-1234"


def test_no_config_means_demo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config({})
    assert config.demo and list(config.models) == ["demo-echo"]


def test_gateway_toml_in_the_working_directory_is_used(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gateway.toml").write_text(GOOD, encoding="utf-8")
    assert load_config(ENV).source == "gateway.toml"


@pytest.mark.parametrize(
    "change, names",
    [
        (lambda t: t.replace("streaming = false", "streaming = false\nstreeming = true"), "backends.corp.streeming: unknown key"),
        (lambda t: t.replace('backend = "corp"', 'backend = "crop"'), 'models."Gauss2-37b-instruct-v1.0".backend: names backend \'crop\''),
        (lambda t: t.replace("${CORP_TICKET}\"\nUser", "${CORP_TIKET}\"\nUser"), "backends.corp.headers.x-dep-ticket: environment variable CORP_TIKET is not set"),
        (lambda t: t.replace("heartbeat_seconds = 10", 'heartbeat_seconds = "10"'), 'gateway.heartbeat_seconds: must be a number (got "10", a string)'),
        (lambda t: t.replace("heartbeat_seconds = 10", "heartbeat_seconds = 0"), "gateway.heartbeat_seconds: must be greater than 0 (got 0)"),
        (lambda t: t.replace("streaming = false", 'streaming = "no"'), 'backends.corp.streaming: must be true or false (got "no", a string)'),
        (lambda t: t.replace("{user.email|anonymous}", "{user.mail}"), "backends.corp.headers.User-Id: unknown placeholder {user.mail}"),
        (lambda t: t.replace('url = "https://', 'url = "ftp://'), "backends.corp.url: must be an http"),
        (lambda t: t + '\n[[models]]\nid = "Gauss2-37b-instruct-v1.0"\nbackend = "corp"\n', 'models."Gauss2-37b-instruct-v1.0".id: duplicate model id'),
        (lambda t: t.replace("[gateway]", "[gateway"), "not valid TOML"),
    ],
)
def test_bad_config_names_file_key_and_reason(change, names):
    with pytest.raises(ConfigError) as caught:
        parse_config(change(GOOD), "gw.toml", ENV)
    message = str(caught.value)
    assert message.startswith("gw.toml: ") and names in message


def test_every_problem_of_a_file_is_reported_in_one_run():
    """An unset ${VAR} used to hide an unknown key, and a field error every cross-check: no more."""
    text = (GOOD.replace("heartbeat_seconds = 10", "heartbeat_second = 10")
            .replace("streaming = false", 'streaming = "no"\nread_timeot = 5')
            .replace("${CORP_TICKET}\"\nUser", "${CORP_TIKET}\"\nUser")
            .replace('backend = "corp"', 'backend = "crop"'))
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "gw.toml", ENV)
    problems = str(caught.value).removeprefix("gw.toml: ").split("; ")
    assert sorted(problems) == sorted([
        "backends.corp.headers.x-dep-ticket: environment variable CORP_TIKET is not set",
        "gateway.heartbeat_second: unknown key (did you mean `heartbeat_seconds`?)",
        'backends.corp.streaming: must be true or false (got "no", a string)',
        "backends.corp.read_timeot: unknown key (did you mean `read_timeout`?)",
        'models."Gauss2-37b-instruct-v1.0".backend: names backend \'crop\', which is not defined (defined: corp)',
    ])


def test_a_wrong_value_from_the_environment_is_not_shown():
    text = GOOD.replace('api_keys = ["${GATEWAY_API_KEY}"]', 'api_keys = "${GATEWAY_API_KEY}"')
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "gw.toml", ENV)
    assert str(caught.value) == 'gw.toml: gateway.api_keys: must be a list (got "[redacted]", a string)'


def test_a_model_without_an_id_is_named_by_its_place():
    with pytest.raises(ConfigError) as caught:
        parse_config(GOOD + '\n[[models]]\nbackend = "corp"\n', "gw.toml", ENV)
    assert str(caught.value) == "gw.toml: models.1.id: is required"


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config({"GATEWAY_CONFIG": str(tmp_path / "missing.toml")})


BAD_FILES = [
    (lambda t: t.replace("streaming = false", "streaming = false\nbogus = 1"), "backends.corp.bogus: unknown key"),
    (lambda t: t.replace('backend = "corp"', 'backend = "nope"'), 'models."Gauss2-37b-instruct-v1.0".backend'),
    (lambda t: t.replace("${CORP_TICKET}\"\nUser", "${UNSET_TICKET_VAR}\"\nUser"), "environment variable UNSET_TICKET_VAR is not set"),
]


@pytest.mark.parametrize("change, names", BAD_FILES)
def test_bad_config_file_names_the_file_and_key_without_secrets(tmp_path, change, names):
    """What the gunicorn master does at start-up (load_config from GATEWAY_CONFIG), without starting it."""
    path = tmp_path / "gateway.toml"
    path.write_text(change(GOOD), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config({**ENV, "GATEWAY_CONFIG": str(path)})
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and names in message
    assert "tkt-secret-1234" not in message


@pytest.mark.parametrize("change, names", BAD_FILES[2:])  # one case: the server's own start-up is slow to repeat
def test_bad_config_stops_the_real_server(tmp_path, change, names):
    server = GatewayServer(change(GOOD), tmp_path, env=ENV)
    try:
        assert server.wait_exit(timeout=30) != 0
        log = server.log()
        assert names in log and "gateway.toml" in log
        assert "Traceback" not in log
        assert "tkt-secret-1234" not in log
    finally:
        server.stop()


def test_env_values_in_header_templates_are_literal_text():
    config = parse_config(GOOD, "gw.toml", {**ENV, "CORP_TICKET": "tk{uuid}-{x}}"})
    assert config.backends["corp"].headers.render({})["x-dep-ticket"] == "tk{uuid}-{x}}"


def test_secrets_are_env_values_keys_and_secret_query_values_only():
    text = GOOD.replace('User-Id = "{user.email|anonymous}"', 'User-Id = "{user.email|anonymous}"\nx-literal = "D0aKG-system"')
    text = text.replace("?token=${CORP_TICKET}", "?token=${CORP_TICKET}&region=seoul-2&sig=lit%2Fsig%2B42")
    config = parse_config(text, "gw.toml", {**ENV, "CORP_TICKET": "tkt/secret 1234"})
    assert {"tkt/secret 1234", "tkt%2Fsecret%201234", "tkt%2Fsecret+1234", "sk-inbound-5678", "lit/sig+42"} <= config.secrets
    # literal header values, ordinary query values, names, hosts and ports stay readable
    assert not {"D0aKG-system", "seoul-2", "corp", "llm.corp.example"} & config.secrets


@pytest.mark.parametrize("url", ["http://h:99999/x", "http://h:abc/x", "http://[::1/x", "demo-echo"])
def test_malformed_urls_are_config_errors(url):
    with pytest.raises(ConfigError, match="backends.corp.url"):
        parse_config(GOOD.replace("https://llm.corp.example/ask?token=${CORP_TICKET}", url), "gw.toml", ENV)


def test_the_response_store_settings():
    config = parse_config(GOOD, "gw.toml", ENV)
    assert (config.gateway.data_dir, config.gateway.response_store_seconds) == ("var", 3600)
    assert parse_config(GOOD, "gw.toml", {**ENV, "GATEWAY_DATA_DIR": "/var/lib/llm-gateway"}).gateway.data_dir == "/var/lib/llm-gateway"
    own = GOOD.replace("heartbeat_seconds = 10", 'heartbeat_seconds = 10\ndata_dir = "state"\nresponse_store_seconds = 0')
    config = parse_config(own, "gw.toml", {**ENV, "GATEWAY_DATA_DIR": "/var/lib/llm-gateway"})
    assert (config.gateway.data_dir, config.gateway.response_store_seconds) == ("state", 0)  # the file wins
    for bad, says in (("response_store_seconds = -1", "gateway.response_store_seconds: must be at least 0 (got -1)"),
                      ('response_store_seconds = "1h"', 'gateway.response_store_seconds: must be a number (got "1h", a string)'),
                      ('data_dir = ""', 'gateway.data_dir: must not be empty (got "", a string)')):
        with pytest.raises(ConfigError) as raised:
            parse_config(GOOD.replace("heartbeat_seconds = 10", f"heartbeat_seconds = 10\n{bad}"), "gw.toml", ENV)
        assert says in str(raised.value)
