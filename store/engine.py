"""Database engine and sessions: SQLite file by default, PostgreSQL by URL.

The URL comes from settings (``CRMHUB_DATABASE_URL``). SQLite gets WAL mode and a busy timeout so
several worker threads and processes can share one file; PostgreSQL gets a connection pool.

A SQLite file is private (:mod:`store.files`): its directory is created 0700, the file is created
0600 before SQLite opens it (SQLite gives the ``-wal`` and ``-shm`` files the database file's mode)
and an existing file, WAL or shared-memory file readable by group/others is tightened to 0600.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import NullPool
from sqlmodel import Session, create_engine

from schemas.errors import ConfigError
from store.files import create_private, private_dir, tighten

# Connection and Engine are re-exported: other packages name the DB types through store.
__all__ = ["Connection", "Engine", "is_sqlite", "make_engine", "session_scope"]


def is_sqlite(engine_or_url: Engine | str) -> bool:
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else make_url(engine_or_url)
    return url.get_backend_name() == "sqlite"


def make_engine(url: str, *, echo: bool = False, pooled: bool = True) -> Engine:
    """Create an engine for ``url``; a bad URL raises :class:`ConfigError` naming the fix.

    ``pooled=False`` gives one connection per use (migrations, short CLI commands).
    """
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError with the URL in it: keep it out
        raise ConfigError(
            "database_url is not a valid SQLAlchemy URL; use e.g. sqlite:///path/crmhub.db or "
            "postgresql+psycopg://user@host:5432/db (set CRMHUB_DATABASE_URL)"
        ) from exc
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {"echo": echo}
    if not pooled:
        kwargs["poolclass"] = NullPool
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _private_sqlite_file(Path(parsed.database))
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    elif backend == "postgresql":
        kwargs["pool_pre_ping"] = True
    else:
        raise ConfigError(
            f"database_url backend {backend!r} is not supported; use sqlite or postgresql+psycopg"
        )
    try:
        engine = create_engine(parsed, **kwargs)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"database driver missing ({exc.name}); install it with: pip install 'crmhub[postgres]'"
        ) from exc
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _private_sqlite_file(path: Path) -> None:
    """Create the database file 0600 (its directory 0700) or tighten an existing one and its
    WAL/shared-memory files (SQLite creates those with the database file's mode)."""
    private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(create_private(path))
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        tighten(file)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers and one writer work at once; busy_timeout makes concurrent writers wait.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
