"""Opening a database: engines, SQLite settings, and schema migrations run automatically.

A person never runs Alembic by hand: `open_store` brings any database up to the newest schema
before handing back a `SqlStore`. The migration scripts ship inside this package and Alembic is
configured in code, so no alembic.ini is needed at run time.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from recurrent_core.errors import LongyarnError

if TYPE_CHECKING:
    from .repository import SqlStore

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

SQLITE_BUSY_TIMEOUT_MS = 10_000

# Execution option read by the SQLite "begin" hook: how a transaction starts.
SQLITE_BEGIN_MODE = "longyarn_sqlite_begin"
BEGIN_DEFERRED = "DEFERRED"  # readers: take a snapshot at the first read
BEGIN_IMMEDIATE = "IMMEDIATE"  # writers: take the write lock up front, waiting up to busy_timeout


def open_store(url_or_path: str | os.PathLike[str]) -> SqlStore:
    """Open (creating or upgrading to the newest schema) the database at a URL or a file path.

    A plain path means SQLite at that path; its parent folders are created. Any SQLAlchemy URL
    works, e.g. ``postgresql+psycopg://user@host/longyarn``.
    """
    from .repository import SqlStore  # repository imports this module

    engine = create_store_engine(database_url(url_or_path))
    try:
        upgrade(engine)
    except BaseException:
        engine.dispose()
        raise
    return SqlStore(engine)


def database_url(url_or_path: str | os.PathLike[str]) -> URL:
    """The SQLAlchemy URL for a URL string or a filesystem path (which means SQLite)."""
    if isinstance(url_or_path, str) and "://" in url_or_path:
        return make_url(url_or_path)
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
    return url.render_as_string(hide_password=True)


def create_store_engine(url: URL) -> Engine:
    """An Engine configured for longyarn; on SQLite, every connection gets WAL and friends.

    An in-memory SQLite database lives in one connection shared by all threads, so use it from
    one thread at a time (tests, scratch work); use a file for anything concurrent.
    """
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if _is_file_sqlite(url):
        engine = create_engine(url)
    else:
        engine = create_engine(
            url, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_sqlite_transaction)
    return engine


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
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable enough in WAL, much faster
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()
    # SQLite's own lower() folds only ASCII; search must find "Élodie" when asked for "élodie".
    dbapi_connection.create_function("lower", 1, _unicode_lower, deterministic=True)


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
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        connection.commit()


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
