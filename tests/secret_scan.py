"""The end-of-run secrets scan, gathered from every test process (pytest-xdist workers included).

What a test process sees is written at once to a file of its own in one folder per session:
each answer that carried a configured secret (where it came from, which secret, which test read
it), and the path of each gateway log a test started. The controlling process (the only one
without xdist) made the folder; after every worker has finished (`pytest_sessionfinish`), it
reads all the files, searches every gateway log, and fails the run naming each secret and
where it was seen. Writing as things are seen, not at a worker's end, keeps what a crashed
worker saw. tests/conftest.py wires this into pytest; tests/test_secrets.py proves the gathering.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

WORKER_INPUT_KEY = "secret_scan_folder"  # how the controller tells each xdist worker the folder

_folder: Path | None = None
_process = "main"  # "gw0", "gw1"... in an xdist worker


def start(config) -> None:
    """In every test process, at pytest_configure: the controller makes the folder, a worker
    takes the controller's."""
    global _folder, _process
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        _folder, _process = Path(tempfile.mkdtemp(prefix="pytest-secret-scan-")), "main"
    else:
        _folder, _process = Path(workerinput[WORKER_INPUT_KEY]), workerinput["workerid"]


def is_controller(config) -> bool:
    return not hasattr(config, "workerinput")


def tell_worker(node) -> None:
    """xdist's pytest_configure_node: hands a worker the session's folder."""
    node.workerinput[WORKER_INPUT_KEY] = str(_folder)


def _record(**entry) -> None:
    if _folder is None:  # imported outside a pytest session (nothing will scan)
        return
    entry.update(process=_process, test=os.environ.get("PYTEST_CURRENT_TEST", "outside any test"))
    line = json.dumps(entry) + "\n"
    # One file per process, opened for appending: each line is one small write, whole.
    with open(_folder / f"{_process}-{os.getpid()}.jsonl", "a", encoding="utf-8") as handle:
        handle.write(line)


def check_answer(where: str, whole: bytes, secrets) -> None:
    """An answer the suite read (headers and body): each secret in it is recorded."""
    for secret in secrets:
        if secret.encode() in whole:
            _record(kind="answer", where=where, secret=secret)


def watch_log(path: Path) -> None:
    """A gateway's log file, to be searched at the end of the run (when every gateway has stopped)."""
    _record(kind="log", path=str(path))


def scan(secrets) -> tuple[list[str], int]:
    """In the controller, after every worker finished: one line per problem, naming the secret
    and where it was seen (empty when the run leaked nothing), and how many gateway logs were read."""
    problems, logs = [], 0
    for record_file in sorted(_folder.glob("*.jsonl")):
        for line in record_file.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            seen_by = f"{entry['test']}, in {entry['process']}"
            if entry["kind"] == "answer":
                problems.append(f"{entry['secret']!r} in the answer from {entry['where']} (read by {seen_by})")
                continue
            logs += 1
            path = Path(entry["path"])
            text = path.read_bytes() if path.exists() else b""
            if not text:
                problems.append(f"gateway log {path} is missing or empty: the check would prove nothing (started by {seen_by})")
            for secret in secrets:
                if secret.encode() in text:
                    problems.append(f"{secret!r} in gateway log {path} (started by {seen_by})")
    return problems, logs


def finish() -> None:
    """The controller removes the folder once it has been read."""
    if _folder is not None:
        shutil.rmtree(_folder, ignore_errors=True)
