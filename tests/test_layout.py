"""The walls between the gateway's parts, checked by importing each part alone.

Each module is imported in a fresh interpreter, and the test looks at what that import loaded:
- the config (which the gunicorn master imports) loads neither Flask, requests, ssl nor gevent,
  so the workers' gevent patching is never too late;
- the transport (HTTP to backends) never loads Flask; views never load requests;
- SSE framing imports nothing of ours; the chat shapes and the upstream call know no HTTP library.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GATEWAY = ROOT / "gateway"

WALLS = [
    ("gateway.config", ("flask", "requests", "ssl", "gevent", "jwt", "gateway.web", "gateway.backends")),
    ("gateway.telemetry.lifecycle", ("flask", "requests", "ssl", "gevent", "prometheus_client")),
    ("gateway.backends.http", ("flask", "werkzeug", "gateway.web", "gateway.streaming", "gateway.telemetry")),
    ("gateway.backends.base", ("flask", "requests", "gateway.telemetry")),
    ("gateway.web.api", ("requests", "urllib3", "gateway.backends.http")),
    ("gateway.web.status", ("requests", "urllib3", "gateway.web.api")),
    ("gateway.web.embeddings", ("requests", "urllib3", "gateway.backends.http")),
    ("gateway.embeddings.request_schema", ("flask", "requests", "gevent")),
    ("gateway.embeddings.answers", ("flask", "requests", "gevent", "marshmallow")),
    ("gateway.upstream.embeddings", ("flask", "requests", "gevent")),
    ("gateway.sse", ("gateway.errors", "gateway.jsonio", "gateway.config", "flask", "requests", "gevent")),
    ("gateway.chat.chunks", ("flask", "requests", "gevent", "marshmallow")),
    ("gateway.upstream.call", ("flask", "requests", "gevent")),
    ("gateway.streaming.chat_stream", ("flask", "requests", "gateway.backends", "gateway.web")),
    ("gateway.registry", ("flask", "requests")),
    ("gateway.discovery", ("flask", "requests", "gateway.web")),
    ("gateway.limits.admission", ("flask", "requests", "gateway.telemetry", "gateway.web", "gateway.backends")),
    ("gateway.streaming.framing", ("flask", "requests", "gevent")),
    ("gateway.responses.request_schema", ("flask", "requests", "gevent")),
    ("gateway.responses.to_chat", ("flask", "requests", "gevent", "marshmallow")),
    ("gateway.responses.from_chat", ("flask", "requests", "gevent", "marshmallow")),
    ("gateway.responses.events", ("flask", "requests", "gevent", "marshmallow", "gateway.backends", "gateway.streaming")),
    ("gateway.responses.store", ("flask", "requests", "gateway.web", "gateway.backends")),
    ("gateway.web.responses_api", ("requests", "urllib3", "gateway.backends.http")),
]


def loaded_by(module: str, names) -> list:
    probe = f"import sys, {module}; print(' '.join(n for n in {list(names)!r} if n in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.mark.parametrize("module, forbidden", WALLS, ids=[m for m, _ in WALLS])
def test_walls_hold(module, forbidden):
    assert loaded_by(module, forbidden) == [], f"importing {module} loads what it must not"


def test_every_module_imports_on_its_own():
    modules = sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in GATEWAY.rglob("*.py")
    )
    probe = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)"
    result = subprocess.run([sys.executable, "-c", probe, *modules], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_readme_layout_lists_every_module():
    """The README's layout section names every module of the package, and nothing that is gone."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    for path in GATEWAY.rglob("*.py"):
        if path.name != "__init__.py":
            assert path.name in layout, f"README's layout does not mention {path.relative_to(ROOT)}"
    for package in (p for p in GATEWAY.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        assert f"{package.name}/" in layout, f"README's layout does not mention {package.name}/"


def test_readme_layout_names_no_module_that_is_gone():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    existing = {path.name for path in ROOT.rglob("*.py") if ".venv" not in path.parts}
    for name in re.findall(r"(?<![\w.])([a-z_]+\.py)\b", layout):
        assert name in existing, f"README's layout names {name}, which does not exist"
