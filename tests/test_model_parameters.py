"""Per-model `defaults` and `overrides`: what the backend receives, and a bad table stopping start-up.

In-process (`create_app(config).test_client()`) against the real loopback test backends: the
parameters are applied where the backend call is built, the same for every server.
"""

import pytest

from app import create_app
from gateway.config import ConfigError, parse_config
from gateway.upstream.parameters import describe
from tests.configs import backend, gateway_toml, model
from tests.conftest import TICKET, SecretWatchingClient

MESSAGES = [{"role": "user", "content": "hi"}]
TICKET_HEADER = {"x-dep-ticket": "${CORP_TICKET}"}


@pytest.fixture(scope="module")
def pinned_app(openai_backend, corp_backend):
    config = gateway_toml(
        backends={
            "plain": backend(corp_backend.url, headers=TICKET_HEADER),
            "relay": backend(openai_backend.url, streaming=True),
            "picky": backend(corp_backend.url, drop_params=["seed"], headers=TICKET_HEADER),
        },
        models=[
            model("pinned", "plain", defaults={"temperature": 0.4, "max_tokens": 1024, "stop": ["###"]}, overrides={"top_p": 0.9}),
            model("pinned-stream", "relay", defaults={"temperature": 0.1}, overrides={"seed": 42}),
            model("limit-pinned", "plain", overrides={"max_tokens": 256}),
            model("seed-pinned", "picky", overrides={"seed": 7, "top_k": 20}),
            model("unpinned", "plain"),
            model("own-fields", "plain", defaults={"response_format": {"type": "json_object"}},
                  overrides={"chat_template_kwargs": {"enable_thinking": False}, "repeat_penalty": 1.1}),
        ],
    )
    app = create_app(parse_config(config, "parameters test config", {"CORP_TICKET": TICKET}))
    app.test_client_class = SecretWatchingClient
    return app


@pytest.fixture
def post(pinned_app):
    client = pinned_app.test_client()
    return lambda body: client.post("/v1/chat/completions", json={"messages": MESSAGES, **body})


def test_defaults_fill_what_the_client_left_out(post, corp_backend):
    assert post({"model": "pinned"}).status_code == 200
    sent = corp_backend.last.body
    assert sent["temperature"] == 0.4 and sent["max_tokens"] == 1024 and sent["stop"] == ["###"]
    assert sent["top_p"] == 0.9


def test_defaults_fill_fields_the_client_sent_as_null(post, corp_backend):
    # Open WebUI sends null for parameters a user cleared in the chat controls.
    assert post({"model": "pinned", "temperature": None, "max_tokens": None}).status_code == 200
    sent = corp_backend.last.body
    assert sent["temperature"] == 0.4 and sent["max_tokens"] == 1024


def test_the_clients_own_values_beat_defaults_but_not_overrides(post, corp_backend):
    assert post({"model": "pinned", "temperature": 1.3, "max_tokens": 50, "stop": "END", "top_p": 0.2}).status_code == 200
    sent = corp_backend.last.body
    assert sent["temperature"] == 1.3 and sent["max_tokens"] == 50 and sent["stop"] == "END"
    assert sent["top_p"] == 0.9  # the override wins over the client


def test_a_client_limit_under_the_newer_name_is_not_doubled_by_a_default(post, corp_backend):
    assert post({"model": "pinned", "max_completion_tokens": 77}).status_code == 200
    sent = corp_backend.last.body
    assert sent["max_completion_tokens"] == 77 and "max_tokens" not in sent


def test_a_pinned_limit_replaces_the_clients_limit_under_either_name(post, corp_backend):
    assert post({"model": "limit-pinned", "max_completion_tokens": 4000}).status_code == 200
    sent = corp_backend.last.body
    assert sent["max_tokens"] == 256 and "max_completion_tokens" not in sent


def test_drop_params_still_keeps_a_field_from_a_backend_that_rejects_it(post, corp_backend):
    assert post({"model": "seed-pinned", "seed": 3}).status_code == 200
    sent = corp_backend.last.body
    assert "seed" not in sent and sent["top_k"] == 20


def test_streamed_requests_get_the_same_parameters(pinned_app, openai_backend):
    response = pinned_app.test_client().post(
        "/v1/chat/completions", json={"model": "pinned-stream", "messages": MESSAGES, "stream": True, "seed": 1})
    assert response.status_code == 200 and b"data: [DONE]" in response.get_data()
    sent = openai_backend.last.body
    assert sent["stream"] is True and sent["temperature"] == 0.1 and sent["seed"] == 42


def test_a_model_without_tables_sends_only_what_the_client_sent(post, corp_backend):
    assert post({"model": "unpinned"}).status_code == 200
    assert not {"temperature", "top_p", "max_tokens", "stop"} & set(corp_backend.last.body)


def test_one_requests_values_never_stick_to_the_model(post, corp_backend):
    # The tables are the model's, shared by every request: one request must not see another's values.
    post({"model": "pinned", "temperature": 1.9})
    post({"model": "pinned"})
    assert corp_backend.last.body["temperature"] == 0.4


