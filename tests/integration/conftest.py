"""A real PostgreSQL server for the scale-out tests: Debian's server binaries, a cluster initialised in
a temporary directory, listening on a free port of 127.0.0.1 for the test session, stopped after.

The binaries are found under /usr/lib/postgresql/<version>/bin (Debian's layout), else on PATH. When
they are absent and the tests run as root, `apt-get install -y postgresql` is tried once; otherwise
the tests that need the server skip and say why. initdb refuses to run as root: as root the cluster
belongs to the `postgres` system user that the Debian package creates.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_USER = "autoscalp"  # the cluster's superuser, trusted on 127.0.0.1 only (a throwaway test cluster)
START_TIMEOUT_S = 60


@dataclass(frozen=True)
class PostgresServer:
    port: int
    bin_dir: Path
    host: str = "127.0.0.1"
    user: str = PG_USER

    def url(self, database: str) -> str:
        """A SQLAlchemy URL (psycopg2) for MLflow and Optuna alike."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create ``name`` (dropping a leftover of that name) and return its URL."""
        for sql in (f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"'):
            subprocess.run([str(self.bin_dir / "psql"), "-h", self.host, "-p", str(self.port), "-U", self.user,
                            "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qc", sql],
                           check=True, capture_output=True, timeout=30)
        return self.url(name)


def find_pg_bin() -> Path | None:
    """The newest Debian server binaries, else initdb on PATH."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if versions:
        return versions[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def install_pg() -> str | None:
    """apt-get install postgresql (as root only); None when it worked, else why not."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "PostgreSQL server binaries (initdb) are absent; install Debian's `postgresql` package"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "install", "-y", "-q", "postgresql"], ["apt-get", "update", "-q"],
                 ["apt-get", "install", "-y", "-q", "postgresql"]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode == 0 and argv[1] == "install":
            return None
    return f"`apt-get install postgresql` failed: {done.stderr.strip().splitlines()[-1:]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    bin_dir = find_pg_bin()
    if bin_dir is None:
        why = install_pg()
        bin_dir = find_pg_bin()
        if bin_dir is None:
            pytest.skip(why or "PostgreSQL installed but initdb not found")
    as_owner: list[str] = []
    # pytest's tmp_path is private to root (0700): the cluster lives in its own directory under /tmp
    root = Path(tempfile.mkdtemp(prefix="autoscalp-pg-"))
    if os.geteuid() == 0:
        try:
            shutil.chown(root, "postgres")
        except LookupError:
            shutil.rmtree(root)
            pytest.skip("running as root without the `postgres` system user: initdb refuses root")
        as_owner = ["runuser", "-u", "postgres", "--"]
    data, log = root / "data", root / "server.log"

    def run(*argv: str) -> None:
        done = subprocess.run([*as_owner, *argv], capture_output=True, text=True, timeout=START_TIMEOUT_S)
        if done.returncode != 0:
            log_tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{Path(argv[0]).name} failed: {done.stderr.strip()[-2000:]} {log_tail}")

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust", "-E", "UTF8", "--no-sync")
    port = free_port()
    # fsync off: a throwaway cluster (what a crash would lose is the test's own data)
    options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off -c max_connections=200"
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", str(START_TIMEOUT_S),
        "start")
    try:
        yield PostgresServer(port=port, bin_dir=bin_dir)
    finally:
        subprocess.run([*as_owner, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=START_TIMEOUT_S)
        shutil.rmtree(root, ignore_errors=True)
