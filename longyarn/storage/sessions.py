"""Engines and transactions: how both stores reach the database.

`create_store_engine` configures an Engine for longyarn (on SQLite: WAL, a busy timeout, foreign
keys and a Unicode lower() on every connection). `SqlSessions` is the base both stores share:
it owns the engine and hands out short read and write transactions.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from longyarn.recurrent_core.errors import LongyarnError

SQLITE_BUSY_TIMEOUT_MS = 10_000

# Execution option read by the SQLite "begin" hook: how a transaction starts.
SQLITE_BEGIN_MODE = "longyarn_sqlite_begin"
BEGIN_DEFERRED = "DEFERRED"  # readers: take a snapshot at the first read
BEGIN_IMMEDIATE = "IMMEDIATE"  # writers: take the write lock up front, waiting up to busy_timeout

OpenedStore = TypeVar("OpenedStore", bound="SqlSessions")


def database_url(url_or_path: str | os.PathLike[str], *, create_folder: bool = True) -> URL:
    """The SQLAlchemy URL for a URL string or a filesystem path (which means SQLite).

    A PostgreSQL URL that names no driver gets psycopg (3), the one the ``postgres`` extra
    installs, rather than SQLAlchemy's default psycopg2 (or, for postgres://, nothing).
    A SQLite file's folder is created unless `create_folder` is false.
    """
    if isinstance(url_or_path, str) and "://" in url_or_path:
        url = make_url(url_or_path)
        if url.drivername in ("postgresql", "postgres"):  # "postgres://", as hosts print it
            url = url.set(drivername="postgresql+psycopg")
        return url
    raw_path = os.fspath(url_or_path)
    if raw_path == ":memory:":
        return URL.create("sqlite+pysqlite")
    path = Path(raw_path).expanduser().resolve()
    if create_folder:
        path.parent.mkdir(parents=True, exist_ok=True)
    return URL.create("sqlite+pysqlite", database=str(path))


def read_only_sqlite_url(path: Path, *, immutable: bool = False) -> URL:
    """A URL that opens a SQLite file for reading only. `immutable` also reads a WAL-mode file
    whose folder admits no -shm file (a read-only folder or mount), trusting that nobody writes
    to it meanwhile: nobody can, where its -shm cannot be made."""
    flags = {"immutable": "1"} if immutable else {"mode": "ro"}
    return URL.create("sqlite+pysqlite", database=f"file:{path}", query={**flags, "uri": "true"})


def describe_location(url: URL) -> str:
    """Where the data lives, for messages: a SQLite file's path, or the URL without password."""
    if url.get_backend_name() == "sqlite":
        return url.database if _is_file_sqlite(url) else "an in-memory database"
    # Unquoted for reading (e.g. ?host=/run/postgresql); the password is already masked.
    return unquote(url.render_as_string(hide_password=True))


