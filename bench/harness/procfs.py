"""What /proc says about the benchmark's processes: CPU time, resident memory, the load from elsewhere.

A worker's CPU per request or per event is its user+system time over a section; the header's "other
processes kept N cores busy" is the machine's busy time minus this process's and its descendants'.
The soak also asks which workers a gunicorn master has now (`children`) and which TCP connections
a worker holds (`tcp_connections`).
"""

import os
import time

import gevent


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _busy_seconds() -> float:
    """CPU time the whole machine has spent busy (steal included: time another guest took)."""
    fields = [int(v) for v in open("/proc/stat").readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _ours_seconds() -> float:
    """CPU time of this process, every live descendant (the backend, gunicorn masters and workers)
    and its children that ended and were waited for (the paced streams' client)."""
    ended = os.times()
    total, todo = ended.children_user + ended.children_system, [os.getpid()]
    while todo:
        pid = todo.pop()
        try:
            total += cpu_seconds(pid)
            todo += [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]
        except (OSError, ValueError):
            pass
    return total


class OtherLoad:
    """How many cores processes other than the benchmark's kept busy between start() and cores()."""

    def __init__(self):
        self.start()

    def start(self):
        self._at, self._busy, self._ours = time.monotonic(), _busy_seconds(), _ours_seconds()

    def cores(self) -> float:
        elapsed = time.monotonic() - self._at
        return max(0.0, (_busy_seconds() - self._busy) - (_ours_seconds() - self._ours)) / elapsed

    def own_cores(self) -> float:
        """How many cores this process and its live descendants kept busy meanwhile."""
        return (_ours_seconds() - self._ours) / (time.monotonic() - self._at)


def wait_idle(pid: int, quiet=0.5, timeout=60) -> None:
    """Until the worker has booted: its CPU time has grown, then stayed put for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last, still_since = cpu_seconds(pid), None
    while time.monotonic() < deadline:
        gevent.sleep(0.1)
        now = cpu_seconds(pid)
        if now != last or now < 0.05:
            last, still_since = now, None
        elif still_since is None:
            still_since = time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            return
    raise SystemExit("the fresh gateway worker did not settle")


def children(pid: int) -> list:
    """The pids of a process's children now (a gunicorn master's: its workers)."""
    try:
        return [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


def _socket_inodes(pid: int) -> set:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def tcp_connections(pid: int) -> list:
    """(local port, remote port) of each established TCP connection (IPv4) the process holds."""
    inodes = _socket_inodes(pid)
    found = []
    with open(f"/proc/{pid}/net/tcp") as table:
        next(table)  # the column names
        for line in table:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if state == "01" and inode in inodes:  # 01: ESTABLISHED
                found.append((int(local.split(":")[1], 16), int(remote.split(":")[1], 16)))
    return found
