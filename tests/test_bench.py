"""`make bench` leaves nothing behind: its temporary folder and servers go, however the run ends.

The real bench/run.py (quick sizes), with the system's temporary directory and its output folder
pointed into the test's own folder: stopped by Ctrl-C or SIGTERM in the middle of a measurement,
or failing because a server cannot start. No figure is looked at; timing goals stay in the bench.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MEASURING = "non-streaming requests: concurrency 1 and 64 ..."  # printed once section `requests` starts


def start_bench(tmp_path: Path, env=None, sigint_ignored=False) -> tuple:
    """bench/run.py in a session of its own (a process group, as a terminal's foreground job);
    `sigint_ignored`: as a background job of a script starts it (`make bench &`)."""
    temp, out = tmp_path / "tmp", tmp_path / "out"
    temp.mkdir()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    environ.update({"TMPDIR": str(temp), "BENCH_OUT": str(out), **(env or {})})
    log = tmp_path / "bench.out"
    with open(log, "wb") as stdout:
        process = subprocess.Popen([sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--only", "requests"], cwd=ROOT,
                                   env=environ, stdout=stdout, stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None)
    return process, temp, out, log


def wait_for(condition, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def finish(process, log: Path) -> str:
    try:
        process.wait(timeout=90)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return log.read_text(errors="replace")


@pytest.mark.parametrize("send, statuses", [
    (lambda p: os.killpg(p.pid, signal.SIGINT), (-signal.SIGINT, 130)),  # Ctrl-C: the terminal signals the whole group
    (lambda p: p.terminate(), (128 + signal.SIGTERM,)),  # SIGTERM to the run alone: it stops its servers itself
], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_removes_its_folder_and_stops_its_servers(tmp_path, send, statuses):
    process, temp, out, log = start_bench(tmp_path)
    try:
        wait_for(lambda: MEASURING in log.read_text(errors="replace") or process.poll() is not None, "the first measurement")
        assert process.poll() is None, log.read_text(errors="replace")
        assert [p.name for p in temp.iterdir() if p.name.startswith("llm-gateway-bench-")], "the run made no temporary folder"
        send(process)
    finally:
        output = finish(process, log)
    assert process.returncode in statuses, output
    wait_for(lambda: group_gone(process.pid), "the benchmark's servers to stop", timeout=30)
    assert list(temp.iterdir()) == [], output  # its own folder, and the gunicorns' run folders too
    assert not (out / "results.json").exists()
    assert (out / "logs" / "gateway.log").exists()  # the servers' logs are kept, outside the temporary folder


def test_a_failed_run_removes_its_folder(tmp_path):
    # A gateway that cannot start (gunicorn.conf.py reads this setting as a number): the run stops with an error.
    # Started with SIGINT ignored, which its servers would inherit: the run stops them with SIGINT, and
    # each held it up 30 s, until it was killed.
    process, temp, out, log = start_bench(tmp_path, {"GATEWAY_WORKER_CONNECTIONS": "not-a-number"}, sigint_ignored=True)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the failed run was still stopping its servers after 20 s:\n{log.read_text(errors='replace')}") from None
    output = finish(process, log)
    assert process.returncode == 1 and "exited with" in output, output
    wait_for(lambda: group_gone(process.pid), "the benchmark's servers to stop", timeout=30)
    assert list(temp.iterdir()) == [], output
