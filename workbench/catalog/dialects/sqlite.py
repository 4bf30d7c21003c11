"""SQLite: the embedded default. One file; WAL journal; writes start with BEGIN IMMEDIATE (so a
read-modify-write takes the write lock before it reads); the file is stamped with an
application id and schema version (PRAGMA application_id / user_version) and inspected before
it is opened, so another program's SQLite file is never touched."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.dialects.sqlite import insert as upsert_insert
from sqlalchemy.engine import URL

from workbench.catalog.errors import CatalogError

APPLICATION_ID = 0x4D4C5742
"""`PRAGMA application_id` of a workbench catalog ("MLWB"): tells our files from other SQLite files."""

__all__ = ["APPLICATION_ID", "SQLiteBackend", "inspect_file", "sqlite_error_code", "upsert_insert"]


def sqlite_error_code(exc: BaseException) -> int | None:
    """SQLite's primary result code of a driver error (5 busy, 6 locked, 8 read-only, 10 I/O,
    11 corrupt, 13 full, 26 not a database), or None."""
    orig = getattr(exc, "orig", exc)
    code = getattr(orig, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def _sqlite_uri(path: Path, immutable: bool) -> str:
    from urllib.parse import quote

    return f"file:{quote(str(path))}?mode=ro" + ("&immutable=1" if immutable else "")


def _connect_ro(path: Path) -> sqlite3.Connection:
    """A read-only connection that changes nothing in the file or its folder; immutable where a
    WAL catalog's folder cannot be written (no -shm can be made there)."""
    try:
        conn = sqlite3.connect(_sqlite_uri(path, False), uri=True)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:
        conn = sqlite3.connect(_sqlite_uri(path, True), uri=True)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn


def inspect_file(
    path: Path, schema_version: int, revisions: dict[str, int]
) -> Literal["new", "catalog"]:
    """Say whether `path` is a catalog this release can open ("catalog") or a place to make a
    new one ("new"); anything else is a CatalogError. Only reads (a read-only connection), so
    another program's SQLite file is never switched to WAL or migrated."""
    if path.is_dir():
        raise CatalogError(f"catalog {path} is a folder, not a file")
    for parent in (path.parent, *path.parent.parents):
        if parent.exists():
            if not parent.is_dir():
                raise CatalogError(
                    f"catalog {path} cannot be made: {parent} is a file, not a folder"
                )
            break
    try:
        if not path.exists() or path.stat().st_size == 0:
            return "new"
        with open(path, "rb") as f:
            head = f.read(100)
    except OSError as exc:
        raise CatalogError(f"catalog {path} cannot be read: {exc.strerror}") from None
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        raise CatalogError(f"{path} is not a workbench catalog (not an SQLite database)")
    try:
        conn = _connect_ro(path)
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            revs = (
                [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]
                if "alembic_version" in tables
                else []
            )
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise CatalogError(f"catalog {path} is damaged or unreadable ({exc})") from None
    if app_id not in (0, APPLICATION_ID):
        raise CatalogError(
            f"{path} belongs to another application (SQLite application id {app_id:#x}), "
            "not a workbench catalog"
        )
    if app_id == APPLICATION_ID and version > schema_version:
        raise CatalogError(
            f"catalog {path} was made by a newer workbench (schema {version}; this version "
            f"reads up to {schema_version}): upgrade the workbench to open it"
        )
    if not tables:
        return "new"
    if "runs" not in tables or "alembic_version" not in tables:
        raise CatalogError(
            f"{path} is not a workbench catalog (it has no runs table or no schema revision)"
        )
    if len(revs) != 1 or revs[0] not in revisions:
        raise CatalogError(
            f"catalog {path} has schema revision {', '.join(map(str, revs)) or 'none'}, which "
            "this version does not know (made by a newer workbench, or damaged)"
        )
    return "catalog"


def writable(path: Path) -> bool:
    """Whether this process may write the catalog file and its folder (False on a read-only
    mount even for root)."""
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    return not path.exists() or os.access(path, os.W_OK)