# --- the config check ------------------------------------------------------------------------------


def config_with(**model_settings) -> str:
    return gateway_toml(
        backends={"corp": backend("http://127.0.0.1:9/v1/chat/completions", embeddings_url="http://127.0.0.1:9/v1/embeddings")},
        models=[model("m", "corp", **model_settings)],
    )


@pytest.mark.parametrize(
    "settings, names",
    [
        ({"defaults": {"temprature": 0.4}}, 'models."m".defaults.temprature: unknown sampling parameter: did you mean \'temperature\'?'),
        ({"overrides": {"max_token": 10}}, 'models."m".overrides.max_token: unknown sampling parameter: did you mean \'max_tokens\'?'),
        ({"overrides": {"topP": 0.9}}, 'models."m".overrides.topP: unknown sampling parameter: did you mean \'top_p\'?'),
        ({"defaults": {"Top-K": 40}}, 'models."m".defaults.Top-K: unknown sampling parameter: did you mean \'top_k\'?'),
        ({"overrides": {"stream_options": {"include_usage": True}}}, 'models."m".overrides.stream_options: cannot be set per model'),
        ({"overrides": {"top_p": "0.9"}}, 'models."m".overrides.top_p: must be a number'),
        ({"defaults": {"max_tokens": 10.5}}, 'models."m".defaults.max_tokens: must be an integer'),
        ({"defaults": {"max_tokens": 0}}, 'models."m".defaults.max_tokens: must be at least 1'),
        ({"defaults": {"seed": True}}, 'models."m".defaults.seed: must be an integer'),
        ({"overrides": {"stop": ["a", 1]}}, 'models."m".overrides.stop: must be a string or a list of strings'),
        ({"overrides": {"reasoning_effort": 3}}, 'models."m".overrides.reasoning_effort: must be a string'),
        ({"overrides": {"model": "other"}}, 'models."m".overrides.model: cannot be set per model'),
        ({"overrides": {"messages": []}}, 'models."m".overrides.messages: cannot be set per model'),
        ({"overrides": {"stream": True}}, 'models."m".overrides.stream: cannot be set per model'),
        ({"overrides": {"tools": []}}, 'models."m".overrides.tools: cannot be set per model'),
        ({"defaults": {"stream": False}}, 'models."m".defaults.stream: cannot be set per model'),
        ({"defaults": "temperature=0.4"}, 'models."m".defaults: must be a table'),
        ({"kind": "embeddings", "defaults": {"temperature": 0.4}}, 'models."m".defaults: applies to chat models only'),
    ],
)
def test_a_bad_table_stops_start_up_naming_the_key(settings, names):
    with pytest.raises(ConfigError) as caught:
        parse_config(config_with(**settings), "gw.toml", {})
    assert str(caught.value).startswith("gw.toml: ") and names in str(caught.value)


def test_every_known_parameter_is_accepted_with_its_type():
    tables = {
        "temperature": 0, "top_p": 1, "max_tokens": 1, "max_completion_tokens": 2, "n": 1, "seed": -5,
        "presence_penalty": -1.5, "frequency_penalty": 0.5, "stop": "x", "reasoning_effort": "low",
        "logit_bias": {"50256": -100}, "logprobs": True, "top_logprobs": 3, "parallel_tool_calls": False,
        "top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1,
    }
    config = parse_config(config_with(defaults=tables, overrides={"stop": ["a", "b"]}), "gw.toml", {})
    assert config.models["m"].defaults == tables and config.models["m"].overrides == {"stop": ["a", "b"]}


def test_a_backends_own_fields_are_sent_as_they_are(post, corp_backend):
    """vLLM's `chat_template_kwargs` (Qwen3's thinking switch), llama.cpp's `repeat_penalty`: fields
    the gateway does not know go to the backend as the table has them."""
    assert post({"model": "own-fields"}).status_code == 200
    sent = corp_backend.last.body
    assert sent["chat_template_kwargs"] == {"enable_thinking": False} and sent["repeat_penalty"] == 1.1
    assert sent["response_format"] == {"type": "json_object"}
    assert post({"model": "own-fields", "response_format": {"type": "text"}}).status_code == 200
    assert corp_backend.last.body["response_format"] == {"type": "text"}  # a default: the client's own wins


def test_a_date_in_a_table_stops_start_up_naming_the_key():
    text = config_with() + "\n[models.overrides]\nvalid_until = 2026-12-31\n"
    with pytest.raises(ConfigError, match=r'models\."m"\.overrides\.valid_until: must hold values JSON can carry'):
        parse_config(text, "gw.toml", {})


def test_a_models_tables_in_one_line_for_make_check():
    assert describe({"temperature": 0.4, "max_tokens": 1024}, {"top_p": 0.9}) == "defaults temperature=0.4, max_tokens=1024; overrides top_p=0.9"
    assert describe({}, {"stop": ["###"]}) == "overrides stop=['###']"
    assert describe({}, {}) == "no pinned parameters"
