"""What differs between the databases a catalog can live in, one module per database.

`store.Catalog` speaks SQLAlchemy Core/ORM that both databases accept; everything that is not
(engines and their transaction start, file checks, schema stamping, the clock, the change
counter, the driver's parameter style) lives in a `Backend` of `sqlite.py` or `postgresql.py`.

A catalog is named by a file path (SQLite, the default) or a SQLAlchemy URL
(`postgresql+psycopg://user@host/db`; `sqlite:///path` is taken as that path).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from workbench.catalog.errors import CatalogError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def is_url(target: str | os.PathLike[str]) -> bool:
    """Whether `target` is a database URL (`scheme://...`) rather than a file path."""
    return isinstance(target, str) and _URL.match(target) is not None


def sqlite_path_of(url: str) -> Path | None:
    """The file of a `sqlite:///path` URL (None for another database or an in-memory one)."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() != "sqlite":
        return None
    if not u.database or u.database == ":memory:":
        raise CatalogError(f"catalog URL {url} names no file: give sqlite:///path/to/file.db")
    return Path(u.database)


def server_backend(url: str) -> Any:
    """The backend of a server catalog URL; CatalogError (one line) for one we do not speak."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        u = make_url(url)
    except ArgumentError:
        raise CatalogError(f"catalog URL {url!r} cannot be parsed") from None
    if u.get_backend_name() != "postgresql":
        raise CatalogError(
            f"catalog URL {u.render_as_string(hide_password=True)}: unknown database "
            f"{u.get_backend_name()!r} (use a file path for SQLite, or postgresql+psycopg://user@host/db)"
        )
    from workbench.catalog.dialects.postgresql import PostgresBackend

    return PostgresBackend(u)


def raw_cursor(conn: Any) -> Any:
    """A DBAPI cursor on a SQLAlchemy connection's driver connection, as the database's backend
    makes it for bulk reads (psycopg: binary results, over twice as fast for 100k rows)."""
    driver = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        from workbench.catalog.dialects.postgresql import PostgresBackend

        return PostgresBackend.raw_cursor(driver)
    from workbench.catalog.dialects.sqlite import SQLiteBackend

    return SQLiteBackend.raw_cursor(driver)