def _make_engine(
    path: Path, begin_sql: str, busy_timeout_s: float, *, readonly: bool = False
) -> Engine:
    if readonly:
        immutable = not os.access(path.parent, os.W_OK)
        uri = _sqlite_uri(path, immutable)
        engine = create_engine(
            "sqlite://",
            creator=lambda: sqlite3.connect(
                uri, uri=True, timeout=busy_timeout_s, check_same_thread=False
            ),
        )
    else:
        engine = create_engine(
            URL.create("sqlite", database=str(path)),
            connect_args={"timeout": busy_timeout_s, "check_same_thread": False},
        )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy (pysqlite would otherwise BEGIN lazily,
        # only before the first write: a read-modify-write would then lose updates).
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        if not readonly:
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin_sql)

    return engine


class SQLiteBackend:
    """A catalog in one SQLite file."""

    name = "sqlite"
    server = False
    metrics_insert_sql = (
        "INSERT INTO metrics (run_id, attempt, step, name, value, wall_time, superseded) "
        "VALUES (?, ?, ?, ?, ?, ?, FALSE)"
    )

    upsert_insert = staticmethod(upsert_insert)

    def __init__(self, path: Path) -> None:
        self.path = path
        self.display = str(path)
        self.location = str(path)
        self._version_db: sqlite3.Connection | None = None
        self._version_lock = threading.Lock()

    def make_engines(self, busy_timeout_s: float, readonly: bool) -> tuple[Engine, Engine]:
        """(write engine: BEGIN IMMEDIATE, read engine: deferred BEGIN, a snapshot that never
        waits for writers)."""
        write = _make_engine(self.path, "BEGIN IMMEDIATE", busy_timeout_s, readonly=readonly)
        read = _make_engine(self.path, "BEGIN", busy_timeout_s, readonly=readonly)
        return write, read

    @staticmethod
    def now(_conn: Connection | None = None) -> float:
        """The clock leases and timestamps use: this machine's (one file, one machine)."""
        return time.time()

    @staticmethod
    def schema_current(conn: Connection, head: str, schema_version: int) -> bool:
        if conn.exec_driver_sql("PRAGMA application_id").scalar() != APPLICATION_ID:
            return False
        if conn.exec_driver_sql("PRAGMA user_version").scalar() != schema_version:
            return False
        revs = conn.exec_driver_sql("SELECT version_num FROM alembic_version").fetchall()
        return [r[0] for r in revs] == [head]

    @staticmethod
    def check_schema(_conn: Connection, _revisions: dict[str, int], _schema_version: int) -> None:
        """Done before opening, from the file itself (`inspect_file`)."""

    @staticmethod
    def lock_schema(_conn: Connection) -> None:
        """Nothing: the migration's transaction began with BEGIN IMMEDIATE."""

    @staticmethod
    def lock_names(_conn: Connection) -> None:
        """Nothing: every write transaction began with BEGIN IMMEDIATE (one writer at a time)."""

    @staticmethod
    def stamp(conn: Connection, schema_version: int) -> None:
        conn.exec_driver_sql(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.exec_driver_sql(f"PRAGMA user_version = {schema_version}")

    @staticmethod
    def columns(conn: Connection, table: str) -> set[str]:
        return {r[1] for r in conn.exec_driver_sql(f"PRAGMA table_info({table})")}

    def change_token(self, _engine: Engine | None = None) -> str | None:
        """`PRAGMA data_version` on a connection of its own that never writes: it changes
        whenever any connection (this process's included) commits a change to the file."""
        with self._version_lock:
            try:
                if self._version_db is None:
                    self._version_db = sqlite3.connect(
                        _sqlite_uri(self.path, False), uri=True, check_same_thread=False
                    )
                return str(self._version_db.execute("PRAGMA data_version").fetchone()[0])
            except sqlite3.Error:
                return None

    @staticmethod
    def raw_cursor(driver: Any) -> Any:
        """The driver's cursor for `store._fetch_raw`'s bulk reads."""
        return driver.cursor()

    @staticmethod
    def busy(exc: BaseException) -> bool:
        """Another process holds the lock past the busy timeout (worth retrying)."""
        return sqlite_error_code(exc) in (5, 6)

    @staticmethod
    def damaged(exc: BaseException) -> bool:
        return sqlite_error_code(exc) in (11, 26)

    @staticmethod
    def error_line(exc: BaseException) -> str:
        return str(getattr(exc, "orig", exc))

    def close(self) -> None:
        with self._version_lock:
            if self._version_db is not None:
                self._version_db.close()
                self._version_db = None
