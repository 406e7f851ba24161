"""gateway/socket_writes.py: a plain gevent socket's sendall tries one send first; everything
else (what the kernel did not take, a TLS socket, data that is not bytes) goes gevent's way.

Each case runs in a process of its own that gevent has patched, as a worker is."""

import json
import subprocess
import sys

from tests.gunicorn_server import ROOT

WRITES = r"""
import json, socket, ssl, sys
from gevent import monkey
monkey.patch_all()
import gevent
sys.path.insert(0, sys.argv[1])
from gateway import socket_writes
from gevent import _socket3

calls = {"getsockopt": 0}
plain_getsockopt = _socket3.socket.getsockopt
def counting_getsockopt(self, *args):
    calls["getsockopt"] += 1
    return plain_getsockopt(self, *args)
_socket3.socket.getsockopt = counting_getsockopt

def received_whole(size, reader_pause):
    '''Writes `size` bytes with one sendall to a reader that sleeps between reads: what it got.'''
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    got = bytearray()
    def read():
        while True:
            gevent.sleep(reader_pause)
            data = b.recv(65536)
            if not data:
                return
            got.extend(data)
    reader = gevent.spawn(read)
    data = bytes(range(256)) * (size // 256)
    a.sendall(data)
    a.close()
    reader.join(timeout=30)
    return bytes(got) == data

report = {}
before = calls["getsockopt"]
report["gevent_small"] = received_whole(256, 0)
report["gevent_asks_buffer_size"] = calls["getsockopt"] > before
gevents_own = _socket3.socket.sendall
socket_writes.install()
socket_writes.install()  # twice: still one wrapper, around gevent's own
wrapped = [cell.cell_contents for cell in _socket3.socket.sendall.__closure__]
report["installed_once"] = _socket3.socket.sendall.one_call_first and gevents_own in wrapped
before = calls["getsockopt"]
report["small_whole"] = received_whole(256, 0)
report["small_asks_nothing"] = calls["getsockopt"] == before
report["large_to_slow_reader_whole"] = received_whole(4 << 20, 0.001)
report["large_went_gevents_way"] = calls["getsockopt"] > before
a, b = socket.socketpair()
a.sendall(memoryview(b"not bytes"))  # gevent's way, unchanged
report["memoryview"] = b.recv(100) == b"not bytes"
report["tls_keeps_its_own"] = gevent.ssl.SSLSocket.sendall is not _socket3.socket.sendall

def outcome(write):
    try:
        return repr(write())
    except Exception as exc:
        return type(exc).__name__

a, b = socket.socketpair()
a.shutdown(socket.SHUT_WR)
report["empty_after_shutdown"] = outcome(lambda: a.sendall(b""))  # gevent: nothing sent, 0
a, b = socket.socketpair()
a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
a.settimeout(0.0)
report["non_blocking_partial"] = outcome(lambda: a.sendall(b"x" * (4 << 20)))  # gevent: its timeout error
print(json.dumps(report))
"""


def test_a_write_the_kernel_takes_whole_is_one_send_and_the_rest_goes_gevents_way_in_order():
    result = subprocess.run([sys.executable, "-c", WRITES, str(ROOT)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report == {
        "gevent_small": True, "gevent_asks_buffer_size": True, "installed_once": True, "small_whole": True,
        "small_asks_nothing": True, "large_to_slow_reader_whole": True, "large_went_gevents_way": True,
        "memoryview": True, "tls_keeps_its_own": True, "empty_after_shutdown": "0", "non_blocking_partial": "TimeoutError",
    }


APP_UNDER_GEVENT = r"""
import sys
from gevent import monkey
monkey.patch_all()
sys.path.insert(0, sys.argv[1])
from gevent import _socket3
from app import create_app
create_app()
print(getattr(_socket3.socket.sendall, "one_call_first", False))
"""


def test_the_app_installs_it_where_gevent_has_patched_and_leaves_other_processes_alone(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "GATEWAY_DATA_DIR": str(tmp_path), "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", APP_UNDER_GEVENT, str(ROOT)], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "True"
    unpatched = subprocess.run([sys.executable, "-c", APP_UNDER_GEVENT.replace("monkey.patch_all()", ""), str(ROOT)], cwd=ROOT,
                               capture_output=True, text=True, timeout=120, env=env)
    assert unpatched.returncode == 0, unpatched.stderr
    assert unpatched.stdout.strip().splitlines()[-1] == "False"


def test_the_gevent_release_installed_is_one_the_write_path_was_checked_against():
    """socket_writes stands in front of gevent's sendall: an upgrade must be checked again (else it keeps gevent's own)."""
    import gevent

    from gateway.socket_writes import GEVENT_RELEASES

    assert gevent.__version__ in GEVENT_RELEASES
