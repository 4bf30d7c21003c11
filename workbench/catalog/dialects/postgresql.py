"""PostgreSQL: one catalog that processes on many machines write to.

- Driver: psycopg 3 (`postgresql+psycopg://user@host/db`; a bare `postgresql://` means it too).
- Transactions: READ COMMITTED writes; a read-modify-write of a run (claim, renew, request,
  take_request, start, metrics under a lease...) locks the run's row first
  (`SELECT ... FOR UPDATE`), so two processes never both pass a check and lose an update.
  Reads run at REPEATABLE READ: one snapshot for a whole `list_runs`.
- Lock waits end after the busy timeout (`lock_timeout`), an error the writer retries, like
  SQLite's busy.
- Clock: leases, heartbeats and timestamps use the server's clock, not each machine's.
- Schema: created and upgraded by the same Alembic revisions as SQLite, under an advisory lock
  so two processes opening a new database do not race; a revision this release does not know
  is a newer workbench's.
- Change counter: the server's current snapshot (`pg_current_snapshot()`), which changes when
  a write transaction starts or ends anywhere on the server and never because of a read.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.dialects.postgresql import insert as upsert_insert
from sqlalchemy.engine import URL

from workbench.catalog.errors import CatalogError

__all__ = ["PostgresBackend", "upsert_insert"]

SCHEMA_LOCK_KEY = 0x4D4C5742  # pg_advisory_xact_lock key while creating or upgrading the schema
NAMES_LOCK_KEY = 0x4D4C574E  # ... while choosing a new run's unique default name
BUSY_SQLSTATES = ("55P03", "40001", "40P01")  # lock_not_available, serialization, deadlock


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", exc)
    return getattr(orig, "sqlstate", None)


class PostgresBackend:
    """A catalog in a PostgreSQL database."""

    name = "postgresql"
    server = True
    metrics_insert_sql = (
        "INSERT INTO metrics (run_id, attempt, step, name, value, wall_time, superseded) "
        "VALUES (%s, %s, %s, %s, %s, %s, FALSE)"
    )

    upsert_insert = staticmethod(upsert_insert)

    def __init__(self, url: URL) -> None:
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        if url.get_driver_name() != "psycopg":
            raise CatalogError(
                f"catalog URL {url.render_as_string(hide_password=True)}: driver "
                f"{url.get_driver_name()!r} is not supported; use postgresql+psycopg://"
            )
        if not url.database:
            raise CatalogError(
                f"catalog URL {url.render_as_string(hide_password=True)} names no database"
            )
        self.url = url
        self.display = url.render_as_string(hide_password=True)
        self.location = url.render_as_string(hide_password=False)
        self.path = None

    def make_engines(self, busy_timeout_s: float, readonly: bool) -> tuple[Engine, Engine]:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise CatalogError(
                f"catalog {self.display} needs the psycopg driver: pip install 'psycopg[binary]'"
            ) from None
        args: dict[str, Any] = {}
        if "connect_timeout" not in self.url.query:
            args["connect_timeout"] = 10
        if "options" not in self.url.query:
            args["options"] = f"-c lock_timeout={int(busy_timeout_s * 1000)}"
        args["application_name"] = "workbench"
        engine = create_engine(self.url, connect_args=args, pool_pre_ping=True)
        opts: dict[str, Any] = {"isolation_level": "REPEATABLE READ"}
        if readonly:
            opts["postgresql_readonly"] = True
        return engine, engine.execution_options(**opts)

    @staticmethod
    def now(conn: Connection) -> float:
        """The server's clock (Unix seconds): one clock for every machine's leases."""
        return float(
            conn.exec_driver_sql("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8").scalar()
        )

    @staticmethod
    def _revisions(conn: Connection) -> list[str] | None:
        if conn.exec_driver_sql("SELECT to_regclass('alembic_version')").scalar() is None:
            return None
        return [r[0] for r in conn.exec_driver_sql("SELECT version_num FROM alembic_version")]

    def schema_current(self, conn: Connection, head: str, _schema_version: int) -> bool:
        return self._revisions(conn) == [head]

    def check_schema(
        self, conn: Connection, revisions: dict[str, int], schema_version: int
    ) -> None:
        """CatalogError for a database that is not a workbench catalog or is a newer one's."""
        revs = self._revisions(conn)
        if revs is None:
            if conn.exec_driver_sql("SELECT to_regclass('runs')").scalar() is not None:
                raise CatalogError(
                    f"{self.display} is not a workbench catalog (it has a runs table but no "
                    "schema revision)"
                )
            return
        if len(revs) != 1 or revs[0] not in revisions:
            raise CatalogError(
                f"catalog {self.display} has schema revision {', '.join(revs) or 'none'}, which "
                f"this version (schema {schema_version}) does not know: made by a newer "
                "workbench, or damaged"
            )

    @staticmethod
    def lock_schema(conn: Connection) -> None:
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY})")

    @staticmethod
    def lock_names(conn: Connection) -> None:
        """Until the transaction ends, no other process picks a run name: two runs created at
        once cannot both take the same free name (READ COMMITTED writes see the other's
        committed run once the lock is theirs)."""
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({NAMES_LOCK_KEY})")

    @staticmethod
    def stamp(_conn: Connection, _schema_version: int) -> None:
        """Nothing: alembic_version says which schema the database has."""

    @staticmethod
    def columns(conn: Connection, table: str) -> set[str]:
        rows = conn.exec_driver_sql(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s",
            (table,),
        )
        return {r[0] for r in rows}

    def change_token(self, engine: Engine) -> str | None:
        try:
            with engine.connect() as conn:
                return str(conn.exec_driver_sql("SELECT pg_current_snapshot()::text").scalar())
        except Exception:
            return None

    @staticmethod
    def raw_cursor(driver: Any) -> Any:
        """The driver's cursor for `store._fetch_raw`'s bulk reads."""
        return driver.cursor(binary=True)

    @staticmethod
    def busy(exc: BaseException) -> bool:
        return _sqlstate(exc) in BUSY_SQLSTATES

    @staticmethod
    def damaged(_exc: BaseException) -> bool:
        return False

    @staticmethod
    def error_line(exc: BaseException) -> str:
        """The driver's message on one line (psycopg adds hints and context on more)."""
        text = str(getattr(exc, "orig", exc)).strip()
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return lines[0] if lines else type(exc).__name__

    def close(self) -> None:
        pass
