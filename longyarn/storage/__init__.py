"""Persistence for longyarn: SQLAlchemy models, Alembic migrations, and `SqlStore`.

    from longyarn.storage import open_store
    store = open_store("~/stories.db")      # or any SQLAlchemy URL

`SqlStore` implements `longyarn.recurrent_core.store.StoryStore`; the engine never imports this package.
"""

from .db import open_store
from .repository import SqlStore

__all__ = ["SqlStore", "open_store"]
