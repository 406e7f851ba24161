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
    # The usage ledger's rules and database know no Flask and no HTTP; only usage/web.py is the Flask side.
    ("gateway.usage.ledger", ("flask", "requests", "gateway.web", "gateway.backends", "gateway.telemetry")),
    ("gateway.usage.storage", ("flask", "requests", "gateway.web", "gateway.backends", "gateway.telemetry")),
    ("gateway.usage.budgets", ("flask", "requests", "sqlite3", "psycopg", "gateway.web", "gateway.backends")),
    ("gateway.usage.report", ("flask", "requests", "gateway.web", "gateway.backends")),
    ("gateway.web.admin", ("requests", "urllib3", "gateway.backends.http")),
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


LAYOUT_DOC = ROOT / "docs" / "layout.md"
LAYOUT_SECTION = "## The package, file by file"


def layout_block() -> str:
    """The fenced block of docs/layout.md's file-by-file section: the one place the tree is drawn."""
    text = LAYOUT_DOC.read_text(encoding="utf-8")
    assert LAYOUT_SECTION in text, f"docs/layout.md has no '{LAYOUT_SECTION}' section"
    section = text.split(LAYOUT_SECTION, 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```[^\n]*\n(.*?)^```", section, re.M | re.S)
    assert block, f"docs/layout.md's '{LAYOUT_SECTION}' section has no fenced block"
    return block.group(1)


def layout_paths() -> set:
    """The paths the block draws, from its indentation: `gateway/` then `  chat/` then
    `    answers.py` is gateway/chat/answers.py. Folders end with a slash."""
    paths, folders = set(), []  # folders: (indent, "gateway/chat/") from the outermost in
    for line in layout_block().splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        name = line.split()[0]
        while folders and folders[-1][0] >= indent:
            folders.pop()
        path = (folders[-1][1] if folders else "") + name
        paths.add(path)
        if name.endswith("/"):
            folders.append((indent, path))
    return paths


def test_layout_block_lists_every_module_where_it_lives():
    """docs/layout.md's block draws every module and subpackage of the package, each in its folder."""
    drawn = layout_paths()
    for path in GATEWAY.rglob("*.py"):
        if path.name != "__init__.py":
            name = path.relative_to(ROOT).as_posix()
            assert name in drawn, f"docs/layout.md's block does not list {name}"
    for package in GATEWAY.rglob("__init__.py"):
        name = package.parent.relative_to(ROOT).as_posix() + "/"
        assert name in drawn, f"docs/layout.md's block does not list {name}"


def test_layout_block_names_nothing_that_is_gone():
    for name in layout_paths():
        assert (ROOT / name).exists(), f"docs/layout.md's block names {name}, which does not exist"
    existing = {path.name for path in ROOT.rglob("*.py") if ".venv" not in path.parts}
    for name in re.findall(r"(?<![\w./])([a-z_]+\.py)\b", layout_block()):  # named in a description
        assert name in existing, f"docs/layout.md's block names {name}, which does not exist"
