"""Persistence for longyarn: SQLAlchemy models, Alembic migrations, and `SqlStore`.

    from longyarn.storage import open_store
    store = open_store("~/stories.db")      # or any SQLAlchemy URL

`SqlStore` is one database as two stores: `SqlStories` implements the engine's
`longyarn.recurrent_core.store.StoryStore`, `SqlReaders` reader mode's
`longyarn.recurrent_core.readers.ReaderStore`. The engine never imports this package.
"""

from .db import SqlStore, open_store

__all__ = ["SqlStore", "open_store"]
