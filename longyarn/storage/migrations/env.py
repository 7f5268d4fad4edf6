"""Alembic environment for longyarn's schema.

`longyarn.storage.db.upgrade` runs this with its own connection (config.attributes["connection"]).
A developer who changed storage/models.py drafts the next revision against a scratch database:

    python -c "from alembic import command; from longyarn.storage.db import alembic_config as c;
    cfg = c(); cfg.set_main_option('sqlalchemy.url', 'sqlite:////tmp/scratch.db');
    command.upgrade(cfg, 'head'); command.revision(cfg, 'what changed', autogenerate=True)"
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from longyarn.storage.sessions import create_store_engine
from longyarn.storage.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    """Write the SQL to stdout (`alembic upgrade head --sql`) instead of running it."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_migrations(connection)
        return
    from sqlalchemy.engine import make_url

    engine = create_store_engine(make_url(config.get_main_option("sqlalchemy.url")))
    try:
        with engine.connect() as connection:
            _run_migrations(connection)
            connection.commit()
    finally:
        engine.dispose()


def _run_migrations(connection: Connection) -> None:
    is_sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER constraints; batch mode rebuilds the table instead.
        render_as_batch=True,
        # longyarn.storage.db makes SQLite's DDL transactional, so a failed migration leaves nothing.
        transactional_ddl=True if is_sqlite else None,
    )
    with context.begin_transaction():
        context.run_migrations()
        if is_sqlite:
            # Foreign keys are off while migrating (longyarn.storage.db); check nothing broke them.
            violations = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if violations:
                raise RuntimeError(f"migration broke foreign keys: {violations[:5]}")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
