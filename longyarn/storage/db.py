"""Opening a database: engines, SQLite settings, and schema migrations run automatically.

A person never runs Alembic by hand: `open_store` brings any database up to the newest schema
before handing back a `SqlStore`. The migration scripts ship inside this package and Alembic is
configured in code, so no alembic.ini is needed at run time.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, func, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import NoSuchModuleError, OperationalError
from sqlalchemy.pool import StaticPool

from longyarn.recurrent_core.errors import LongyarnError

if TYPE_CHECKING:
    from .repository import SqlStore

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

SQLITE_BUSY_TIMEOUT_MS = 10_000
POSTGRESQL_MIGRATION_LOCK = 0x6C6F6E67  # "long": any fixed key of longyarn's own

# Execution option read by the SQLite "begin" hook: how a transaction starts.
SQLITE_BEGIN_MODE = "longyarn_sqlite_begin"
BEGIN_DEFERRED = "DEFERRED"  # readers: take a snapshot at the first read
BEGIN_IMMEDIATE = "IMMEDIATE"  # writers: take the write lock up front, waiting up to busy_timeout


def open_store(url_or_path: str | os.PathLike[str]) -> SqlStore:
    """Open (creating or upgrading to the newest schema) the database at a URL or a file path.

    A plain path means SQLite at that path; its parent folders are created. Any SQLAlchemy URL
    works, e.g. ``postgresql://user@host/longyarn`` (psycopg: the ``postgres`` extra).
    """
    from .repository import SqlStore  # repository imports this module

    engine = create_store_engine(database_url(url_or_path))
    try:
        _check_reachable(engine)
        upgrade(engine)
    except BaseException:
        engine.dispose()
        raise
    return SqlStore(engine)


def database_url(url_or_path: str | os.PathLike[str]) -> URL:
    """The SQLAlchemy URL for a URL string or a filesystem path (which means SQLite).

    A PostgreSQL URL that names no driver gets psycopg (3), the one the ``postgres`` extra
    installs, rather than SQLAlchemy's default psycopg2 (or, for postgres://, nothing).
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
    path.parent.mkdir(parents=True, exist_ok=True)
    return URL.create("sqlite+pysqlite", database=str(path))


def describe_location(url: URL) -> str:
    """Where the data lives, for messages: a SQLite file's path, or the URL without password."""
    if url.get_backend_name() == "sqlite":
        return url.database if _is_file_sqlite(url) else "an in-memory database"
    # Unquoted for reading (e.g. ?host=/run/postgresql); the password is already masked.
    return unquote(url.render_as_string(hide_password=True))


def create_store_engine(url: URL) -> Engine:
    """An Engine configured for longyarn; on SQLite, every connection gets WAL and friends.

    An in-memory SQLite database lives in one connection shared by all threads, so use it from
    one thread at a time (tests, scratch work); use a file for anything concurrent.
    """
    if url.get_backend_name() != "sqlite":
        try:
            return create_engine(url, pool_pre_ping=True)
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
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_sqlite_transaction)
    return engine


def _check_reachable(engine: Engine) -> None:
    """Connect once, so that an unreachable server or a wrong URL is one clear sentence."""
    if engine.dialect.name == "sqlite":
        return  # a file: its problems surface as they always did
    try:
        engine.connect().close()
    except OperationalError as error:
        reason = str(error.orig or error).strip().splitlines()[0][:200]
        raise LongyarnError(
            f"Could not connect to the database at {describe_location(engine.url)} ({reason}), "
            "so nothing was read or changed; check that the server is running and that --db "
            "names it, then run the command again."
        ) from error


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


# ---- migrations ----------------------------------------------------------------------


def alembic_config() -> Config:
    """An Alembic configuration pointing at the migrations shipped in this package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def schema_heads() -> tuple[str, ...]:
    """The newest revision(s) the shipped migrations define."""
    return tuple(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(engine: Engine) -> tuple[str, ...]:
    """The revision(s) a database is at; empty for a database longyarn has never touched."""
    with engine.connect() as connection:
        return tuple(MigrationContext.configure(connection).get_current_heads())


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate a database to `revision` (default: the newest), in one transaction.

    Does nothing, quickly, when the database is already at the newest schema; refuses a
    database written by a newer longyarn.
    """
    scripts = ScriptDirectory.from_config(alembic_config())
    current = current_revisions(engine)
    if revision == "head" and set(current) == set(scripts.get_heads()):
        return
    known = {script.revision for script in scripts.walk_revisions()}
    unknown = [rev for rev in current if rev not in known]
    if unknown:
        location = describe_location(engine.url)
        raise LongyarnError(
            f"The database at {location} has schema revision {unknown[0]!r}, which this "
            "version of longyarn does not know, so it was left untouched; upgrade longyarn "
            "or open another database with --db."
        )

    config = alembic_config()
    writer = engine.execution_options(**{SQLITE_BEGIN_MODE: BEGIN_IMMEDIATE})
    with writer.connect() as connection, _sqlite_foreign_keys_off(connection):
        _postgresql_migration_lock(connection)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        connection.commit()


def _postgresql_migration_lock(connection: Connection) -> None:
    """Make processes that open a new PostgreSQL database at once migrate it one at a time.

    SQLite's BEGIN IMMEDIATE does this there. Without it, both would create the same tables
    and one would fail. Held until the migration's transaction ends; the second then finds
    the schema up to date (Alembic reads the revision after this).
    """
    if connection.dialect.name == "postgresql":
        connection.execute(select(func.pg_advisory_xact_lock(POSTGRESQL_MIGRATION_LOCK)))


@contextlib.contextmanager
def _sqlite_foreign_keys_off(connection: Connection) -> Iterator[None]:
    """SQLite's documented way to change a schema: foreign keys off, changes, foreign_key_check.

    Rebuilding a table (Alembic's batch mode) drops the old one; with foreign keys on, that
    would cascade-delete every row that refers to it. env.py runs the foreign_key_check.
    The pragma only works outside a transaction, so it goes through the raw connection.
    """
    if connection.dialect.name != "sqlite":
        yield
        return
    raw = connection.connection.driver_connection
    raw.execute("PRAGMA foreign_keys = OFF")
    try:
        yield
    finally:
        connection.rollback()  # nothing left open, so the pragma below takes effect
        raw.execute("PRAGMA foreign_keys = ON")
