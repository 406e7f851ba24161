"""A real, throwaway PostgreSQL (Debian's `postgresql` package) for the usage ledger's tests.

`initdb` makes a cluster in a fresh temporary folder, `pg_ctl` starts it on a free loopback port
with its socket in that folder (never the system's /run/postgresql). PostgreSQL refuses to run as
root: as root, the folder is given to the `postgres` user and every command runs as that user
(`runuser -u postgres --`). The superuser has a password (`PASSWORD`), so the gateway's
`database_url` carries a secret the tests can look for. `stop(fast=False)` stops it as a crash
would (immediate mode), `start()` brings it back on the same port, for the outage tests. Without
the binaries the tests that need it are skipped, except in CI (CI set), where they fail.
"""

import glob
import os
import pwd
import shutil
import subprocess
import tempfile

from tests.backends import free_port, not_installed
from tests.conftest import PG_PASSWORD as PASSWORD  # a secret: it must never leave the gateway (test_secrets.py)


def postgres_bin() -> str | None:
    """The newest installed PostgreSQL's bin folder (Debian: /usr/lib/postgresql/<major>/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda path: int(path.split("/")[4]))
    return os.path.dirname(found[-1]) if found else None


def require_postgres() -> str:
    binaries = postgres_bin()
    if binaries is None:
        not_installed("PostgreSQL is not installed (apt-get install postgresql; .ci/run does)")
    return binaries


class PostgresServer:
    def __init__(self):
        self.bin = require_postgres()
        self.folder = tempfile.mkdtemp(prefix="llm-gateway-pg-")
        self.data = os.path.join(self.folder, "data")
        self.port = free_port()
        self._as = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        password_file = os.path.join(self.folder, "password")
        with open(password_file, "w", encoding="ascii") as handle:
            handle.write(PASSWORD + "\n")
        if self._as:
            os.chown(password_file, owner.pw_uid, owner.pw_gid)
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256",
                  f"--pwfile={password_file}", "--no-sync", "-E", "UTF8", "--locale=C")
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args, timeout=60):
        # cwd: a folder the postgres user may enter (the checkout may be in root's home)
        result = subprocess.run([*self._as, os.path.join(self.bin, tool), *args], capture_output=True, text=True, timeout=timeout, cwd=self.folder)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed: {result.stdout}\n{result.stderr}")
        return result

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.folder, "log"), "-o", options, "-w", "-t", "60", "start")

    def stop(self, fast=True) -> None:
        """`fast=False`: immediate mode, as a crashed server (clients' connections reset, no checkpoint)."""
        self._run("pg_ctl", "-D", self.data, "-m", "fast" if fast else "immediate", "-w", "stop")

    def psql(self, sql: str, database="postgres") -> str:
        """Runs `sql` through the cluster's own socket, as the superuser: rows as `a|b` lines."""
        return self._run("psql", "-h", self.folder, "-p", str(self.port), "-U", "postgres", "-d", database,
                         "-At", "-v", "ON_ERROR_STOP=1", "-c", sql).stdout

    def remove(self) -> None:
        try:
            self.stop()
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.folder, ignore_errors=True)
