"""The real Codex CLI (`@openai/codex` 0.169.0, installed by .ci/run into .tools/) against the gateway.

Codex speaks only the Responses API. `codex exec` runs a prompt whose (loopback test) backend
answers with an `exec_command` call: Codex runs the command, sends its output back, and prints
the backend's final text. A call of a tool Codex sent inside a `namespace` must come back with
that namespace, or Codex refuses it ("unsupported call"): the last two tests show both sides.

Codex gets a temporary HOME and CODEX_HOME (nothing of the machine's config, sessions or login
leaks in or out), the provider block docs/responses.md shows, and `-s workspace-write`: its
default sandbox for commands (bubblewrap; Codex brings its own when the system has none), which
works on this machine, so the command runs the way it would on a developer's.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.backends import not_installed, tool_round_trip
from tests.conftest import INBOUND_KEY, TICKET
from tests.gunicorn_server import ROOT, GatewayServer
from tests.responses_helpers import responses_config

CODEX = ROOT / ".tools" / "node_modules" / ".bin" / "codex"
FIXTURES = Path(__file__).parent / "fixtures" / "codex"


def require_codex() -> Path:
    problem = None
    if shutil.which("node") is None:
        problem = "node is not installed (apt-get install nodejs npm; .ci/run does)"
    elif not CODEX.exists():
        problem = "the Codex CLI is not installed: npm install --prefix .tools --no-save @openai/codex@0.169.0 (.ci/run does)"
    if problem:
        not_installed(problem)
    return CODEX


@pytest.fixture(scope="module")
def codex_gateway(openai_backend, corp_backend, tmp_path_factory):
    require_codex()
    directory = tmp_path_factory.mktemp("codex-gateway")
    config = responses_config(openai_backend.url, corp_backend.url, data_dir=str(directory / "state"))
    server = GatewayServer(config, directory, env={"CORP_TICKET": TICKET})
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def codex_exec(gateway, tmp_path, prompt: str) -> subprocess.CompletedProcess:
    home = tmp_path / "home"
    (home / ".codex").mkdir(parents=True)
    (home / ".codex" / "config.toml").write_text(f"""
model = "gpt-stream"
model_provider = "gateway"

[model_providers.gateway]
name = "llm-gateway"
base_url = "{gateway.url}/v1"
env_key = "LLM_GATEWAY_KEY"
wire_api = "responses"
""", encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    environ = {"PATH": os.environ["PATH"], "HOME": str(home), "CODEX_HOME": str(home / ".codex"), "LLM_GATEWAY_KEY": INBOUND_KEY, "LANG": "C.UTF-8"}
    return subprocess.run([str(CODEX), "exec", "--skip-git-repo-check", "-s", "workspace-write", prompt], cwd=work, env=environ,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)


def test_codex_runs_the_command_the_backend_calls_for_and_prints_the_final_text(codex_gateway, openai_backend, tmp_path):
    openai_backend.respond_with(tool_round_trip("call_c1", "exec_command", json.dumps({"cmd": "echo tool-ran-ok"}),
                                                lambda output: f"The command printed {output.strip().splitlines()[-1]}."))
    result = codex_exec(codex_gateway, tmp_path, "run echo")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "The command printed tool-ran-ok."
    first, second = openai_backend.requests[-2:]
    assert first.body["stream"] is True and first.body["messages"][-1] == {"role": "user", "content": "run echo"}
    assert "exec_command" in [tool["function"]["name"] for tool in first.body["tools"]]
    assert second.body["messages"][-2]["tool_calls"] == [
        {"id": "call_c1", "type": "function", "function": {"name": "exec_command", "arguments": '{"cmd": "echo tool-ran-ok"}'}}]
    output = second.body["messages"][-1]
    assert output["role"] == "tool" and output["tool_call_id"] == "call_c1"
    assert "tool-ran-ok" in output["content"] and "Process exited with code 0" in output["content"]  # the command's own output
    assert not (codex_gateway.workdir / "state" / "responses.sqlite3").exists()  # Codex sends store: false: nothing was stored


def test_codex_runs_a_namespaced_tool_when_its_call_carries_the_namespace(codex_gateway, openai_backend, tmp_path):
    openai_backend.respond_with(tool_round_trip("call_n1", "multi_agent_v1__close_agent", json.dumps({"target": "agent-xyz"}),
                                                lambda output: f"close_agent said: {output}"))
    result = codex_exec(codex_gateway, tmp_path, "close the agent")
    assert result.returncode == 0, result.stderr
    second = openai_backend.requests[-1].body
    # Codex's next request, as 04-namespaced-tool-result.request.json captured it: the call with its
    # namespace, mapped back to the flattened tool, and Codex's own answer to it.
    captured = json.loads((FIXTURES / "04-namespaced-tool-result.request.json").read_text())["body"]["input"][-1]["output"]
    assert second["messages"][-2]["tool_calls"][0]["function"] == {"name": "multi_agent_v1__close_agent", "arguments": '{"target": "agent-xyz"}'}
    assert second["messages"][-1]["content"] == captured
    assert result.stdout.strip() == f"close_agent said: {captured}"


def test_without_its_namespace_codex_would_refuse_the_call(codex_gateway, openai_backend, tmp_path):
    """The control: a call of the bare name (what a bridge that drops the namespace sends back) is
    answered with "unsupported call", so the test above could fail."""
    openai_backend.respond_with(tool_round_trip("call_n2", "close_agent", json.dumps({"target": "agent-xyz"}), lambda output: f"said: {output}"))
    result = codex_exec(codex_gateway, tmp_path, "close the agent")
    assert "unsupported call: close_agent" in openai_backend.requests[-1].body["messages"][-1]["content"], result.stderr
