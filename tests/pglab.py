"""A real PostgreSQL for tests: Debian's `postgresql` package, run by the test session.

`PgServer.start()` runs initdb in a temporary data directory (as the postgres user
when run as root: PostgreSQL refuses root), then pg_ctl starts it on 127.0.0.1 at a
free port, its unix socket in that directory too, trust authentication (nothing but
this machine can reach it). `database()` makes a fresh empty database per test and
returns its URL. `stop()` stops the server and removes the directory.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from tests.labhost import _run

PG_BINS = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                 key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
PG_BIN = PG_BINS[-1] if PG_BINS else None


def missing() -> str | None:
    """Why this machine cannot run the PostgreSQL tests (None: it can)."""
    if PG_BIN is None or not (PG_BIN / "initdb").exists():
        return "PostgreSQL is not installed (apt install postgresql; scripts/setup does)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "runuser (util-linux) is missing"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mc-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.user = "postgres" if os.geteuid() == 0 else os.environ.get("USER", "postgres")

    def _pg(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        env = {"PATH": f"{PG_BIN}:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}
        if os.geteuid() == 0:
            return _run("runuser", "-u", "postgres", "--", *argv, env=env, cwd=self.dir,
                        timeout=timeout)
        return _run(*argv, env=env, timeout=timeout)

    def start(self) -> PgServer:
        self.dir.chmod(0o755)
        self.data.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
            shutil.chown(self.data, "postgres")
        self._pg("initdb", "-D", str(self.data), "-A", "trust", "-U", self.user, "-E", "UTF8",
                 "--no-sync", "--no-instructions")
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off "
                "-c max_connections=300 -c synchronous_commit=off")
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-t", "60",
                 "-o", opts, "start")
        return self

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{db}"

    def database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log(self) -> str:
        try:
            return (self.dir / "log").read_text()[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
