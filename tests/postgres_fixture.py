"""A real PostgreSQL server for the test run: one per session, started on a free port by the
first test that asks for it, stopped at the end.

`initdb` and `pg_ctl` come from PATH or the Debian layout (`/usr/lib/postgresql/<v>/bin`). The
server refuses to run as root, so as root they run as the `postgres` user (`runuser`), in a
folder under /tmp that user can enter (pytest's own temporary folders are private to root).
Trust authentication on 127.0.0.1 only; fsync off (a test server). Without PostgreSQL or
psycopg the tests that need it are skipped, except with CI=true, where they fail: CI never
silently drops them.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PASSWORD_ROLE, PASSWORD = "wb_password", "right-one"
PLAIN_ROLE = "wb_plain"
"""Roles every session's server has: one that logs in with a password (scram), one without
the right to create anything in a database it does not own."""


def pg_bin(name: str) -> str | None:
    """`name` (initdb, pg_ctl...) on PATH, else in the newest /usr/lib/postgresql/<v>/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    candidates.sort(key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _missing(why: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL tests cannot run (CI=true): {why}")
    pytest.skip(f"PostgreSQL tests need a server: {why}")


@dataclass
class PgServer:
    host: str
    port: int
    folder: Path
    _names: itertools.count
    pg_ctl: str = ""
    options: str = ""

    def stop(self) -> None:
        """Stop the server (`-m fast`: connections cut at once, as in a restart; not
        `immediate`, which with this test server's synchronous_commit=off drops commits already
        acknowledged), to test what clients do while it is gone; `start` brings it back."""
        self._ctl("-m", "fast", "-w", "stop")

    def start(self) -> None:
        self._ctl(
            "-o", self.options, "-l", str(self.folder / "server.log"), "-w", "-t", "120", "start"
        )

    def _ctl(self, *args: str) -> None:
        out = subprocess.run(
            _as_postgres([self.pg_ctl, "-D", str(self.folder / "data"), *args]),
            capture_output=True, text=True, timeout=300, cwd=self.folder,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr

    def admin_url(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql+psycopg://{user}@{self.host}:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> list[tuple]:
        """Run one statement as the superuser, outside a transaction (CREATE DATABASE...)."""
        import psycopg

        with psycopg.connect(
            host=self.host, port=self.port, user="postgres", dbname=database, autocommit=True
        ) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def new_database(self, prefix: str = "wb") -> str:
        """A fresh, empty database; its URL (superuser, trust auth)."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        self.sql(f'CREATE DATABASE "{name}"')
        return self.admin_url(name)


def _as_postgres(args: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return args
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--", *args]
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(map(repr, args))]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        _missing("initdb/pg_ctl not found on PATH or under /usr/lib/postgresql/*/bin")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _missing("the psycopg driver is not installed (pip install -e '.[test]')")
    assert initdb and pg_ctl
    folder = Path(tempfile.mkdtemp(prefix="wb-pg-", dir="/tmp"))
    os.chmod(folder, 0o755)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data = folder / "data"
    port = _free_port()
    run = lambda args: subprocess.run(  # noqa: E731
        _as_postgres(args), capture_output=True, text=True, timeout=300, cwd=folder
    )
    out = run(
        [initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]
    )
    if out.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"initdb failed: {out.stderr.strip() or out.stdout.strip()}")
    hba = data / "pg_hba.conf"  # one role that must give its password (for the wrong-password test)
    hba.write_text(f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    opts = (
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    out = run(
        [
            pg_ctl,
            "-D",
            str(data),
            "-o",
            opts,
            "-l",
            str(folder / "server.log"),
            "-w",
            "-t",
            "120",
            "start",
        ]
    )
    if out.returncode != 0:
        log = (folder / "server.log").read_text() if (folder / "server.log").exists() else ""
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {out.stderr.strip()} {log[-2000:]}")
    try:
        server = PgServer("127.0.0.1", port, folder, itertools.count(1), pg_ctl, opts)
        server.sql(f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{PASSWORD}'")
        server.sql(f"CREATE ROLE {PLAIN_ROLE} LOGIN")  # no right to create tables anywhere
        yield server
    finally:
        run([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh database's URL; server catalogs' checkpoints go to this test's tmp_path."""
    monkeypatch.setenv("WORKBENCH_CHECKPOINT_ROOT", str(tmp_path / "checkpoints"))
    return pg_server.new_database()
