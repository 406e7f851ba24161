"""The run's temporary folder (configs, the servers' working directory), removed however the run ends.

A run that finishes, fails, or is stopped by Ctrl-C (KeyboardInterrupt) or SIGTERM (see
`exit_on_stop_signals`) unwinds through `temporary_folder`, which removes the folder. Only SIGKILL
leaves it behind. Nothing here imports gevent: the tests import it without patching.
"""

import contextlib
import shutil
import signal
import sys
import tempfile
from pathlib import Path

PREFIX = "llm-gateway-bench-"


@contextlib.contextmanager
def temporary_folder(prefix: str = PREFIX):
    """A new folder under the system's temporary directory, removed with everything in it on exit."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def exit_on_stop_signals() -> None:
    """SIGTERM (`kill`, a CI timeout) unwinds the run like Ctrl-C does, so its `finally`s run; and
    Ctrl-C works even in a run started from a background job (`make bench &` in a script), which
    inherits SIGINT ignored. Its servers would inherit that too, and a run that fails stops them
    with SIGINT: each then held it up 30 s, until it was killed. A handler is not inherited across
    exec, so the servers start with SIGINT's default.

    Python's default for SIGTERM is to die on the spot. Raised from the handler, SystemExit reaches
    the main greenlet: gevent's hub passes system errors (SystemExit, KeyboardInterrupt) on to it."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    signal.signal(signal.SIGINT, signal.default_int_handler)
