"""Opening a database as a `SqlStore`, with schema migrations that run automatically.

A person never runs Alembic by hand: `open_store` brings any database up to the newest schema
before handing back a `SqlStore`. The migration scripts ship inside this package and Alembic is
configured in code, so no alembic.ini is needed at run time.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import OperationalError

from longyarn.recurrent_core.errors import LongyarnError

from .readers import SqlReaders
from .sessions import (
    create_store_engine,
    database_url,
    describe_location,
    for_writing,
    read_only_sqlite_url,
)
from .stories import SqlStories

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

POSTGRESQL_MIGRATION_LOCK = 0x6C6F6E67  # "long": any fixed key of longyarn's own


class SqlStore(SqlStories, SqlReaders):
    """One database as both stores: the engine sees a `StoryStore`, reader mode a `ReaderStore`.

    Build one with `open_store(url_or_path)`, which also migrates the schema.
    """


def open_store(url_or_path: str | os.PathLike[str], *, read_only: bool = False) -> SqlStore:
    """Open (creating or upgrading to the newest schema) the database at a URL or a file path.

    A plain path means SQLite at that path; its parent folders are created. Any SQLAlchemy URL
    works, e.g. ``postgresql://user@host/longyarn`` (psycopg: the ``postgres`` extra).
    With `read_only`, nothing is created, upgraded or written: what commands that only read
    use, so that they work on a database they may not change (see `open_read_only`).
    """
    if read_only:
        return open_read_only(url_or_path)
    engine = create_store_engine(database_url(url_or_path))
    try:
        _check_reachable(engine)
        upgrade(engine)
    except BaseException:
        engine.dispose()
        raise
    return SqlStore(engine)


def open_read_only(url_or_path: str | os.PathLike[str]) -> SqlStore:
    """The database as it is, for reading only: a SQLite file that may not be written (its file,
    its folder or its mount read-only), or a server account that may only read. It must be at
    the newest schema already, since upgrading it would write."""
    url = database_url(url_or_path, create_folder=False)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        path = Path(url.database)
        if not path.is_file():
            raise LongyarnError(
                f"There is no database at {path}, so nothing was read; check the path given with --db."
            )
        engine = _first_readable(
            [create_store_engine(read_only_sqlite_url(path, immutable=i), read_only=True) for i in (False, True)],
            path,
        )
    else:
        engine = create_store_engine(url, read_only=True)
        try:
            _check_reachable(engine)
        except BaseException:
            engine.dispose()
            raise
    current, newest = set(current_revisions(engine)), set(schema_heads())
    if current != newest:
        engine.dispose()
        raise LongyarnError(
            f"The database at {describe_location(url)} has schema revision "
            f"{', '.join(sorted(current)) or 'none'}, not this longyarn's {', '.join(sorted(newest))}, and it "
            "cannot be upgraded while it is read-only, so nothing was read; open it once with write "
            "access (any longyarn command that writes), or use the longyarn that wrote it."
        )
    return SqlStore(engine)


def _first_readable(engines: list[Engine], path: Path) -> Engine:
    """The first engine that can read `path`; the others are disposed of."""
    problem: Exception | None = None
    for index, engine in enumerate(engines):
        try:
            with engine.connect() as connection:  # a WAL file fails only at its first read
                connection.exec_driver_sql("SELECT count(*) FROM sqlite_master").all()
        except OperationalError as error:
            problem = error
            engine.dispose()
            continue
        for unused in engines[index + 1 :]:
            unused.dispose()
        return engine
    reason = str(getattr(problem, "orig", None) or problem).splitlines()[0][:200]
    raise LongyarnError(
        f"The database at {path} could not be opened for reading ({reason}), so nothing was read; "
        "check that you may read the file and its folder."
    )


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
    with for_writing(engine).connect() as connection, _sqlite_foreign_keys_off(connection):
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