def create_store_engine(url: URL, *, read_only: bool = False) -> Engine:
    """An Engine configured for longyarn; on SQLite, every connection gets WAL and friends
    (a `read_only` one only what reading needs: it may not change the file's journal mode).

    An in-memory SQLite database lives in one connection shared by all threads, so use it from
    one thread at a time (tests, scratch work); use a file for anything concurrent.
    """
    if url.get_backend_name() != "sqlite":
        # A read-only PostgreSQL session refuses any write, as a read-only SQLite file does.
        read_only_args = {"connect_args": {"options": "-c default_transaction_read_only=on"}}
        try:
            return create_engine(url, pool_pre_ping=True, **(read_only_args if read_only else {}))
        except ImportError as error:  # SQLAlchemy imports the driver when the engine is made
            extra = " (pip install 'longyarn[postgres]')" if url.get_driver_name() == "psycopg" else ""
            raise LongyarnError(
                f"The database URL {describe_location(url)} needs the Python package "
                f"{error.name or url.get_driver_name()!r}, which is not installed, so no database "
                f"was opened; install it{extra} or pass another --db."
            ) from error
        except NoSuchModuleError as error:
            raise LongyarnError(
                f"The database URL {describe_location(url)} names a kind of database SQLAlchemy "
                "does not know, so no database was opened; use a file path, or a URL such as "
                "postgresql://user@host/longyarn."
            ) from error
    if _is_file_sqlite(url):
        engine = create_engine(url)
    else:
        engine = create_engine(
            url, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    event.listen(engine, "connect", _configure_read_only_connection if read_only else _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_sqlite_transaction)
    return engine


def for_writing(engine: Engine) -> Engine:
    """The same engine, but its transactions take SQLite's write lock when they begin."""
    return engine.execution_options(**{SQLITE_BEGIN_MODE: BEGIN_IMMEDIATE})


def _is_file_sqlite(url: URL) -> bool:
    return url.database not in (None, "", ":memory:")


def _configure_sqlite_connection(dbapi_connection, connection_record) -> None:  # noqa: ANN001
    # Take over BEGIN from the sqlite3 module (see _begin_sqlite_transaction): its legacy mode
    # never begins a transaction for SELECT or DDL, which breaks snapshots and migrations.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first: switching a fresh file to WAL may have to wait for a lock.
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable enough in WAL, much faster
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()
    # SQLite's own lower() folds only ASCII; search must find "Élodie" when asked for "élodie".
    dbapi_connection.create_function("lower", 1, _unicode_lower, deterministic=True)


def _configure_read_only_connection(dbapi_connection, connection_record) -> None:  # noqa: ANN001
    """What reading a SQLite file needs (see _configure_sqlite_connection), and nothing that writes."""
    dbapi_connection.isolation_level = None
    dbapi_connection.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    dbapi_connection.create_function("lower", 1, _unicode_lower, deterministic=True)


def _switch_to_wal(cursor: sqlite3.Cursor) -> None:
    """Put the file in WAL mode (a no-op once it is), waiting out other processes doing the same.

    While another connection holds the write lock of a file not yet in WAL mode, SQLite answers
    "database is locked" at once instead of waiting busy_timeout: several `longyarn batch` runs
    opening one new database together would otherwise fail. So wait here, as long as SQLite would.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def _unicode_lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _begin_sqlite_transaction(connection: Connection) -> None:
    # Writers ask for IMMEDIATE: a DEFERRED transaction that reads and then writes can fail at
    # once with "database is locked" when another process committed in between, whatever the
    # busy_timeout; taking the lock up front makes writers queue instead.
    mode = connection.get_execution_options().get(SQLITE_BEGIN_MODE, BEGIN_DEFERRED)
    if mode not in (BEGIN_DEFERRED, BEGIN_IMMEDIATE):
        raise ValueError(f"unknown SQLite begin mode {mode!r}")
    connection.exec_driver_sql(f"BEGIN {mode}")


class SqlSessions:
    """The engine both stores share, and the short transactions every method runs in.

    Each method opens its own transaction and returns frozen dataclasses, never ORM rows, so
    one store can serve many threads (and several processes can share one SQLite file).
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._location = describe_location(engine.url)
        self._reading = sessionmaker(engine, expire_on_commit=False)
        self._writing_engine = for_writing(engine)
        self._writing = sessionmaker(self._writing_engine, expire_on_commit=False)
        # SQLite has one writer at a time: this process's writers queue here, in order, rather
        # than in SQLite's busy handler, which sleeps in growing steps (up to 100 ms) between
        # tries. Other processes still queue in the busy handler.
        self._sqlite_writers = threading.RLock() if engine.dialect.name == "sqlite" else None

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy Engine underneath, for tools and tests; code should use the methods."""
        return self._engine

    @property
    def location(self) -> str:
        """Where the data lives, as shown in messages (a file path, or a URL without password)."""
        return self._location

    def close(self) -> None:
        """Close every pooled connection; the store must not be used afterwards."""
        self._engine.dispose()

    def __enter__(self: OpenedStore) -> OpenedStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def integrity_check(self) -> str:
        """'ok' when the database file is sound; SQLite's list of problems otherwise.

        Other databases guard their own files, so they always answer 'ok'.
        """
        if self._engine.dialect.name != "sqlite":
            return "ok"
        with self._engine.connect() as connection:
            problems = connection.exec_driver_sql("PRAGMA integrity_check").scalars().all()
        return "\n".join(problems)

    @contextmanager
    def _read(self) -> Iterator[Session]:
        """A transaction that reads one consistent snapshot."""
        with self._reading.begin() as session:
            yield session

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """A transaction that writes: all of it commits, or none of it."""
        with self._sqlite_writers or nullcontext(), self._writing.begin() as session:
            yield session

    # Core transactions: for the hot paths of many readers at once, where an ORM session and
    # its identity map cost more than the statements they run.

    @contextmanager
    def _read_rows(self) -> Iterator[Connection]:
        """`_read`, as a Core connection."""
        with self._engine.begin() as connection:
            yield connection

    @contextmanager
    def _write_rows(self) -> Iterator[Connection]:
        """`_write`, as a Core connection."""
        with self._sqlite_writers or nullcontext(), self._writing_engine.begin() as connection:
            yield connection
